#include "checkpoint/retention.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <set>

namespace holdfast {

std::vector<size_t> CheckpointsToRemove(std::span<const double> created_unix, int max_to_keep,
                                        double keep_every_n_hours) {
  std::vector<size_t> remove;
  const size_t keep_newest = static_cast<size_t>(std::max(max_to_keep, 1));
  if (created_unix.size() <= keep_newest) return remove;
  const double window = keep_every_n_hours * 3600.0;
  std::set<int64_t> windows_with_keeper;
  for (size_t i = 0; i + keep_newest < created_unix.size(); ++i) {
    if (window > 0) {
      const auto w = static_cast<int64_t>(std::floor((created_unix[i] - created_unix[0]) / window));
      if (windows_with_keeper.insert(w).second) continue;  // the window's oldest: kept
    }
    remove.push_back(i);
  }
  return remove;
}

}  // namespace holdfast
