// The Communicator collectives over in-process ranks (threads), the local
// communicator, and the strategy's sync thread.
#include "distribute/communicator.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <type_traits>
#include <vector>

#include "distribute/internal/sync_thread.h"
#include "distribute/thread_communicator.h"
#include "tests/testutil/collective_data.h"
#include "tests/testutil/testutil.h"

namespace holdfast {
namespace {

using testing::CollectiveExpected;
using testing::CollectiveInput;
using testing::CollectiveValue;
using testing::DataTypeOf;

// Element counts: empty, one, odd, medium, and 3 MiB of floats (more than a
// 1 MiB bucket).
constexpr size_t kThreeMiBOfFloats = (size_t{3} << 20) / sizeof(float);

const char* OpName(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      return "sum";
    case ReduceOp::kMax:
      return "max";
    case ReduceOp::kMin:
      return "min";
  }
  return "?";
}

class CollectivesTest : public ::testing::TestWithParam<std::tuple<int, size_t>> {
 protected:
  int world() const { return std::get<0>(GetParam()); }
  size_t count() const { return std::get<1>(GetParam()); }

  // Every rank reduces its CollectiveInput<T>; each result must equal CollectiveExpected<T>
  // exactly, and all ranks' results must be the same bytes.
  template <typename T>
  void CheckAllReduce(ReduceOp op) {
    SCOPED_TRACE(std::string(OpName(op)) + " of " + std::to_string(sizeof(T)) + "-byte values");
    const int w = world();
    const size_t n = count();
    std::vector<std::vector<T>> results(w);
    RunInProcessRanks(w, [&](Communicator& comm) {
      std::vector<T> v(n);
      for (size_t i = 0; i < n; ++i) v[i] = CollectiveInput<T>(comm.rank(), i);
      comm.AllReduce(v.data(), v.size(), DataTypeOf<T>(), op);
      results[comm.rank()] = std::move(v);
    });
    for (int r = 0; r < w; ++r) {
      ASSERT_EQ(results[r].size(), n) << "rank " << r;
      ASSERT_EQ(std::memcmp(results[r].data(), results[0].data(), n * sizeof(T)), 0)
          << "rank " << r << " differs from rank 0";
    }
    for (size_t i = 0; i < n; ++i) {
      ASSERT_EQ(results[0][i], CollectiveExpected<T>(w, i, op)) << "element " << i;
    }
  }
};

TEST_P(CollectivesTest, AllReduceIsExactOnEveryRank) {
  for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kMax, ReduceOp::kMin}) {
    CheckAllReduce<float>(op);
    CheckAllReduce<double>(op);
    CheckAllReduce<int64_t>(op);
  }
}

// With inexact float data the sum depends on the order of additions; every
// rank still gets the same bits, those of the sum in rank order.
TEST_P(CollectivesTest, InexactFloatSumIsBitIdenticalInRankOrder) {
  const int w = world();
  const size_t n = count();
  std::vector<Matrix> inputs;
  for (int r = 0; r < w; ++r) inputs.push_back(RandomMatrix(1, n, -1, 1, 100 + r));
  std::vector<std::vector<float>> results(w);
  RunInProcessRanks(w, [&](Communicator& comm) {
    const Matrix& in = inputs[comm.rank()];
    std::vector<float> v(in.data(), in.data() + n);
    comm.AllReduceSum(v);
    results[comm.rank()] = std::move(v);
  });
  for (size_t i = 0; i < n; ++i) {
    float expected = inputs[0](0, i);
    for (int r = 1; r < w; ++r) expected += inputs[r](0, i);
    ASSERT_EQ(results[0][i], expected) << "element " << i;
  }
  for (int r = 1; r < w; ++r) {
    ASSERT_EQ(std::memcmp(results[r].data(), results[0].data(), n * sizeof(float)), 0)
        << "rank " << r;
  }
}

