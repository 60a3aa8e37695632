// The layout a checkpoint was trained with (docs/layout-invariance.md), kept
// in its counters and so in its MANIFEST, and the rule for resuming it.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "core/fit.h"
#include "core/status.h"

namespace holdfast {

inline constexpr const char* kLayoutInvariantCounter = "holdfast/layout/invariant";
// Written by holdfast before layout-invariant gradients were formed from
// gathered rows (their micro-shard count); read to name such checkpoints.
inline constexpr const char* kMicroShardsCounter = "holdfast/layout/micro_shards";
inline constexpr const char* kThreadsCounter = "holdfast/layout/threads_per_rank";

// Adds this run's layout to a checkpoint's counters.
void RecordRunLayout(const LayoutOptions& layout, int threads_per_rank,
                     std::map<std::string, int64_t>* counters);

// Removes what RecordRunLayout added (a restore hands back the user's counters only).
void EraseRunLayout(std::map<std::string, int64_t>* counters);

// Whether a run with `layout`, `threads_per_rank` and `world_size` may
// resume a checkpoint with these counters, written by `written_world_size`
// ranks. FailedPrecondition, naming both, when its result would change (the
// mode differs). Otherwise OK; *warning (one line, or empty) says when the
// resume cannot be bit-exact: under the opt-out with other threads or
// another world size, or a checkpoint older than the record or than gathered
// rows.
Status CheckRunLayout(const std::map<std::string, int64_t>& counters, int written_world_size,
                      const LayoutOptions& layout, int threads_per_rank, int world_size,
                      std::string* warning);

}  // namespace holdfast
