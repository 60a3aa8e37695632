// `holdfast ckpt inspect`: one checkpoint's manifest, shards and blob statistics.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "checkpoint/env.h"
#include "checkpoint/reader.h"
#include "core/exit_codes.h"
#include "launcher/blob_stats.h"
#include "launcher/ckpt_util.h"
#include "launcher/table.h"

namespace holdfast::launcher {

namespace {

// The bytes of an object's blobs as saved (a serializable object's include
// their length word and padding).
uint64_t ObjectBytes(const CheckpointContents& c, const ObjectInfo& o) {
  uint64_t bytes = 0;
  for (const auto& [name, floats] : c.blob_floats) {
    if (std::find(o.blobs.begin(), o.blobs.end(), name) != o.blobs.end()) {
      bytes += floats * sizeof(float);
    }
  }
  return bytes;
}

json InspectJson(const std::string& path, const CheckpointContents& c, const Status& damage,
                 double now) {
  json j;
  j["path"] = path;
  j["name"] = c.name;
  j["ok"] = damage.ok();
  j["damage"] = damage.ok() ? json(nullptr) : json(damage.message());
  j["step"] = c.step;
  j["world_size"] = c.world_size;
  j["created_unix"] = c.created_unix;
  j["created_utc"] = c.created_utc;
  j["age_seconds"] = now - c.created_unix;
  j["holdfast_version"] = c.holdfast_version;
  j["model_signature"] = c.model_signature;
  j["optimizer_signature"] = c.optimizer_signature;
  j["counters"] = c.counters;
  // Doubles as JSON numbers; a NaN or infinity, which JSON cannot hold, as text.
  json values = json::object();
  for (const auto& [key, v] : c.values) values[key] = std::isfinite(v) ? json(v) : json(FormatG(v));
  j["values"] = values;
  j["bytes"] = c.bytes();
  json shards = json::array();
  for (const ShardInfo& s : c.shards) {
    shards.push_back(
        {{"file", s.file}, {"rank", s.writer_rank}, {"bytes", s.bytes}, {"xxh3", s.xxh3}});
  }
  j["shards"] = shards;
  json objects = json::array();
  for (const ObjectInfo& o : c.objects) {
    json entry = ObjectToJson(o);
    entry["description"] = Describe(o);
    entry["bytes"] = ObjectBytes(c, o);
    objects.push_back(entry);
  }
  j["objects"] = objects;
  const uint64_t params_floats = ParamsFloats(c);
  const std::vector<TensorSpec> layout = ParamsLayout(c);
  json blobs = json::array();
  for (const auto& [name, floats] : c.blob_floats) {
    json b = {{"name", name}, {"floats", floats}};
    const auto blob = IsFloatBlob(c, name) ? c.blobs.find(name) : c.blobs.end();
    const bool shared_layout = !layout.empty() && floats == params_floats;
    if (blob != c.blobs.end()) {
      BlobStats(blob->second, shared_layout ? layout : std::vector<TensorSpec>{}).ToJson(b);
    }
    if (name == "params" && shared_layout) {
      json tensors = json::array();
      for (const TensorSpec& t : layout) {
        json jt = {{"name", t.name}, {"shape", t.shape}, {"offset", t.offset}, {"floats", t.size}};
        if (blob != c.blobs.end()) BlobStats(blob->second, {t}).ToJson(jt);
        tensors.push_back(jt);
      }
      b["tensors"] = tensors;
    }
    blobs.push_back(b);
  }
  j["blobs"] = blobs;
  return j;
}

void PrintInspect(const std::string& path, const CheckpointContents& c, const Status& damage,
                  double now) {
  Table fields({"", ""}, {false, false});
  fields.Add({"checkpoint", path});
  fields.Add({"status", damage.ok() ? "ok (manifest and every shard verified)"
                                    : "DAMAGED: " + Shorten(damage.message(), path)});
  fields.Add({"step", std::to_string(c.step)});
  fields.Add({"world size", std::to_string(c.world_size)});
  fields.Add({"created", c.created_utc + " (" + HumanAge(now - c.created_unix) + ")"});
  fields.Add({"holdfast", c.holdfast_version});
  fields.Add({"model", c.model_signature});
  fields.Add({"optimizer", c.optimizer_signature});
  fields.Add({"size", HumanBytes(c.bytes()) + " in " + std::to_string(c.shards.size()) +
                          (c.shards.size() == 1 ? " shard (" : " shards (") +
                          std::to_string(c.bytes()) + " bytes); " + HumanBytes(DiskBytes(path)) +
                          " on disk"});
  bool first = true;
  for (const auto& [key, v] : c.counters) {
    fields.Add({first ? "counters" : "", key + " = " + std::to_string(v)});
    first = false;
  }
  if (c.counters.empty()) fields.Add({"counters", "-"});
  if (damage.ok()) {  // values live in rank 0's shard: known only once it verified
    first = true;
    for (const auto& [key, v] : c.values) {
      fields.Add({first ? "values" : "", key + " = " + FormatExact(v)});
      first = false;
    }
    if (c.values.empty()) fields.Add({"values", "-"});
  }
  // The header row of `fields` is empty: skip it.
  const std::string rendered = fields.Render();
  std::fputs(rendered.c_str() + rendered.find('\n') + 1, stdout);

  std::printf("\nshards\n");
  Table shards({"FILE", "RANK", "SIZE", "BYTES", "CHECKSUM"}, {false, true, true, true, false});
  for (const ShardInfo& s : c.shards) {
    shards.Add({s.file, std::to_string(s.writer_rank), HumanBytes(s.bytes), std::to_string(s.bytes),
                s.xxh3});
  }
  std::fputs(shards.Render("  ").c_str(), stdout);

  std::printf("\nobjects\n");
  Table objects({"PATH", "WHAT", "BYTES"}, {false, false, true});
  for (const ObjectInfo& o : c.objects) {
    objects.Add({o.path, Describe(o), std::to_string(ObjectBytes(c, o))});
  }
  std::fputs(objects.Render("  ").c_str(), stdout);

  std::printf("\nblobs%s\n", damage.ok() ? "" : " (no statistics: the checkpoint is damaged)");
  const uint64_t params_floats = ParamsFloats(c);
  const std::vector<TensorSpec> layout = ParamsLayout(c);
  Table blobs({"NAME", "FLOATS", "SHAPE", "MIN", "MAX", "MEAN", "RMS", "NAN", "INF"},
              {false, true, false, true, true, true, true, true, true});
  for (const auto& [name, floats] : c.blob_floats) {
    const auto blob = IsFloatBlob(c, name) ? c.blobs.find(name) : c.blobs.end();
    const bool shared_layout = !layout.empty() && floats == params_floats;
    std::vector<std::string> row = {name, std::to_string(floats), "-"};
    if (blob != c.blobs.end()) {
      for (std::string& cell :
           BlobStats(blob->second, shared_layout ? layout : std::vector<TensorSpec>{}).Cells()) {
        row.push_back(std::move(cell));
      }
    }
    blobs.Add(row);
    if (name != "params" || !shared_layout) continue;
    for (const TensorSpec& t : layout) {
      std::vector<std::string> trow = {"  " + t.name, std::to_string(t.size),
                                       DescribeShape(t.shape)};
      if (blob != c.blobs.end()) {
        for (std::string& cell : BlobStats(blob->second, {t}).Cells()) trow.push_back(cell);
      }
      blobs.Add(trow);
    }
  }
  std::fputs(blobs.Render("  ").c_str(), stdout);
  if (!layout.empty()) {
    std::printf(
        "  (shapes from the model signature; statistics skip alignment padding and "
        "NaN/Inf)\n");
  }
}

}  // namespace

int RunInspect(const std::string& arg, bool as_json) {
  std::string path;
  if (const std::optional<int> code = ResolveCheckpoint(arg, &path)) return *code;
  Env* env = Env::Default();
  const double now = UnixNow();
  auto manifest = ReadManifest(env, path);
  if (!manifest.ok()) {
    const std::string reason = Shorten(manifest.status().message(), path);
    if (as_json) {
      json j = {{"path", path}, {"name", BaseName(path)}, {"ok", false}, {"damage", reason}};
      std::printf("%s\n", j.dump(2).c_str());
    }
    PrintError(path + " is DAMAGED: " + reason);
    return kExitFailure;
  }
  auto full = ReadCheckpoint(env, path);
  const Status damage = full.ok() ? Status::Ok() : full.status();
  const CheckpointContents& c = full.ok() ? *full : *manifest;
  if (as_json) {
    std::printf("%s\n", InspectJson(path, c, damage, now).dump(2).c_str());
  } else {
    PrintInspect(path, c, damage, now);
  }
  if (!damage.ok()) {
    PrintError(path + " is DAMAGED: " + Shorten(damage.message(), path));
    return kExitFailure;
  }
  return kExitOk;
}

}  // namespace holdfast::launcher