TEST_P(CollectivesTest, BroadcastFromFirstAndLastRank) {
  const int w = world();
  const size_t n = count();
  for (int root : {0, w - 1}) {
    SCOPED_TRACE("root " + std::to_string(root));
    std::vector<std::vector<double>> results(w);
    RunInProcessRanks(w, [&](Communicator& comm) {
      std::vector<double> v(n);
      for (size_t i = 0; i < n; ++i) v[i] = CollectiveValue(comm.rank(), i) + 0.5 * comm.rank();
      comm.Broadcast(v.data(), v.size() * sizeof(double), root);
      results[comm.rank()] = std::move(v);
    });
    for (int r = 0; r < w; ++r) {
      for (size_t i = 0; i < n; ++i) {
        ASSERT_EQ(results[r][i], CollectiveValue(root, i) + 0.5 * root)
            << "rank " << r << " element " << i;
      }
    }
  }
}

TEST_P(CollectivesTest, BroadcastStringOfAnyLength) {
  const int w = world();
  const size_t n = count();
  for (int root : {0, w - 1}) {
    // The root's string (n bytes, including NULs) and the others' strings of
    // different lengths, which must be replaced.
    auto text_of = [n](int rank) {
      std::string s(rank % 2 == 0 ? n : n / 2 + 3, '\0');
      for (size_t i = 0; i < s.size(); ++i) s[i] = static_cast<char>((i * 31 + rank) % 256);
      return s;
    };
    std::vector<std::string> results(w);
    RunInProcessRanks(w, [&](Communicator& comm) {
      results[comm.rank()] = comm.BroadcastString(text_of(comm.rank()), root);
    });
    for (int r = 0; r < w; ++r) {
      ASSERT_EQ(results[r], text_of(root)) << "root " << root << ", rank " << r;
    }
  }
}

// A status (code and message, '|' and all) reaches every rank from the
// root, and every rank's reaches the root in rank order.
TEST_P(CollectivesTest, StatusesTravelWhole) {
  const int w = world();
  auto status_of = [](int rank) {
    return rank % 2 == 0 ? Status::Ok()
                         : AbortedError("rank " + std::to_string(rank) + " | disk full");
  };
  for (int root : {0, w - 1}) {
    std::vector<Status> broadcast(w, Status::Ok());
    std::vector<std::vector<Status>> gathered(w);
    RunInProcessRanks(w, [&](Communicator& comm) {
      broadcast[comm.rank()] = comm.BroadcastStatus(status_of(comm.rank()), root);
      gathered[comm.rank()] = comm.GatherStatus(status_of(comm.rank()), root);
    });
    for (int r = 0; r < w; ++r) {
      EXPECT_EQ(broadcast[r].code(), status_of(root).code()) << "root " << root << ", rank " << r;
      EXPECT_EQ(broadcast[r].message(), status_of(root).message());
      if (r != root) {
        EXPECT_TRUE(gathered[r].empty());
        continue;
      }
      ASSERT_EQ(gathered[r].size(), static_cast<size_t>(w));
      for (int from = 0; from < w; ++from) {
        EXPECT_EQ(gathered[r][from].code(), status_of(from).code());
        EXPECT_EQ(gathered[r][from].message(), status_of(from).message());
      }
    }
  }
}

TEST_P(CollectivesTest, GatherArrivesInRankOrderAtTheRootOnly) {
  const int w = world();
  const size_t n = count();
  // Rank r sends r * n / 3 bytes: rank 0 an empty string.
  auto text_of = [n](int rank) {
    std::string s(static_cast<size_t>(rank) * n / 3, 'a');
    for (size_t i = 0; i < s.size(); ++i) s[i] = static_cast<char>('a' + (i + rank) % 26);
    return s;
  };
  for (int root : {0, w - 1}) {
    std::vector<std::vector<std::string>> results(w);
    RunInProcessRanks(w, [&](Communicator& comm) {
      results[comm.rank()] = comm.Gather(text_of(comm.rank()), root);
    });
    for (int r = 0; r < w; ++r) {
      SCOPED_TRACE("root " + std::to_string(root) + ", rank " + std::to_string(r));
      if (r != root) {
        EXPECT_TRUE(results[r].empty());
        continue;
      }
      ASSERT_EQ(results[r].size(), static_cast<size_t>(w));
      for (int from = 0; from < w; ++from) EXPECT_EQ(results[r][from], text_of(from)) << from;
    }
  }
}

