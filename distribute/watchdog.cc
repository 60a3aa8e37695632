#include "distribute/watchdog.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace holdfast {
namespace {

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::string HostName() {
  char name[256] = {};
  if (gethostname(name, sizeof name - 1) != 0) return "?";
  return name;
}

}  // namespace

class WatchdogCommunicator::Watch {
 public:
  Watch(WatchdogCommunicator* w, const char* what) : w_(w) {
    w_->waiting_in_.store(what, std::memory_order_relaxed);
    w_->waiting_since_ns_.store(NowNs(), std::memory_order_relaxed);
  }
  ~Watch() { w_->waiting_since_ns_.store(0, std::memory_order_relaxed); }

 private:
  WatchdogCommunicator* w_;
};

WatchdogCommunicator::WatchdogCommunicator(Communicator* inner, WatchdogOptions options)
    : inner_(inner), options_(std::move(options)) {
  if (!options_.on_hang) {
    options_.on_hang = [](const std::string& message) {
      std::fprintf(stderr, "%s\n", message.c_str());
      std::fflush(stderr);
      std::_Exit(1);
    };
  }
  monitor_ = std::thread([this] { Monitor(); });
}

WatchdogCommunicator::~WatchdogCommunicator() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  monitor_.join();
}

void WatchdogCommunicator::Monitor() {
  // Checks a few times per timeout: a hang is reported within ~1.1x the limit.
  const auto period = std::chrono::duration<double>(std::clamp(options_.seconds / 10, 0.01, 1.0));
  const int64_t limit_ns = static_cast<int64_t>(options_.seconds * 1e9);
  std::unique_lock<std::mutex> lock(mu_);
  while (!wake_.wait_for(lock, period, [this] { return stopping_; })) {
    const int64_t since = waiting_since_ns_.load(std::memory_order_relaxed);
    if (since == 0 || NowNs() - since < limit_ns) continue;
    const int64_t step = step_.load(std::memory_order_relaxed);
    char message[512];
    std::snprintf(message, sizeof message,
                  "holdfast: rank %d of %d on %s: no progress for %.0f s in %s%s%s: a rank is "
                  "dead, frozen or cut off; ending the job so that it restarts from its last "
                  "checkpoint (watchdog)",
                  rank(), size(), HostName().c_str(), (NowNs() - since) / 1e9,
                  waiting_in_.load(std::memory_order_relaxed), step >= 0 ? " at step " : "",
                  step >= 0 ? std::to_string(step).c_str() : "");
    options_.on_hang(message);
    return;
  }
}

void WatchdogCommunicator::AllReduce(void* data, size_t count, DataType type, ReduceOp op) {
  Watch watch(this, "an all-reduce");
  inner_->AllReduce(data, count, type, op);
}

void WatchdogCommunicator::Broadcast(void* data, size_t bytes, int root) {
  Watch watch(this, "a broadcast");
  inner_->Broadcast(data, bytes, root);
}

std::vector<std::string> WatchdogCommunicator::Gather(const std::string& bytes, int root) {
  Watch watch(this, "a gather");
  return inner_->Gather(bytes, root);
}

void WatchdogCommunicator::Abort(int exit_code, const std::string& why) {
  inner_->Abort(exit_code, why);
  std::_Exit(exit_code);  // not reached: GCC does not carry [[noreturn]] through a virtual call
}

void WatchdogCommunicator::Barrier() {
  Watch watch(this, "a barrier");
  inner_->Barrier();
}

}  // namespace holdfast
