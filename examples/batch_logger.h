// BatchLogger: the loss of every training step in a CSV file, to plot a run
// batch by batch (fmnist_mlp --batch-log) and to compare two runs step by
// step.
#pragma once

#include <cstdint>
#include <fstream>
#include <string>

#include "core/fit.h"

namespace holdfast::examples {

// Writes one row per step, "step,epoch,batch,loss", below that header line:
// step is the global step once the batch is applied (1, 2, ...), epoch and
// batch the 0-based position of that global batch, loss its mean loss over
// every rank's samples. The loss is written exactly (the shortest text that
// reads back as the same double), so two runs' files are byte-equal if and
// only if every step's loss is.
//
// The file is the loss history of the weights the run ends with. A run that
// resumes at step S keeps the rows up to S and goes on with S+1: rows past S
// (written by an attempt that crashed after its last checkpoint, whose steps
// are trained again) and a torn last line are cut off. A run that starts
// fresh starts the file over. Only the chief (rank 0) touches the file; each
// row is flushed as it is written, so a killed run loses none it finished.
//
// Register it before the callback that restores (BackupAndRestore): it
// learns the start step at the first epoch begin, after the restore, and its
// row of a step is written before a save of that step can commit (no gap in
// the file after a kill -9 right after a save).
//
// Throws std::invalid_argument if the file exists but is not a batch log
// (it is then left alone), std::runtime_error if it cannot be opened.
class BatchLogger final : public Callback {
 public:
  explicit BatchLogger(std::string path) : path_(std::move(path)) {}
  void OnEpochBegin(TrainingState& s) override;
  void OnBatchEnd(TrainingState& s) override;

  static constexpr const char* kHeader = "step,epoch,batch,loss";

 private:
  // Cuts the file after `step`'s row (or creates it) and opens it to append.
  void Open(int64_t step);

  std::string path_;
  std::ofstream out_;
};

}  // namespace holdfast::examples
