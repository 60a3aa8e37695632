#include "examples/batch_logger.h"

#include <cerrno>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <string_view>

namespace holdfast::examples {

void BatchLogger::Open(int64_t start_step) {
  const std::string header = kHeader;
  uint64_t keep = 0;  // bytes of the existing file that stay
  bool exists = false;
  {
    std::ifstream in(path_, std::ios::binary);
    exists = in.is_open();
    uint64_t offset = 0;
    int64_t line_number = 0;
    for (std::string line; exists && std::getline(in, line);) {
      ++line_number;
      // A last line without '\n' was torn by a kill mid-write: cut it, if it
      // looks like ours.
      const bool torn = in.eof();
      const char* end = line.data() + line.size();
      int64_t step = 0;
      const auto [ptr, ec] = std::from_chars(line.data(), end, step);
      const bool row = line_number > 1 && ec == std::errc() && ptr != end && *ptr == ',';
      const bool ours =
          line_number == 1 ? (torn ? header.starts_with(line) : line == header) : (torn || row);
      if (!ours) {
        throw std::invalid_argument(path_ + " is not a batch log (line " +
                                    std::to_string(line_number) + " is not '" + header +
                                    "' or a row of it); not touching it");
      }
      if (torn || (line_number > 1 && step > start_step)) break;
      offset += line.size() + 1;
      keep = offset;
    }
  }
  std::error_code ec;
  if (exists && std::filesystem::file_size(path_, ec) > keep && !ec) {
    std::filesystem::resize_file(path_, keep, ec);
  }
  if (ec) throw std::runtime_error("cannot cut batch log " + path_ + ": " + ec.message());
  out_.open(path_, std::ios::app | std::ios::binary);
  if (!out_)
    throw std::runtime_error("cannot open batch log " + path_ + ": " + std::strerror(errno));
  if (keep == 0) out_ << header << '\n' << std::flush;
}

void BatchLogger::OnEpochBegin(TrainingState& s) {
  if (s.replica->rank() != 0 || out_.is_open()) return;
  Open(s.step());
}

void BatchLogger::OnBatchEnd(TrainingState& s) {
  if (!out_.is_open()) return;
  char loss[32];
  const auto [end, ec] = std::to_chars(loss, loss + sizeof loss, s.last_batch_loss);
  out_ << s.step() << ',' << s.epoch << ',' << s.batch - 1 << ','
       << std::string_view(loss, ec == std::errc() ? end - loss : 0) << '\n'
       << std::flush;
  if (!out_) throw std::runtime_error("cannot write batch log " + path_);
}

}  // namespace holdfast::examples
