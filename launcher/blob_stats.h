// Statistics of a checkpoint's float blobs for `holdfast ckpt inspect`:
// over the model's tensors when the signature gives their layout (so the
// alignment padding is left out), else over every float.
#pragma once

#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <vector>

#include "checkpoint/reader.h"
#include "core/parameter_store.h"

namespace holdfast::launcher {

struct Stats {
  uint64_t count = 0, finite = 0, nan = 0, inf = 0;
  double min = std::numeric_limits<double>::infinity();
  double max = -std::numeric_limits<double>::infinity();
  double sum = 0, sum_squares = 0;

  void Add(std::span<const float> values);
  double mean() const { return sum / static_cast<double>(finite); }
  double rms() const;
  // MIN MAX MEAN RMS NAN INF
  std::vector<std::string> Cells() const;
  void ToJson(nlohmann::ordered_json& j) const;
};

// The params blob's size in floats (0 without one), and its tensors, from
// the model signature (core's parser, the inverse of Sequential::Signature).
// Empty when the signature does not parse or does not add up to the blob:
// it is only a hint. Every blob of that size shares the layout (the
// optimizer's slots, a tracked copy of the weights).
uint64_t ParamsFloats(const CheckpointContents& c);
// Whether blob `name` of `c` holds float32 values (a model's parameters, an
// optimizer's slots, a float32 array), which have statistics; others hold
// float64 or int64 values or an object's archive bytes.
bool IsFloatBlob(const CheckpointContents& c, const std::string& name);
std::vector<TensorSpec> ParamsLayout(const CheckpointContents& c);

// Statistics of a blob over `layout`'s tensors, or over every float when
// the layout is empty.
Stats BlobStats(const std::vector<float>& blob, const std::vector<TensorSpec>& layout);

}  // namespace holdfast::launcher
