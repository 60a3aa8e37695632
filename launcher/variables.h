// The variables of a checkpoint by path (docs/checkpoint-state.md), for
// `holdfast ckpt get`: "model/dense_0/kernel", "optimizer/m/dense_0/kernel",
// "counters/epoch", "values/loss_sum", and the whole flat blobs by name
// ("params", "optimizer/m", a tracked array "ema") as 1-D arrays of their
// object's dtype (a tracked object's archive as bytes); a blob of
// the params' size also by tensor ("ema/dense_0/kernel"). Pure: works on a verified
// CheckpointContents, so that it is tested without files.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "checkpoint/reader.h"
#include "core/status.h"

namespace holdfast::launcher {

struct Variable {
  std::string path;
  // "float32", "float64", "int64", or "uint8": a serialized object's
  // archive bytes (Boost.Serialization's binary archive).
  std::string dtype;
  std::vector<int64_t> shape;        // empty: a scalar
  std::vector<unsigned char> bytes;  // little-endian, row-major
};

// The variable at `path` in `c` (read with its blobs). NotFound names the
// path and how to list the paths (`holdfast ckpt get DIR --list`).
StatusOr<Variable> FindVariable(const CheckpointContents& c, const std::string& path);

// Every path FindVariable accepts, in a stable order (tensors in model order).
std::vector<std::string> VariablePaths(const CheckpointContents& c);

// How many values `v` holds, and value i as text (shortest round-trip
// decimal; "nan", "inf") and as JSON (a number; a NaN or infinity, which
// JSON cannot hold, as its text).
size_t ValueCount(const Variable& v);
std::string ValueText(const Variable& v, size_t i);
nlohmann::ordered_json ValueJson(const Variable& v, size_t i);

// `v` as a NumPy .npy file (format 1.0): what numpy.load reads back.
std::string NpyBytes(const Variable& v);

// `v` for a terminal: one row per line for a matrix, eight values a line
// for a vector, shortest round-trip decimal text.
std::string FormatVariable(const Variable& v);

}  // namespace holdfast::launcher
