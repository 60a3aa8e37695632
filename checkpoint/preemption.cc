#include "checkpoint/preemption.h"

#include <atomic>
#include <cstring>

#include "core/check.h"

namespace holdfast {
namespace {

// The first signal's number, 0 while none came. Written by the signal handler.
std::atomic<int> g_signal{0};
static_assert(std::atomic<int>::is_always_lock_free, "the handler may only store lock-free");
std::atomic<bool> g_installed{false};

extern "C" void OnPreemptionSignal(int signal) {
  int none = 0;
  g_signal.compare_exchange_strong(none, signal, std::memory_order_relaxed);
}

}  // namespace

PreemptionHandler::PreemptionHandler(PreemptionOptions options)
    : signals_(std::move(options.signals)) {
  HOLDFAST_CHECK(!g_installed.exchange(true), "a PreemptionHandler is already installed");
  g_signal.store(0, std::memory_order_relaxed);
  struct sigaction action;
  std::memset(&action, 0, sizeof action);
  action.sa_handler = OnPreemptionSignal;
  sigemptyset(&action.sa_mask);
  // SA_RESTART: a write() or MPI poll interrupted by the signal resumes
  // instead of failing with EINTR.
  action.sa_flags = SA_RESTART;
  previous_.resize(signals_.size());
  for (size_t i = 0; i < signals_.size(); ++i) {
    HOLDFAST_CHECK(sigaction(signals_[i], &action, &previous_[i]) == 0,
                   "cannot install a handler for signal " + std::to_string(signals_[i]));
  }
}

PreemptionHandler::~PreemptionHandler() {
  for (size_t i = 0; i < signals_.size(); ++i) sigaction(signals_[i], &previous_[i], nullptr);
  g_installed.store(false);
}

bool PreemptionHandler::requested() const { return signal_number() != 0; }
int PreemptionHandler::signal_number() const { return g_signal.load(std::memory_order_relaxed); }
void PreemptionHandler::Clear() { g_signal.store(0, std::memory_order_relaxed); }
void PreemptionHandler::Raise(int signal) { OnPreemptionSignal(signal); }

}  // namespace holdfast
