#include "launcher/blob_stats.h"

#include <algorithm>
#include <cmath>
#include <optional>

#include "core/sequential.h"
#include "launcher/table.h"

namespace holdfast::launcher {

using json = nlohmann::ordered_json;

void Stats::Add(std::span<const float> values) {
  count += values.size();
  for (const float f : values) {
    if (std::isnan(f)) {
      ++nan;
    } else if (std::isinf(f)) {
      ++inf;
    } else {
      const double v = f;
      ++finite;
      min = std::min(min, v);
      max = std::max(max, v);
      sum += v;
      sum_squares += v * v;
    }
  }
}

double Stats::rms() const { return std::sqrt(sum_squares / static_cast<double>(finite)); }

std::vector<std::string> Stats::Cells() const {
  if (finite == 0) return {"-", "-", "-", "-", std::to_string(nan), std::to_string(inf)};
  return {FormatG(min),   FormatG(max),        FormatG(mean()),
          FormatG(rms()), std::to_string(nan), std::to_string(inf)};
}

void Stats::ToJson(json& j) const {
  const bool any = finite > 0;
  j["min"] = any ? json(min) : json(nullptr);
  j["max"] = any ? json(max) : json(nullptr);
  j["mean"] = any ? json(mean()) : json(nullptr);
  j["rms"] = any ? json(rms()) : json(nullptr);
  j["finite"] = finite;
  j["nan"] = nan;
  j["inf"] = inf;
}

uint64_t ParamsFloats(const CheckpointContents& c) {
  for (const auto& [name, floats] : c.blob_floats) {
    if (name == "params") return floats;
  }
  return 0;
}

std::vector<TensorSpec> ParamsLayout(const CheckpointContents& c) {
  const uint64_t floats = ParamsFloats(c);
  size_t total = 0;
  std::optional<std::vector<TensorSpec>> tensors =
      TensorsOfSignature(c.model_signature, floats, &total);
  if (!tensors || tensors->empty() || total != floats) return {};
  return *tensors;
}

Stats BlobStats(const std::vector<float>& blob, const std::vector<TensorSpec>& layout) {
  Stats s;
  if (layout.empty()) {
    s.Add(blob);
    return s;
  }
  for (const TensorSpec& t : layout) s.Add(std::span<const float>(blob).subspan(t.offset, t.size));
  return s;
}

bool IsFloatBlob(const CheckpointContents& c, const std::string& name) {
  const ObjectInfo* object = c.ObjectOf(name);
  // No object describes it: a float blob, as every blob was before objects.
  return object == nullptr || BlobDtype(*object, name) == "float32";
}

}  // namespace holdfast::launcher
