#include "core/callbacks.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <stdexcept>
#include <string>

namespace holdfast {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

std::string FormatDuration(double s) {
  char buf[32];
  if (s < 60) {
    std::snprintf(buf, sizeof buf, "%.0fs", s);
  } else if (s < 3600) {
    std::snprintf(buf, sizeof buf, "%dm%02ds", int(s) / 60, int(s) % 60);
  } else {
    std::snprintf(buf, sizeof buf, "%dh%02dm", int(s) / 3600, int(s) / 60 % 60);
  }
  return buf;
}

std::string MetricsText(const TrainingState& s) {
  char buf[96];
  if (s.loss->has_accuracy()) {
    std::snprintf(buf, sizeof buf, "loss: %.4f - accuracy: %.4f", s.metrics.mean_loss(),
                  s.metrics.accuracy());
  } else {
    std::snprintf(buf, sizeof buf, "loss: %.4f", s.metrics.mean_loss());
  }
  return buf;
}

// Interval between two redraws of the bar, or two progress lines without one.
constexpr double kTtyRedrawSeconds = 0.1, kLogLineSeconds = 30.0;

}  // namespace

ProgressBar::ProgressBar(bool quiet, FILE* out)
    : quiet_(quiet), tty_(isatty(fileno(out)) != 0), out_(out) {}

bool ProgressBar::enabled(const TrainingState& s) const {
  return !quiet_ && s.replica->rank() == 0;
}

void ProgressBar::OnTrainBegin(TrainingState& s) {
  if (!enabled(s) || s.batch == 0) return;
  std::fprintf(out_, "Resuming at epoch %d, batch %lld (step %lld)\n", s.epoch + 1,
               static_cast<long long>(s.batch), static_cast<long long>(s.step()));
}

void ProgressBar::OnEpochBegin(TrainingState& s) {
  epoch_start_ = last_draw_ = Clock::now();
  first_batch_ = s.batch;
  if (enabled(s) && tty_) std::fprintf(out_, "Epoch %d/%d\n", s.epoch + 1, s.options->epochs);
}

void ProgressBar::OnBatchEnd(TrainingState& s) {
  if (!enabled(s)) return;
  const auto now = Clock::now();
  const bool last = s.batch == s.batches_per_epoch;
  if (Seconds(now - last_draw_) < (tty_ ? kTtyRedrawSeconds : kLogLineSeconds) || last) return;
  last_draw_ = now;
  const double elapsed = Seconds(now - epoch_start_);
  const double per_batch = elapsed / static_cast<double>(s.batch - first_batch_);
  const double eta = per_batch * static_cast<double>(s.batches_per_epoch - s.batch);
  // Samples of the batches run so far (all but an epoch's last are full).
  const double rate = static_cast<double>(s.options->batch_size) / per_batch;
  if (tty_) {
    constexpr int kWidth = 30;
    const int filled = static_cast<int>(kWidth * s.batch / s.batches_per_epoch);
    std::string bar(kWidth, '.');
    for (int i = 0; i < filled; ++i) bar[i] = '=';
    if (filled < kWidth) bar[filled] = '>';
    std::fprintf(out_, "\r%lld/%lld [%s] - ETA: %s - %.0f samples/s - %s\033[K",
                 static_cast<long long>(s.batch), static_cast<long long>(s.batches_per_epoch),
                 bar.c_str(), FormatDuration(eta).c_str(), rate, MetricsText(s).c_str());
  } else {
    std::fprintf(out_, "Epoch %d/%d - %lld/%lld - ETA: %s - %.0f samples/s - %s\n", s.epoch + 1,
                 s.options->epochs, static_cast<long long>(s.batch),
                 static_cast<long long>(s.batches_per_epoch), FormatDuration(eta).c_str(), rate,
                 MetricsText(s).c_str());
  }
  std::fflush(out_);
}

void ProgressBar::OnEpochEnd(TrainingState& s, const EpochLogs& logs) {
  if (!enabled(s)) return;
  const double rate = logs.seconds > 0 ? static_cast<double>(logs.samples) / logs.seconds : 0;
  if (tty_) {
    std::fprintf(out_, "\r%lld/%lld [%s] - %.1fs - %.0f samples/s - %s\033[K\n",
                 static_cast<long long>(s.batches_per_epoch),
                 static_cast<long long>(s.batches_per_epoch), std::string(30, '=').c_str(),
                 logs.seconds, rate, MetricsText(s).c_str());
  } else {
    std::fprintf(out_, "Epoch %d/%d - %lld batches - %.1fs - %.0f samples/s - %s\n", s.epoch + 1,
                 s.options->epochs, static_cast<long long>(s.batches_per_epoch), logs.seconds, rate,
                 MetricsText(s).c_str());
  }
  std::fflush(out_);
}

void CsvLogger::OnTrainBegin(TrainingState& s) {
  if (s.replica->rank() != 0 || out_.is_open()) return;
  struct stat st;
  const bool exists = stat(path_.c_str(), &st) == 0 && st.st_size > 0;
  out_.open(path_, std::ios::app);
  if (!out_) throw std::runtime_error("cannot open CSV log " + path_);
  if (!exists) out_ << "epoch,loss,accuracy,samples,seconds\n" << std::flush;
}

void CsvLogger::OnEpochEnd(TrainingState&, const EpochLogs& logs) {
  if (!out_.is_open()) return;
  out_ << logs.epoch << ',' << logs.loss << ',';
  if (!std::isnan(logs.accuracy)) out_ << logs.accuracy;
  out_ << ',' << logs.samples << ',' << logs.seconds << '\n' << std::flush;
}

}  // namespace holdfast
