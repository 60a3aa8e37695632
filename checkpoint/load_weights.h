// LoadWeights: a model's weights from a checkpoint, for inference or to
// start another training from them (tf.train.Checkpoint's restore with
// expect_partial, for one model): the optimizer's state, counters and values
// are left unread.
#pragma once

#include <cstdint>
#include <string>

#include "checkpoint/env.h"
#include "core/sequential.h"
#include "core/status.h"

namespace holdfast {

// Loads into `model` (built) the parameters of the model tracked as `object`
// ("model": the one the Checkpoint was built with; or another tracked
// model, an "ema") in `path`: a checkpoint
// (DIR/ckpt-N), or a directory, from which the newest checkpoint that
// verifies is taken (damaged ones are skipped with a note on stderr, as a
// restore does). Returns the step of the checkpoint loaded.
//
// Reads only, and takes no lock: it works on a directory a training job is
// writing (an uncommitted save is never read). `model` changes only when
// everything was verified and fits. Errors name the path: NotFound (nothing
// there, no committed checkpoint), DataLoss (none verifies),
// FailedPrecondition (written for another model, both signatures named; or
// no model `object` in it).
StatusOr<int64_t> LoadWeights(Sequential& model, const std::string& path,
                              const std::string& object = "model", Env* env = nullptr);

}  // namespace holdfast