TEST_P(CollectivesTest, AllGatherFillsEveryPartWhereverItLies) {
  const int w = world();
  const std::vector<Communicator::Part> parts = testing::ScatteredParts(w, count());
  std::vector<size_t> wrong(static_cast<size_t>(w));
  RunInProcessRanks(w, [&](Communicator& comm) {
    std::vector<unsigned char> buffer = testing::AllGatherBuffer(parts, comm.rank());
    comm.AllGather(buffer.data(), parts);
    wrong[static_cast<size_t>(comm.rank())] = testing::AllGatherErrors(parts, buffer);
  });
  EXPECT_EQ(wrong, std::vector<size_t>(static_cast<size_t>(w), 0)) << "wrong bytes, by rank";
}

TEST(ConsecutivePartsTest, EachRankFromItsOffsetToTheNext) {
  const std::vector<size_t> offsets = {0, 5, 5, 12};
  const std::vector<Communicator::Part> parts = Communicator::Consecutive(offsets);
  ASSERT_EQ(parts.size(), 3u);
  EXPECT_EQ(parts[0].at, 0u);
  EXPECT_EQ(parts[0].bytes, 5u);
  EXPECT_EQ(parts[1].at, 5u);
  EXPECT_EQ(parts[1].bytes, 0u);
  EXPECT_EQ(parts[2].at, 5u);
  EXPECT_EQ(parts[2].bytes, 7u);
}

TEST_P(CollectivesTest, BarrierHoldsEveryRankUntilAllArrive) {
  const int w = world();
  constexpr int kRounds = 20;
  std::atomic<int> arrived{0};
  std::atomic<int> early{0};
  RunInProcessRanks(w, [&](Communicator& comm) {
    for (int round = 0; round < kRounds; ++round) {
      // The last rank dawdles, so an early exit would be seen.
      if (comm.rank() == w - 1 && round % 5 == 0) {
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
      }
      ++arrived;
      comm.Barrier();
      if (arrived.load() < (round + 1) * w) ++early;
    }
  });
  EXPECT_EQ(early.load(), 0);
  EXPECT_EQ(arrived.load(), kRounds * w);
}

// A sequence of mixed collectives, as a training step issues them, keeps
// working for many rounds (each collective's buffers are reused safely).
TEST_P(CollectivesTest, MixedCollectivesInSequence) {
  const int w = world();
  const size_t n = std::min<size_t>(count(), 4096);
  std::atomic<int> wrong{0};
  RunInProcessRanks(w, [&](Communicator& comm) {
    for (int round = 0; round < 30; ++round) {
      std::vector<int64_t> v(n, comm.rank() + round);
      comm.AllReduceMax(v);
      for (int64_t x : v) wrong += x != w - 1 + round;
      int64_t word = comm.rank() == round % w ? round : -1;
      comm.Broadcast(&word, sizeof word, round % w);
      wrong += word != round;
      const auto all = comm.Gather(std::to_string(comm.rank()), round % w);
      if (comm.rank() == round % w) {
        wrong += all.size() != static_cast<size_t>(w);
        for (size_t r = 0; r < all.size(); ++r) wrong += all[r] != std::to_string(r);
      }
    }
  });
  EXPECT_EQ(wrong.load(), 0);
}

TEST_P(CollectivesTest, AbortOnOneRankThrowsOnEveryRank) {
  const int w = world();
  std::mutex mu;
  std::vector<std::string> seen(w);
  std::vector<int> codes(w, -1);
  try {
    RunInProcessRanks(w, [&](Communicator& comm) {
      try {
        if (comm.rank() == w - 1) comm.Abort(3, "rank gave up");
        // The others wait in collectives the last rank never joins.
        std::vector<float> v(count(), 1.0f);
        comm.AllReduceSum(v);
        comm.Barrier();
      } catch (const CommunicatorAborted& e) {
        std::lock_guard lock(mu);
        seen[comm.rank()] = e.what();
        codes[comm.rank()] = e.exit_code();
        throw;
      }
      ADD_FAILURE() << "rank " << comm.rank() << " left its collectives normally";
    });
    FAIL() << "RunInProcessRanks returned normally";
  } catch (const CommunicatorAborted& e) {
    EXPECT_EQ(e.exit_code(), 3);
    EXPECT_STREQ(e.what(), "rank gave up");
  }
  for (int r = 0; r < w; ++r) {
    EXPECT_EQ(codes[r], 3) << "rank " << r;
    EXPECT_EQ(seen[r], "rank gave up") << "rank " << r;
  }
}

