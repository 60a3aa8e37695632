// WatchdogCommunicator over in-process ranks: a collective that one rank
// keeps waiting past the limit is reported once, naming the rank, the
// collective and the step; collectives that complete in time never are.
#include "distribute/watchdog.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "distribute/thread_communicator.h"

namespace holdfast {
namespace {

TEST(WatchdogTest, ACollectiveLeftWaitingIsReportedOnceWithRankStepAndCollective) {
  std::mutex mu;
  std::vector<std::string> reports;
  RunInProcessRanks(2, [&](Communicator& inner) {
    WatchdogCommunicator comm(&inner, {.seconds = 0.2, .on_hang = [&](const std::string& m) {
                                         std::lock_guard<std::mutex> lock(mu);
                                         reports.push_back(m);
                                       }});
    comm.NoteStep(42);
    // Rank 1 is "frozen" for 0.6 s while rank 0 waits in the all-reduce.
    if (comm.rank() == 1) std::this_thread::sleep_for(std::chrono::milliseconds(600));
    float x = 1;
    comm.AllReduceSum(std::span<float>(&x, 1));
    EXPECT_EQ(x, 2.0f);
  });
  ASSERT_EQ(reports.size(), 1u);
  EXPECT_NE(reports[0].find("rank 0 of 2"), std::string::npos) << reports[0];
  EXPECT_NE(reports[0].find("in an all-reduce at step 42"), std::string::npos) << reports[0];
  EXPECT_NE(reports[0].find("watchdog"), std::string::npos) << reports[0];
}

TEST(WatchdogTest, CollectivesThatCompleteInTimeAreNeverReported) {
  std::atomic<int> reports{0};
  RunInProcessRanks(3, [&](Communicator& inner) {
    WatchdogCommunicator comm(&inner,
                              {.seconds = 0.2, .on_hang = [&](const std::string&) { ++reports; }});
    for (int i = 0; i < 200; ++i) {
      comm.NoteStep(i);
      double v = comm.rank();
      comm.AllReduceSum(std::span<double>(&v, 1));
      ASSERT_EQ(v, 3.0);
      comm.Barrier();
      const std::string s = comm.BroadcastString(i % 2 ? "odd" : "even", i % 3);
      ASSERT_EQ(s, i % 2 ? "odd" : "even");
    }
    // Time between collectives does not count: only waiting inside one.
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  });
  EXPECT_EQ(reports.load(), 0);
}

}  // namespace
}  // namespace holdfast
