// One thread that runs jobs in the order they were given: the writer of
// asynchronous checkpoints. It never calls MPI (the communicator belongs to
// the training thread; MPI_THREAD_SERIALIZED stays valid).
#pragma once

#include <sys/resource.h>
#include <unistd.h>

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

namespace holdfast::internal {

class BackgroundWorker {
 public:
  // `nice` > 0 lowers this thread's priority (Linux: per thread), so that
  // on a host whose cores all train it takes the time training leaves idle
  // (all-reduce waits) before it takes time from training.
  explicit BackgroundWorker(int nice = 0) : nice_(nice), thread_([this] { Run(); }) {}
  ~BackgroundWorker() {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    changed_.notify_all();
    thread_.join();  // after running what was queued: a commit is never cut short
  }
  BackgroundWorker(const BackgroundWorker&) = delete;
  BackgroundWorker& operator=(const BackgroundWorker&) = delete;

  void Enqueue(std::function<void()> job) {
    {
      std::lock_guard lock(mu_);
      jobs_.push_back(std::move(job));
    }
    changed_.notify_all();
  }

  // Blocks until every job given so far has finished. What the jobs wrote
  // is visible to the caller afterwards.
  void WaitIdle() {
    std::unique_lock lock(mu_);
    changed_.wait(lock, [this] { return jobs_.empty() && !running_; });
  }

 private:
  void Run() {
    if (nice_ > 0) (void)setpriority(PRIO_PROCESS, static_cast<id_t>(gettid()), nice_);
    std::unique_lock lock(mu_);
    for (;;) {
      changed_.wait(lock, [this] { return stopping_ || !jobs_.empty(); });
      if (jobs_.empty()) return;  // stopping, nothing left
      std::function<void()> job = std::move(jobs_.front());
      jobs_.pop_front();
      running_ = true;
      lock.unlock();
      job();
      lock.lock();
      running_ = false;
      changed_.notify_all();
    }
  }

  std::mutex mu_;
  std::condition_variable changed_;
  std::deque<std::function<void()>> jobs_;
  bool running_ = false;
  bool stopping_ = false;
  const int nice_;
  std::thread thread_;  // last: starts after the members it uses exist
};

}  // namespace holdfast::internal
