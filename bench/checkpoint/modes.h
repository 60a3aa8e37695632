// bench/checkpoint's two measurements, each run by main.cc through one
// Harness. Both are collective and return the JSON of their results; the
// chief also prints their tables.
#ifndef HOLDFAST_BENCH_CHECKPOINT_MODES_H_
#define HOLDFAST_BENCH_CHECKPOINT_MODES_H_

#include <string>

#include "bench/checkpoint/harness.h"
#include "core/dataset.h"
#include "distribute/mirrored_strategy.h"

namespace checkpoint_bench {

// io: for each --sizes-mb, a model whose parameters plus Adam's m and v hold
// that many bytes; Save and RestoreLatest (cold and warm) against raw I/O of
// the same bytes, alternating, medians over --repeats.
json RunIo(Harness& harness);

// The stall mode's training data, loaded before anything is measured so a
// missing data set fails at once (std::invalid_argument). Synthetic data
// (uniform pixels, labels 0..9) when asked or when there are too few
// samples: the content does not change a step's cost.
struct StallData {
  holdfast::Dataset train;
  std::string source;  // the directory, or "synthetic"
};
StallData LoadStallData(const Flags& flags);

// stall: the big model trained for --steps steps with a save every
// --save-freq steps and without, alternating, --stall-repeats times.
json RunStall(Harness& harness, holdfast::AutoStrategy& strategy, const StallData& data);

}  // namespace checkpoint_bench

#endif  // HOLDFAST_BENCH_CHECKPOINT_MODES_H_
