#include "checkpoint/preemption.h"

#include <atomic>
#include <cstring>
#include <map>
#include <mutex>
#include <string>

#include "core/check.h"

namespace holdfast {
namespace {

// The first signal's number, 0 while none came. Written by the signal handler.
std::atomic<int> g_signal{0};
static_assert(std::atomic<int>::is_always_lock_free, "the handler may only store lock-free");

extern "C" void OnPreemptionSignal(int signal) {
  int none = 0;
  g_signal.compare_exchange_strong(none, signal, std::memory_order_relaxed);
}

// Handlers may nest (in-process ranks, each with its own): per signal,
// how many live handlers catch it and what it did before the first.
struct Installed {
  int count = 0;
  struct sigaction previous;
};
std::mutex g_mu;
std::map<int, Installed> g_installed;  // guarded by g_mu
int g_handlers = 0;                    // live PreemptionHandlers, guarded by g_mu

}  // namespace

PreemptionHandler::PreemptionHandler(PreemptionOptions options)
    : signals_(std::move(options.signals)) {
  std::lock_guard<std::mutex> lock(g_mu);
  // The outermost handler starts with a clear flag; an inner one keeps what
  // the outer already caught (a signal during start-up is not lost).
  if (g_handlers++ == 0) g_signal.store(0, std::memory_order_relaxed);
  struct sigaction action;
  std::memset(&action, 0, sizeof action);
  action.sa_handler = OnPreemptionSignal;
  sigemptyset(&action.sa_mask);
  // SA_RESTART: a write() or MPI poll interrupted by the signal resumes
  // instead of failing with EINTR.
  action.sa_flags = SA_RESTART;
  for (int signal : signals_) {
    Installed& installed = g_installed[signal];
    if (installed.count++ > 0) continue;
    HOLDFAST_CHECK(sigaction(signal, &action, &installed.previous) == 0,
                   "cannot install a handler for signal " + std::to_string(signal));
  }
}

PreemptionHandler::~PreemptionHandler() {
  std::lock_guard<std::mutex> lock(g_mu);
  for (int signal : signals_) {
    Installed& installed = g_installed[signal];
    if (--installed.count == 0) sigaction(signal, &installed.previous, nullptr);
  }
  --g_handlers;
}

bool PreemptionHandler::requested() const { return signal_number() != 0; }
int PreemptionHandler::signal_number() const { return g_signal.load(std::memory_order_relaxed); }
void PreemptionHandler::Clear() { g_signal.store(0, std::memory_order_relaxed); }
void PreemptionHandler::Raise(int signal) { OnPreemptionSignal(signal); }

int PreemptionHandler::live_handlers() {
  std::lock_guard<std::mutex> lock(g_mu);
  return g_handlers;
}

}  // namespace holdfast
