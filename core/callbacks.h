// Built-in callbacks: a Keras-like progress bar and a CSV logger.
#pragma once

#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>

#include "core/fit.h"

namespace holdfast {

// Progress on stderr, printed by the chief (rank 0) only. On a terminal: a
// live bar per epoch with ETA, loss and accuracy; otherwise one line per
// epoch. `quiet` prints nothing.
class ProgressBar final : public Callback {
 public:
  explicit ProgressBar(bool quiet = false, FILE* out = stderr);
  void OnTrainBegin(TrainingState& s) override;
  void OnEpochBegin(TrainingState& s) override;
  void OnBatchEnd(TrainingState& s) override;
  void OnEpochEnd(TrainingState& s, const EpochLogs& logs) override;

 private:
  bool enabled(const TrainingState& s) const;
  bool quiet_, tty_;
  FILE* out_;
  std::chrono::steady_clock::time_point epoch_start_, last_draw_;
  int64_t first_batch_ = 0;
};

// Appends "epoch,loss,accuracy,samples,seconds" rows, one per epoch, to a
// CSV file (header written when the file is new). Only the chief (rank 0)
// opens and writes the file.
class CsvLogger final : public Callback {
 public:
  explicit CsvLogger(std::string path) : path_(std::move(path)) {}
  // Throws std::runtime_error if the file cannot be opened.
  void OnTrainBegin(TrainingState& s) override;
  void OnEpochEnd(TrainingState& s, const EpochLogs& logs) override;

 private:
  std::string path_;
  std::ofstream out_;
};

}  // namespace holdfast
