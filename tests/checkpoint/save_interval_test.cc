// AutoSaveInterval: the save interval that keeps checkpointing under its
// share of run time, from the steps a save slows down.
#include "checkpoint/save_interval.h"

#include <gtest/gtest.h>

namespace holdfast {
namespace {

TEST(AutoSaveIntervalTest, TheFirstSaveComesAfterTheMeasuringSteps) {
  AutoSaveInterval a(0.035, 20);
  EXPECT_EQ(a.Proposal(), 20);
  for (int i = 0; i < 20; ++i) a.AddStep(0.1, false);
  EXPECT_DOUBLE_EQ(a.step_seconds(), 0.1);
  EXPECT_EQ(a.Proposal(), 20) << "no save measured yet";
}

TEST(AutoSaveIntervalTest, TheIntervalKeepsTheMeasuredCostUnderTheBudget) {
  AutoSaveInterval a(0.035, 20);
  for (int i = 0; i < 20; ++i) a.AddStep(0.1, false);
  // A save slows three steps by 0.2, 0.05 and 0.02 s; it resolves at the
  // next step without one.
  a.AddStep(0.3, true);
  a.AddStep(0.15, true);
  a.AddStep(0.12, true);
  a.AddStep(0.1, false);
  EXPECT_EQ(a.saves_measured(), 1);
  EXPECT_NEAR(a.last_save_cost(), 0.27, 1e-12);
  EXPECT_EQ(a.last_save_steps(), 3);
  // 0.27 s per save / (0.035 x 0.1 s per step) = 77.1 steps.
  EXPECT_EQ(a.Proposal(), 78);
  const double overhead = 0.27 / (78 * 0.1);
  EXPECT_LE(overhead, 0.035);
  EXPECT_GT(0.27 / (77 * 0.1), 0.035) << "78 is the smallest interval within budget";
}

TEST(AutoSaveIntervalTest, ACheapSaveStillWaitsUntilThePreviousOneIsDone) {
  AutoSaveInterval a(0.5, 5);
  for (int i = 0; i < 10; ++i) a.AddStep(0.1, false);
  for (int i = 0; i < 12; ++i) a.AddStep(0.1, true);  // a writer that costs nothing, 12 steps long
  a.AddStep(0.1, false);
  EXPECT_EQ(a.last_save_cost(), 0);
  EXPECT_EQ(a.Proposal(), 13);
}

TEST(AutoSaveIntervalTest, SavesThatFollowEachOtherBackToBackLengthenTheInterval) {
  AutoSaveInterval a(0.035, 5);
  for (int i = 0; i < 5; ++i) a.AddStep(0.1, false);
  for (int i = 0; i < 5; ++i) a.AddStep(0.1, true);  // in flight when the next falls due
  a.SaveStarted();
  EXPECT_EQ(a.saves_measured(), 1);
  EXPECT_EQ(a.Proposal(), 6) << "at least the steps the last save was in flight, plus one";
}

TEST(AutoSaveIntervalTest, TheDearestOfTheLastThreeSavesSetsTheInterval) {
  AutoSaveInterval a(0.1, 5);
  for (int i = 0; i < 10; ++i) a.AddStep(1.0, false);
  for (const double extra : {5.0, 1.0, 1.0, 1.0}) {
    a.AddStep(1.0 + extra, true);
    a.AddStep(1.0, false);
  }
  // The 5 s save has left the window of three: 1 s / (0.1 x 1 s) = 10.
  EXPECT_EQ(a.Proposal(), 10);
  a.AddStep(4.0, true);
  a.AddStep(1.0, false);
  EXPECT_EQ(a.Proposal(), 30);
  a.AddStep(1.5, true);
  a.AddStep(1.0, false);
  EXPECT_EQ(a.Proposal(), 30) << "the 3 s save is still among the last three";
}

}  // namespace
}  // namespace holdfast