struct RankFailure : std::runtime_error {
  using std::runtime_error::runtime_error;
};

TEST_P(CollectivesTest, ExceptionOnOneRankReleasesTheOthers) {
  const int w = world();
  const int culprit = w / 2;
  std::atomic<int> released{0};
  try {
    RunInProcessRanks(w, [&](Communicator& comm) {
      if (comm.rank() == culprit) {
        // Let the others reach the collective first.
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        throw RankFailure("rank " + std::to_string(comm.rank()) + " broke");
      }
      try {
        std::vector<double> v(count(), 2.0);
        comm.AllReduceSum(v);
      } catch (const CommunicatorAborted& e) {
        ++released;
        throw;
      }
      ADD_FAILURE() << "rank " << comm.rank() << " finished an all-reduce without rank " << culprit;
    });
    FAIL() << "RunInProcessRanks returned normally";
  } catch (const RankFailure& e) {
    // The original error, not one of the others' CommunicatorAborted echoes.
    EXPECT_EQ(std::string(e.what()), "rank " + std::to_string(culprit) + " broke");
  }
  EXPECT_EQ(released.load(), w - 1);
}

INSTANTIATE_TEST_SUITE_P(WorldsAndSizes, CollectivesTest,
                         ::testing::Combine(::testing::Values(1, 2, 3, 4, 7),
                                            ::testing::Values(size_t{0}, size_t{1}, size_t{7},
                                                              size_t{1000}, kThreeMiBOfFloats)),
                         [](const ::testing::TestParamInfo<CollectivesTest::ParamType>& info) {
                           return "world" + std::to_string(std::get<0>(info.param)) + "_n" +
                                  std::to_string(std::get<1>(info.param));
                         });

TEST(RunInProcessRanksTest, EveryRankRunsOnceWithItsIdentity) {
  for (int w : {1, 2, 5}) {
    std::mutex mu;
    std::vector<int> ranks;
    RunInProcessRanks(w, [&](Communicator& comm) {
      EXPECT_EQ(comm.size(), w);
      EXPECT_EQ(comm.kind(), "threads");
      std::lock_guard lock(mu);
      ranks.push_back(comm.rank());
    });
    std::sort(ranks.begin(), ranks.end());
    std::vector<int> expected(w);
    for (int r = 0; r < w; ++r) expected[r] = r;
    EXPECT_EQ(ranks, expected);
  }
}

TEST(DataTypeSizeTest, Sizes) {
  EXPECT_EQ(DataTypeSize(DataType::kFloat32), 4u);
  EXPECT_EQ(DataTypeSize(DataType::kFloat64), 8u);
  EXPECT_EQ(DataTypeSize(DataType::kInt64), 8u);
}

TEST(ReduceIntoTest, ElementWise) {
  std::vector<int64_t> acc = {1, -5, 7}, in = {2, -6, 7};
  ReduceInto(acc.data(), in.data(), 3, DataType::kInt64, ReduceOp::kMin);
  EXPECT_EQ(acc, (std::vector<int64_t>{1, -6, 7}));
  ReduceInto(acc.data(), in.data(), 3, DataType::kInt64, ReduceOp::kMax);
  EXPECT_EQ(acc, (std::vector<int64_t>{2, -6, 7}));
  std::vector<double> d = {0.5, 1.5}, e = {0.25, -1.5};
  ReduceInto(d.data(), e.data(), 2, DataType::kFloat64, ReduceOp::kSum);
  EXPECT_EQ(d, (std::vector<double>{0.75, 0.0}));
  // count 0 touches nothing.
  ReduceInto(nullptr, nullptr, 0, DataType::kFloat32, ReduceOp::kSum);
}

// ---------------------------------------------------------------------------
// LocalCommunicator: world size 1, every collective an identity.

