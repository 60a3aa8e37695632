#include "distribute/thread_communicator.h"

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "core/check.h"

namespace holdfast {
namespace {

// State shared by the ranks of one group.
class Group {
 public:
  explicit Group(int n) : n_(n), slots_(n, nullptr), sizes_(n, 0) {}

  int size() const { return n_; }

  // All ranks arrive before any leaves; throws once the group is aborted.
  void Barrier() {
    std::unique_lock lock(mu_);
    if (aborted_) throw CommunicatorAborted(abort_code_, abort_why_);
    const uint64_t generation = generation_;
    if (++arrived_ == n_) {
      arrived_ = 0;
      ++generation_;
      cv_.notify_all();
      return;
    }
    cv_.wait(lock, [&] { return generation_ != generation || aborted_; });
    if (generation_ == generation) throw CommunicatorAborted(abort_code_, abort_why_);
  }

  void Abort(int code, const std::string& why) {
    std::lock_guard lock(mu_);
    if (!aborted_) {
      aborted_ = true;
      abort_code_ = code;
      abort_why_ = why;
    }
    cv_.notify_all();
  }

  // Each rank publishes one pointer (and a size) per collective.
  void Publish(int rank, const void* p, size_t size) {
    slots_[rank] = p;
    sizes_[rank] = size;
  }
  const void* slot(int rank) const { return slots_[rank]; }
  size_t slot_size(int rank) const { return sizes_[rank]; }

 private:
  const int n_;
  std::mutex mu_;
  std::condition_variable cv_;
  int arrived_ = 0;
  uint64_t generation_ = 0;
  bool aborted_ = false;
  int abort_code_ = 0;
  std::string abort_why_;
  std::vector<const void*> slots_;
  std::vector<size_t> sizes_;
};

class ThreadCommunicator final : public Communicator {
 public:
  ThreadCommunicator(Group* group, int rank) : group_(group), rank_(rank) {}

  int rank() const override { return rank_; }
  int size() const override { return group_->size(); }
  std::string kind() const override { return "threads"; }

  void AllReduce(void* data, size_t count, DataType type, ReduceOp op) override {
    const size_t bytes = count * DataTypeSize(type);
    group_->Publish(rank_, data, bytes);
    group_->Barrier();
    // Every rank reduces all buffers in rank order into scratch, so results
    // are identical everywhere; nobody writes its buffer until all have read.
    scratch_.resize(bytes);
    if (bytes > 0) {
      std::memcpy(scratch_.data(), group_->slot(0), bytes);
      for (int r = 1; r < size(); ++r)
        ReduceInto(scratch_.data(), group_->slot(r), count, type, op);
    }
    group_->Barrier();
    if (bytes > 0) std::memcpy(data, scratch_.data(), bytes);
  }

  void Broadcast(void* data, size_t bytes, int root) override {
    group_->Publish(rank_, data, bytes);
    group_->Barrier();
    if (rank_ != root && bytes > 0) std::memcpy(data, group_->slot(root), bytes);
    group_->Barrier();
  }

  void AllGather(void* data, std::span<const Part> parts) override {
    HOLDFAST_CHECK(parts.size() == static_cast<size_t>(size()), "AllGather needs a part per rank");
    size_t end = 0;
    for (const Part& p : parts) end = std::max(end, p.at + p.bytes);
    group_->Publish(rank_, data, end);
    group_->Barrier();
    for (int r = 0; r < size(); ++r) {
      const Part& p = parts[static_cast<size_t>(r)];
      if (r == rank_ || p.bytes == 0) continue;
      std::memcpy(static_cast<char*>(data) + p.at, static_cast<const char*>(group_->slot(r)) + p.at,
                  p.bytes);
    }
    group_->Barrier();
  }

  std::vector<std::string> Gather(const std::string& bytes, int root) override {
    group_->Publish(rank_, bytes.data(), bytes.size());
    group_->Barrier();
    std::vector<std::string> out;
    if (rank_ == root) {
      for (int r = 0; r < size(); ++r) {
        out.emplace_back(static_cast<const char*>(group_->slot(r)), group_->slot_size(r));
      }
    }
    group_->Barrier();
    return out;
  }

  void Barrier() override { group_->Barrier(); }

  [[noreturn]] void Abort(int exit_code, const std::string& why) override {
    group_->Abort(exit_code, why);
    throw CommunicatorAborted(exit_code, why);
  }

 private:
  Group* group_;
  int rank_;
  std::vector<char> scratch_;
};

}  // namespace

void RunInProcessRanks(int world_size, const std::function<void(Communicator&)>& fn) {
  Group group(world_size);
  std::vector<std::exception_ptr> errors(world_size);
  std::vector<std::thread> threads;
  for (int r = 0; r < world_size; ++r) {
    threads.emplace_back([&, r] {
      ThreadCommunicator comm(&group, r);
      try {
        fn(comm);
      } catch (...) {
        errors[r] = std::current_exception();
        // Release ranks blocked in a collective this rank will never join.
        group.Abort(1, "rank " + std::to_string(r) + " failed");
      }
    });
  }
  for (auto& t : threads) t.join();
  // Prefer the first rank's own error over the CommunicatorAborted echoes.
  std::exception_ptr first_echo;
  for (const auto& e : errors) {
    if (!e) continue;
    try {
      std::rethrow_exception(e);
    } catch (const CommunicatorAborted&) {
      if (!first_echo) first_echo = e;
    } catch (...) {
      throw;
    }
  }
  if (first_echo) std::rethrow_exception(first_echo);
}

}  // namespace holdfast
