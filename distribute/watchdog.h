// WatchdogCommunicator: a Communicator that ends the job when one of its
// collectives makes no progress for too long.
//
// A rank that dies, freezes (SIGSTOP, a hung NFS write, a swapping host) or
// loses its network leaves every other rank blocked in its next collective;
// without a watchdog the job then hangs until the scheduler's time limit,
// burning the allocation. Here a monitor thread watches each collective of
// the wrapped communicator; when one has been waiting `seconds`, it prints
// one line naming this rank, its host, the collective and the training step,
// and ends this process (exit code 1). The launcher (mpirun) then tears the
// whole job down, frozen ranks included, and `holdfast launch` restarts it
// from the last committed checkpoint.
//
// The monitor thread never calls MPI (the communicator is used by one
// thread at a time, MPI_THREAD_SERIALIZED): ending the process is what
// makes mpirun end the others. The watch costs two relaxed atomic stores per
// collective.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "distribute/communicator.h"

namespace holdfast {

struct WatchdogOptions {
  // A collective waiting this long ends the job. It must exceed the longest
  // time one rank may legitimately spend between collectives while the
  // others wait: a training step, evaluation, the chief writing its part of
  // a checkpoint.
  double seconds = 300;
  // What to do on a hang: called once, on the monitor thread, with the
  // message. Default: print it on stderr and _exit(1). (Tests replace it.)
  std::function<void(const std::string&)> on_hang = {};
};

class WatchdogCommunicator final : public Communicator {
 public:
  // `inner` must outlive this object.
  WatchdogCommunicator(Communicator* inner, WatchdogOptions options);
  ~WatchdogCommunicator() override;

  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }
  std::string kind() const override { return inner_->kind(); }
  void AllReduce(void* data, size_t count, DataType type, ReduceOp op) override;
  void Broadcast(void* data, size_t bytes, int root) override;
  std::vector<std::string> Gather(const std::string& bytes, int root) override;
  void Barrier() override;
  [[noreturn]] void Abort(int exit_code, const std::string& why) override;
  void NoteStep(int64_t step) override { step_.store(step, std::memory_order_relaxed); }

 private:
  class Watch;  // marks one collective as waiting, for its duration
  void Monitor();

  Communicator* inner_;
  WatchdogOptions options_;
  // Since when the current collective has waited (steady clock, ns); 0 when
  // none is in progress. What it is, as a static string.
  std::atomic<int64_t> waiting_since_ns_{0};
  std::atomic<const char*> waiting_in_{""};
  std::atomic<int64_t> step_{-1};
  std::mutex mu_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::thread monitor_;
};

}  // namespace holdfast
