#include "launcher/variables.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "launcher/blob_stats.h"

namespace holdfast::launcher {
namespace {

static_assert(std::endian::native == std::endian::little, ".npy files here are little-endian");

template <typename T>
Variable Scalar(const std::string& path, const char* dtype, T value) {
  Variable v{path, dtype, {}, std::vector<unsigned char>(sizeof(T))};
  std::memcpy(v.bytes.data(), &value, sizeof(T));
  return v;
}

Variable Floats(const std::string& path, std::vector<int64_t> shape, const float* data,
                size_t count) {
  Variable v{path, "float32", std::move(shape), std::vector<unsigned char>(count * sizeof(float))};
  std::memcpy(v.bytes.data(), data, v.bytes.size());
  return v;
}

// Every blob of the params blob's size shares its tensor layout: "params"
// under "model/", an optimizer slot "optimizer/<slot>" or a tracked array
// (an EMA of the weights) under its own name.
std::string TensorPrefix(const std::string& blob) {
  return blob == "params" ? std::string("model/") : blob + "/";
}

}  // namespace

StatusOr<Variable> FindVariable(const CheckpointContents& c, const std::string& path) {
  if (path.starts_with("counters/")) {
    const auto it = c.counters.find(path.substr(9));
    if (it != c.counters.end()) return Scalar(path, "int64", it->second);
  }
  if (path.starts_with("values/")) {
    const auto it = c.values.find(path.substr(7));
    if (it != c.values.end()) return Scalar(path, "float64", it->second);
  }
  const std::vector<TensorSpec> layout = ParamsLayout(c);
  // A blob by its own name first: a tracked "ema/x" is not a tensor of "ema".
  // What its values are, its object says.
  if (const auto it = c.blobs.find(path); it != c.blobs.end() && !IsFloatBlob(c, path)) {
    const std::span<const std::byte> bytes = std::as_bytes(std::span(it->second));
    const ObjectInfo& o = *c.ObjectOf(path);  // a blob no object describes is a float one
    const std::string dtype = BlobDtype(o, path);
    if (dtype == "bytes") {  // a serialized object's archive
      HOLDFAST_ASSIGN_OR_RETURN(std::string archive, UnpackBytes(bytes));
      return Variable{path,
                      "uint8",
                      {static_cast<int64_t>(archive.size())},
                      std::vector<unsigned char>(archive.begin(), archive.end())};
    }
    // An int64 or float64 array or scalar, or an optimizer's step count (a
    // scalar of its own).
    const bool step_count = o.kind == ObjectKind::kOptimizer;
    Variable v{path, dtype, step_count ? std::vector<int64_t>{} : o.shape, {}};
    const size_t size = step_count ? sizeof(int64_t) : bytes.size();
    const auto* first = reinterpret_cast<const unsigned char*>(bytes.data());
    v.bytes.assign(first, first + std::min(size, bytes.size()));
    return v;
  }
  if (const auto it = c.blobs.find(path); it != c.blobs.end()) {
    return Floats(path, {static_cast<int64_t>(it->second.size())}, it->second.data(),
                  it->second.size());
  }
  for (const auto& [name, blob] : c.blobs) {
    const std::string prefix = TensorPrefix(name);
    if (!path.starts_with(prefix) || blob.size() != ParamsFloats(c) || !IsFloatBlob(c, name)) {
      continue;
    }
    for (const TensorSpec& t : layout) {
      if (path.substr(prefix.size()) == t.name && t.offset + t.size <= blob.size()) {
        return Floats(path, t.shape, blob.data() + t.offset, t.size);
      }
    }
  }
  return NotFoundError("no variable " + path + " in " + c.name +
                       " (holdfast ckpt get DIR --list shows them)");
}

std::vector<std::string> VariablePaths(const CheckpointContents& c) {
  std::vector<std::string> paths;
  const std::vector<TensorSpec> layout = ParamsLayout(c);
  for (const auto& [name, floats] : c.blob_floats) {  // manifest order: params first
    paths.push_back(name);
    if (floats != ParamsFloats(c) || !IsFloatBlob(c, name)) continue;
    for (const TensorSpec& t : layout) paths.push_back(TensorPrefix(name) + t.name);
  }
  for (const auto& [key, value] : c.counters) paths.push_back("counters/" + key);
  for (const auto& [key, value] : c.values) paths.push_back("values/" + key);
  return paths;
}

std::string NpyBytes(const Variable& v) {
  const char* descr = v.dtype == "float32"   ? "<f4"
                      : v.dtype == "float64" ? "<f8"
                      : v.dtype == "uint8"   ? "|u1"
                                             : "<i8";
  std::string shape = "(";  // Python's tuple: "()", "(5,)", "(784, 256)"
  for (size_t i = 0; i < v.shape.size(); ++i) {
    shape += (i > 0 ? ", " : "") + std::to_string(v.shape[i]);
  }
  shape += v.shape.size() == 1 ? ",)" : ")";
  std::string header =
      std::string("{'descr': '") + descr + "', 'fortran_order': False, 'shape': " + shape + ", }";
  // Magic (6) + version (2) + length (2) + header + '\n', padded to 64 bytes.
  const size_t unpadded = 10 + header.size() + 1;
  header.append((64 - unpadded % 64) % 64, ' ');
  header += '\n';
  std::string out("\x93NUMPY\x01\x00", 8);
  out += static_cast<char>(header.size() & 0xff);
  out += static_cast<char>(header.size() >> 8);
  out += header;
  out.append(reinterpret_cast<const char*>(v.bytes.data()), v.bytes.size());
  return out;
}

namespace {
size_t ValueBytes(const Variable& v) {
  return v.dtype == "uint8" ? 1 : v.dtype == "float32" ? 4 : 8;
}
}  // namespace

size_t ValueCount(const Variable& v) { return v.bytes.size() / ValueBytes(v); }

std::string ValueText(const Variable& v, size_t i) {
  char buf[40];
  if (v.dtype == "uint8") {
    std::snprintf(buf, sizeof buf, "%u", static_cast<unsigned>(v.bytes[i]));
  } else if (v.dtype == "float32") {
    float f;
    std::memcpy(&f, v.bytes.data() + i * 4, 4);
    std::snprintf(buf, sizeof buf, "%.9g", static_cast<double>(f));
  } else if (v.dtype == "float64") {
    double d;
    std::memcpy(&d, v.bytes.data() + i * 8, 8);
    std::snprintf(buf, sizeof buf, "%.17g", d);
  } else {
    int64_t n;
    std::memcpy(&n, v.bytes.data() + i * 8, 8);
    std::snprintf(buf, sizeof buf, "%lld", static_cast<long long>(n));
  }
  return buf;
}

nlohmann::ordered_json ValueJson(const Variable& v, size_t i) {
  if (v.dtype == "uint8") return v.bytes[i];
  if (v.dtype == "int64") {
    int64_t n;
    std::memcpy(&n, v.bytes.data() + i * 8, 8);
    return n;
  }
  double d;
  if (v.dtype == "float32") {
    float f;
    std::memcpy(&f, v.bytes.data() + i * 4, 4);
    d = f;
  } else {
    std::memcpy(&d, v.bytes.data() + i * 8, 8);
  }
  return std::isfinite(d) ? nlohmann::ordered_json(d) : nlohmann::ordered_json(ValueText(v, i));
}

std::string FormatVariable(const Variable& v) {
  const size_t count = ValueCount(v);
  const size_t per_line = v.shape.size() == 2 ? std::max<size_t>(1, v.shape[1]) : 8;
  std::string out;
  for (size_t i = 0; i < count; ++i) {
    out += ValueText(v, i);
    out += (i + 1) % per_line == 0 || i + 1 == count ? '\n' : ' ';
  }
  return out;
}

}  // namespace holdfast::launcher
