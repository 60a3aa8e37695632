#include "bench/checkpoint/timing_env.h"

#include <utility>

namespace checkpoint_bench {
namespace {

class TimedWritableFile final : public holdfast::WritableFile {
 public:
  TimedWritableFile(TimingEnv* env, std::unique_ptr<holdfast::WritableFile> base, std::string kind)
      : env_(env), base_(std::move(base)), kind_(std::move(kind)) {}
  holdfast::Status Append(std::span<const char> data) override {
    const auto t0 = Clock::now();
    holdfast::Status s = base_->Append(data);
    env_->Add(kind_ + "_write", t0, data.size());
    return s;
  }
  holdfast::Status Sync() override {
    const auto t0 = Clock::now();
    holdfast::Status s = base_->Sync();
    env_->Add(kind_ + "_fsync", t0);
    return s;
  }
  holdfast::Status Close() override {
    const auto t0 = Clock::now();
    holdfast::Status s = base_->Close();
    env_->Add("close", t0);
    return s;
  }

 private:
  TimingEnv* env_;
  std::unique_ptr<holdfast::WritableFile> base_;
  std::string kind_;
};

}  // namespace

holdfast::StatusOr<std::unique_ptr<holdfast::WritableFile>> TimingEnv::Create(
    const std::string& path, bool direct) {
  const auto t0 = Clock::now();
  auto r = direct ? base_->NewDirectWritableFile(path) : base_->NewWritableFile(path);
  Add("create", t0);
  if (!r.ok()) return r.status();
  return std::unique_ptr<holdfast::WritableFile>(
      new TimedWritableFile(this, std::move(*r), FileKind(path)));
}

json StatsJson(const TimingEnv& env) {
  json j = json::object();
  for (const auto& [kind, s] : env.stats()) {
    j[kind] = {{"seconds", s.seconds}, {"calls", s.calls}, {"bytes", s.bytes}};
  }
  return j;
}

}  // namespace checkpoint_bench
