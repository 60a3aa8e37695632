#include "checkpoint/save_interval.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace holdfast {
namespace {

// Enough steps for a stable median, few enough to follow a run that slows.
constexpr size_t kCleanSteps = 31;
// An interval longer than this is not worth waiting for: a preemption
// would cost more than the saves saved.
constexpr int64_t kLongestInterval = 100'000;

}  // namespace

AutoSaveInterval::AutoSaveInterval(double budget, int64_t first_interval)
    : budget_(budget), first_interval_(std::max<int64_t>(1, first_interval)) {}

double AutoSaveInterval::step_seconds() const {
  if (clean_.empty()) return 0;
  std::vector<double> sorted(clean_.begin(), clean_.end());
  std::nth_element(sorted.begin(), sorted.begin() + static_cast<long>(sorted.size() / 2),
                   sorted.end());
  return sorted[sorted.size() / 2];
}

void AutoSaveInterval::CloseMeasurement() {
  // What a save cost is what its steps took beyond a step without one.
  const double step = step_seconds();
  double cost = 0;
  for (double t : affected_) cost += std::max(0.0, t - step);
  last_cost_ = cost;
  costs_.push_back(cost);
  if (costs_.size() > 3) costs_.pop_front();
  last_steps_ = static_cast<int64_t>(affected_.size());
  ++saves_measured_;
  affected_.clear();
}

void AutoSaveInterval::SaveStarted() {
  if (!affected_.empty()) CloseMeasurement();
}

void AutoSaveInterval::AddStep(double seconds, bool affected_by_a_save) {
  if (affected_by_a_save) {
    affected_.push_back(seconds);
    return;
  }
  if (!affected_.empty()) CloseMeasurement();  // the save resolved
  clean_.push_back(seconds);
  if (clean_.size() > kCleanSteps) clean_.pop_front();
}

int64_t AutoSaveInterval::Proposal() const {
  const double step = step_seconds();
  if (saves_measured_ == 0 || step <= 0 || budget_ <= 0) return first_interval_;
  const double cost = *std::max_element(costs_.begin(), costs_.end());
  const double wanted = std::ceil(cost / (budget_ * step));
  const int64_t interval = wanted >= static_cast<double>(kLongestInterval)
                               ? kLongestInterval
                               : static_cast<int64_t>(wanted);
  return std::clamp<int64_t>(std::max(interval, last_steps_ + 1), 1, kLongestInterval);
}

}  // namespace holdfast
