// SyncThread: runs in-place float all-reduce sums on its own thread, in the
// order they are queued, so the training thread can go on with backward.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <exception>
#include <mutex>
#include <thread>
#include <utility>

#include "distribute/communicator.h"

namespace holdfast::internal {

class SyncThread {
 public:
  // `comm` must outlive this object and must not be used by anyone else
  // between the first Enqueue and the Drain that follows.
  explicit SyncThread(Communicator* comm);
  ~SyncThread();  // drains, then joins
  SyncThread(const SyncThread&) = delete;
  SyncThread& operator=(const SyncThread&) = delete;

  // Queues a sum over ranks of data[0, count). The range must stay alive and
  // untouched by the caller until Drain returns.
  void Enqueue(float* data, size_t count);
  // Blocks until every queued range is reduced; rethrows the first error a
  // collective raised on the sync thread.
  void Drain();

 private:
  void Loop();

  Communicator* comm_;
  std::mutex mu_;
  std::condition_variable work_cv_, idle_cv_;
  std::deque<std::pair<float*, size_t>> queue_;
  bool busy_ = false, stop_ = false;
  std::exception_ptr error_;
  std::thread thread_;
};

}  // namespace holdfast::internal