TEST(LocalCommunicatorTest, CollectivesAreIdentities) {
  LocalCommunicator comm;
  EXPECT_EQ(comm.rank(), 0);
  EXPECT_EQ(comm.size(), 1);
  EXPECT_EQ(comm.kind(), "local");
  std::vector<float> f = {1.5f, -2.0f, 3.25f};
  comm.AllReduceSum(f);
  EXPECT_EQ(f, (std::vector<float>{1.5f, -2.0f, 3.25f}));
  std::vector<double> d = {0.1, 0.2};
  comm.AllReduceSum(d);
  EXPECT_EQ(d, (std::vector<double>{0.1, 0.2}));
  std::vector<int64_t> i = {-7, 9};
  comm.AllReduceMax(i);
  comm.AllReduceMin(i);
  EXPECT_EQ(i, (std::vector<int64_t>{-7, 9}));
  comm.AllReduce(nullptr, 0, DataType::kFloat32, ReduceOp::kSum);
  int64_t word = 42;
  comm.Broadcast(&word, sizeof word, 0);
  EXPECT_EQ(word, 42);
  EXPECT_EQ(comm.BroadcastString("hello", 0), "hello");
  EXPECT_EQ(comm.BroadcastString("", 0), "");
  EXPECT_EQ(comm.Gather("abc", 0), (std::vector<std::string>{"abc"}));
  EXPECT_EQ(comm.Gather("", 0), (std::vector<std::string>{""}));
  comm.Barrier();
}

TEST(LocalCommunicatorDeathTest, AbortPrintsAndExitsWithTheCode) {
  LocalCommunicator comm;
  EXPECT_EXIT(comm.Abort(7, "out of patience"), ::testing::ExitedWithCode(7), "out of patience");
}

// ---------------------------------------------------------------------------
// internal::SyncThread

// A one-rank communicator that records the all-reduces it runs (and on
// which thread), marks the data it was given, and can be told to be slow or
// to fail.
class RecordingCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string kind() const override { return "recording"; }
  void AllReduce(void* data, size_t count, DataType type, ReduceOp op) override {
    EXPECT_EQ(type, DataType::kFloat32);
    EXPECT_EQ(op, ReduceOp::kSum);
    if (delay_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
    std::lock_guard lock(mu);
    calls.emplace_back(static_cast<float*>(data), count);
    threads.push_back(std::this_thread::get_id());
    if (static_cast<int>(calls.size()) == fail_on_call) throw std::runtime_error("link down");
    float* f = static_cast<float*>(data);
    for (size_t i = 0; i < count; ++i) f[i] += 1000.0f;  // "reduced"
  }
  void Broadcast(void*, size_t, int) override { ADD_FAILURE() << "unexpected Broadcast"; }
  std::vector<std::string> Gather(const std::string& b, int) override { return {b}; }
  void Barrier() override {}
  [[noreturn]] void Abort(int, const std::string& why) override { throw std::runtime_error(why); }

  int delay_ms = 0;
  int fail_on_call = -1;  // 1-based call that throws
  std::mutex mu;
  std::vector<std::pair<float*, size_t>> calls;
  std::vector<std::thread::id> threads;
};

TEST(SyncThreadTest, ReducesRangesInQueueOrderOnItsOwnThread) {
  RecordingCommunicator comm;
  comm.delay_ms = 5;
  std::vector<float> buffer(100);
  for (size_t i = 0; i < buffer.size(); ++i) buffer[i] = static_cast<float>(i);
  internal::SyncThread sync(&comm);
  // From the end of the buffer towards the start, as backward produces them.
  const std::vector<std::pair<size_t, size_t>> ranges = {{80, 20}, {50, 30}, {10, 40}, {0, 10}};
  for (const auto& [offset, count] : ranges) sync.Enqueue(buffer.data() + offset, count);
  sync.Drain();
  // Drain returned only after every range was reduced.
  ASSERT_EQ(comm.calls.size(), ranges.size());
  for (size_t k = 0; k < ranges.size(); ++k) {
    EXPECT_EQ(comm.calls[k].first, buffer.data() + ranges[k].first) << k;
    EXPECT_EQ(comm.calls[k].second, ranges[k].second) << k;
    EXPECT_NE(comm.threads[k], std::this_thread::get_id()) << k;
  }
  for (size_t i = 0; i < buffer.size(); ++i) EXPECT_EQ(buffer[i], i + 1000.0f) << i;
}

