// Checkpoint: what a checkpoint holds (the tf.train.Checkpoint idea). The
// model's parameters and the optimizer's slots and step count, the float
// arrays the program tracks by path (an EMA of the weights, running
// statistics), plus named integers and doubles that a training loop needs to
// resume exactly (its position, the running metric sums of an epoch, user
// counters). Everything is restored bit for bit, and restore is strict: a
// checkpoint must hold exactly the tracked arrays (docs/checkpoint-state.md).
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "core/optimizer.h"
#include "core/sequential.h"

namespace holdfast {

// A flat float buffer of the training state, by name: "params",
// "optimizer/m", "optimizer/v", ...
struct NamedBlob {
  std::string name;
  std::span<float> values;
};

class Checkpoint {
 public:
  // Both must outlive the Checkpoint; the model must be built and the
  // optimizer built for it.
  Checkpoint(Sequential* model, Optimizer* optimizer) : model_(model), optimizer_(optimizer) {}

  // Tracks `values` (which must outlive the Checkpoint and keep their size)
  // under `path`: saved 1/W per shard, as the parameters, and restored into
  // it. A path is [A-Za-z0-9_.-] words joined by '/', unique, and not under
  // the reserved names: params, model, optimizer, counters, values,
  // holdfast. std::invalid_argument otherwise.
  void Track(const std::string& path, std::span<float> values);

  // Saved and restored exactly. Keys starting with "holdfast/" are reserved
  // for holdfast's own callbacks.
  std::map<std::string, int64_t> counters;
  std::map<std::string, double> values;

  Sequential& model() { return *model_; }
  Optimizer& optimizer() { return *optimizer_; }
  int64_t step() const { return optimizer_->iterations(); }

  // Views of every flat buffer to save, in a fixed order.
  std::vector<NamedBlob> Blobs();
  std::string ModelSignature() const { return model_->Signature(); }
  std::string OptimizerSignature() const { return optimizer_->Signature(); }

 private:
  Sequential* model_;
  Optimizer* optimizer_;
  std::map<std::string, std::span<float>> tracked_;
};

}  // namespace holdfast
