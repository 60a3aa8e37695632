// AutoSaveInterval: how often to save so that checkpointing costs training
// at most a given share of its run time (CheckFreq, FAST'21: profile the
// step and the save, then pick the interval). What a save costs is measured
// on the steps it slows down: the step that takes the snapshot (or, when
// synchronous, the whole save) and, for an asynchronous save, every step
// while its writer runs, each against the median step without a save in
// flight. The interval is the smallest that keeps
//   cost per save / (interval x step time) <= budget,
// and never less than the steps a save stays in flight (saves do not queue).
//
// One per rank, fed the same way on every rank; the ranks agree on the
// interval at each save (the largest proposal wins: BackupAndRestore does
// this with one small all-reduce), so every rank saves at the same steps.
#pragma once

#include <cstdint>
#include <deque>

namespace holdfast {

class AutoSaveInterval {
 public:
  // `budget`: the share of run time saves may cost (0.035: 3.5%).
  // `first_interval`: the steps before the first save, spent measuring the
  // step time, and the proposal until a save has been measured.
  explicit AutoSaveInterval(double budget, int64_t first_interval = 20);

  // After every step: its wall time, and whether a save was in flight at
  // its start or began right before it (then the step counts toward that
  // save's cost). A save resolves at the first step that is not affected.
  void AddStep(double seconds, bool affected_by_a_save);
  // A save begins. One still being measured (a save so slow that the next
  // fell due before it resolved) is measured up to here: its steps so far
  // set the next interval's lower bound, so saves stop following each
  // other back to back.
  void SaveStarted();

  // The interval this rank proposes for the next save, in steps.
  int64_t Proposal() const;

  double budget() const { return budget_; }
  // The median step time without a save in flight (0 until measured).
  double step_seconds() const;
  // The measured cost of the last resolved save, in seconds of training
  // time (0 until one resolved), and the steps it was in flight. The
  // proposal uses the largest cost of the last three saves: an estimate
  // too low would overshoot the budget, one too high only saves less often.
  double last_save_cost() const { return last_cost_; }
  int64_t last_save_steps() const { return last_steps_; }
  int64_t saves_measured() const { return saves_measured_; }

 private:
  const double budget_;
  const int64_t first_interval_;
  std::deque<double> clean_;  // recent step times without a save in flight
  // The save being measured: its steps so far and their times.
  std::deque<double> affected_;
  std::deque<double> costs_;  // of the last few resolved saves
  double last_cost_ = 0;
  int64_t last_steps_ = 0;
  int64_t saves_measured_ = 0;

  void CloseMeasurement();
};

}  // namespace holdfast
