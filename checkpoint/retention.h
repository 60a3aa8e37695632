// The keep policy (tf.train.CheckpointManager's max_to_keep and
// keep_checkpoint_every_n_hours) as a pure function of the committed
// checkpoints' creation times, so that it is tested without files or
// clocks and a restarted job applies the same rule to the same directory.
#pragma once

#include <cstddef>
#include <span>
#include <vector>

namespace holdfast {

// `created_unix`: the committed checkpoints' creation times, oldest
// checkpoint first. Keeps the newest `max_to_keep` (>= 1). Of the older
// ones, with keep_every_n_hours > 0, the oldest in each window of that many
// hours, counted from the oldest checkpoint's time, is kept for good (it
// stays the oldest of its window however many come after). Returns the
// indices of the checkpoints to remove, ascending.
std::vector<size_t> CheckpointsToRemove(std::span<const double> created_unix, int max_to_keep,
                                        double keep_every_n_hours);

}  // namespace holdfast
