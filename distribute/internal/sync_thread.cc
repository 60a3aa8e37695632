#include "distribute/internal/sync_thread.h"

namespace holdfast::internal {

SyncThread::SyncThread(Communicator* comm) : comm_(comm), thread_([this] { Loop(); }) {}

SyncThread::~SyncThread() {
  {
    std::unique_lock lock(mu_);
    idle_cv_.wait(lock, [&] { return queue_.empty() && !busy_; });
    stop_ = true;
  }
  work_cv_.notify_one();
  thread_.join();
}

void SyncThread::Enqueue(float* data, size_t count) {
  {
    std::lock_guard lock(mu_);
    queue_.emplace_back(data, count);
  }
  work_cv_.notify_one();
}

void SyncThread::Drain() {
  std::unique_lock lock(mu_);
  idle_cv_.wait(lock, [&] { return queue_.empty() && !busy_; });
  if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
}

void SyncThread::Loop() {
  std::unique_lock lock(mu_);
  for (;;) {
    work_cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stop_ and nothing left
    const auto [data, count] = queue_.front();
    queue_.pop_front();
    busy_ = true;
    lock.unlock();
    std::exception_ptr error;
    try {
      comm_->AllReduce(data, count, DataType::kFloat32, ReduceOp::kSum);
    } catch (...) {
      error = std::current_exception();
    }
    lock.lock();
    busy_ = false;
    if (error && !error_) {
      error_ = error;
      queue_.clear();  // later buckets are pointless once one failed
    }
    if (queue_.empty()) idle_cv_.notify_all();
  }
}

}  // namespace holdfast::internal