TEST(SyncThreadTest, DrainWithNothingQueuedReturns) {
  RecordingCommunicator comm;
  internal::SyncThread sync(&comm);
  sync.Drain();
  sync.Drain();
  EXPECT_TRUE(comm.calls.empty());
}

TEST(SyncThreadTest, DrainWaitsForSlowCollectives) {
  RecordingCommunicator comm;
  comm.delay_ms = 30;
  std::vector<float> buffer(8, 0.0f);
  internal::SyncThread sync(&comm);
  const auto start = std::chrono::steady_clock::now();
  sync.Enqueue(buffer.data(), 4);
  sync.Enqueue(buffer.data() + 4, 4);
  sync.Drain();
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(60));
  for (float x : buffer) EXPECT_EQ(x, 1000.0f);
  // Reusable for the next step.
  sync.Enqueue(buffer.data(), 8);
  sync.Drain();
  for (float x : buffer) EXPECT_EQ(x, 2000.0f);
}

TEST(SyncThreadTest, DestructorFinishesQueuedWork) {
  RecordingCommunicator comm;
  comm.delay_ms = 10;
  std::vector<float> buffer(3, 0.0f);
  {
    internal::SyncThread sync(&comm);
    for (int k = 0; k < 3; ++k) sync.Enqueue(buffer.data() + k, 1);
  }
  EXPECT_EQ(comm.calls.size(), 3u);
  for (float x : buffer) EXPECT_EQ(x, 1000.0f);
}

TEST(SyncThreadTest, ErrorOnTheSyncThreadIsRethrownByDrain) {
  RecordingCommunicator comm;
  comm.fail_on_call = 2;
  std::vector<float> buffer(4, 0.0f);
  internal::SyncThread sync(&comm);
  for (int k = 0; k < 4; ++k) sync.Enqueue(buffer.data() + k, 1);
  try {
    sync.Drain();
    FAIL() << "Drain did not rethrow";
  } catch (const std::runtime_error& e) {
    EXPECT_STREQ(e.what(), "link down");
  }
  EXPECT_EQ(buffer[0], 1000.0f);  // reduced before the failure
  EXPECT_EQ(buffer[1], 0.0f);     // the failed one
}

// Real sums over in-process ranks, and a failed rank releasing the others'
// sync threads: their Drain throws instead of hanging.
TEST(SyncThreadTest, SumsOverRanksAndPropagatesAbort) {
  constexpr int kWorld = 3;
  std::vector<std::vector<float>> results(kWorld);
  RunInProcessRanks(kWorld, [&](Communicator& comm) {
    std::vector<float> v(1000);
    for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(i + comm.rank());
    internal::SyncThread sync(&comm);
    for (size_t hi = v.size(); hi > 0; hi -= std::min<size_t>(hi, 300)) {
      const size_t lo = hi - std::min<size_t>(hi, 300);
      sync.Enqueue(v.data() + lo, hi - lo);
    }
    sync.Drain();
    results[comm.rank()] = v;
  });
  for (int r = 0; r < kWorld; ++r) {
    for (size_t i = 0; i < 1000; ++i) ASSERT_EQ(results[r][i], 3.0f * i + 3.0f) << r << " " << i;
  }

  std::atomic<int> drained_with_error{0};
  auto rank_main = [&](Communicator& comm) {
    if (comm.rank() == 1) throw RankFailure("no gradients");
    std::vector<float> v(10, 1.0f);
    internal::SyncThread sync(&comm);
    sync.Enqueue(v.data(), v.size());
    try {
      sync.Drain();
    } catch (const CommunicatorAborted&) {
      ++drained_with_error;
      throw;
    }
  };
  EXPECT_THROW(RunInProcessRanks(kWorld, rank_main), RankFailure);
  EXPECT_EQ(drained_with_error.load(), kWorld - 1);
}

}  // namespace
}  // namespace holdfast
