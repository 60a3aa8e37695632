// `holdfast ckpt verify`: every committed checkpoint (or one) verified fully.
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "checkpoint/env.h"
#include "checkpoint/reader.h"
#include "core/exit_codes.h"
#include "launcher/ckpt_util.h"
#include "launcher/table.h"

namespace holdfast::launcher {

namespace {

// One committed checkpoint, fully verified. Step, world size and shards come
// from the manifest when only the shards are damaged.
struct Verified {
  bool ok = false;
  std::string damage;  // the reason, when !ok
  std::optional<CheckpointContents> manifest;
  uint64_t disk_bytes = 0;
};

Verified Verify(Env* env, const std::string& path) {
  Verified v;
  v.disk_bytes = DiskBytes(path);
  if (!env->Exists(JoinPath(path, kManifestFile))) {
    v.damage = "not committed (no MANIFEST.json)";
    return v;
  }
  auto c = ReadCheckpoint(env, path);
  v.ok = c.ok();
  if (c.ok()) {
    c->blobs.clear();  // only the manifest's fields are reported
    v.manifest = std::move(*c);
    return v;
  }
  v.damage = Shorten(c.status().message(), path);
  if (auto m = ReadManifest(env, path); m.ok()) v.manifest = std::move(*m);
  return v;
}

// "ok  step 100, world 2, 2 shards, 2.8 KiB" (size on disk) or "DAMAGED: <reason>".
std::string VerifyLine(const Verified& v) {
  if (!v.ok) return "DAMAGED: " + v.damage;
  const CheckpointContents& c = *v.manifest;
  return "ok  step " + std::to_string(c.step) + ", world " + std::to_string(c.world_size) + ", " +
         std::to_string(c.shards.size()) + (c.shards.size() == 1 ? " shard, " : " shards, ") +
         HumanBytes(v.disk_bytes);
}

json VerifyJson(const std::string& name, const std::string& state, const Verified& v) {
  const CheckpointContents* m = v.manifest ? &*v.manifest : nullptr;
  return {{"name", name},
          {"state", state},
          {"ok", v.ok},
          {"damage", v.ok ? json(nullptr) : json(v.damage)},
          {"step", m ? json(m->step) : json(nullptr)},
          {"world_size", m ? json(m->world_size) : json(nullptr)},
          {"shards", m ? json(m->shards.size()) : json(nullptr)},
          {"bytes_on_disk", v.disk_bytes}};
}

}  // namespace

int RunVerify(const std::string& arg, bool as_json) {
  const std::string path = StripTrailingSlashes(arg);
  std::string why;
  const PathKind kind = Classify(path, &why);
  if (kind != PathKind::kCheckpoint && kind != PathKind::kCheckpointDir) {
    return RejectPath(kind, path, why);
  }
  Env* env = Env::Default();
  if (kind == PathKind::kCheckpoint) {
    const Verified v = Verify(env, path);
    if (as_json) {
      std::printf("%s\n", VerifyJson(BaseName(path), "committed", v).dump(2).c_str());
    } else {
      std::printf("%s  %s\n", BaseName(path).c_str(), VerifyLine(v).c_str());
    }
    if (!v.ok) PrintError(path + " is damaged");
    return v.ok ? kExitOk : kExitFailure;
  }

  auto entries = ListCheckpoints(env, path);
  if (!entries.ok()) {
    PrintError("cannot list " + path + ": " + entries.status().message());
    return kExitFailure;
  }
  const std::string latest = ReadLatest(env, path);
  struct Checked {
    const Entry* entry;
    Verified v;
  };
  std::vector<Checked> checked;
  int committed = 0, damaged = 0;
  const Checked* restore = nullptr;
  for (const Entry& e : *entries) {
    checked.push_back({&e, e.kind == Entry::kCommitted ? Verify(env, e.path) : Verified{}});
    if (e.kind != Entry::kCommitted) continue;
    ++committed;
    damaged += checked.back().v.ok ? 0 : 1;
  }
  for (const Checked& c : checked) {  // oldest first: the last ok one is the newest
    if (c.entry->kind == Entry::kCommitted && c.v.ok) restore = &c;
  }

  Table table({"NAME", "STEP", "WORLD", "SHARDS", "SIZE", "STATUS"},
              {false, true, true, true, true, false});
  json rows = json::array();
  for (const Checked& c : checked) {
    const Entry& e = *c.entry;
    const CheckpointContents* m = c.v.manifest ? &*c.v.manifest : nullptr;
    std::string status;
    if (e.kind == Entry::kCommitted) {
      status = c.v.ok ? "ok" : "DAMAGED: " + c.v.damage;
      std::vector<std::string> marks;
      if (e.name == latest) marks.push_back("LATEST");
      if (&c == restore) marks.push_back("restore");
      for (size_t i = 0; i < marks.size(); ++i) status += (i == 0 ? " (" : ", ") + marks[i];
      if (!marks.empty()) status += ")";
    } else {
      status = e.kind == Entry::kPrepareArea ? kIncompleteNote : kUncommittedNote;
    }
    table.Add({e.name, std::to_string(m ? m->step : e.step),
               m ? std::to_string(m->world_size) : "-", m ? std::to_string(m->shards.size()) : "-",
               HumanBytes(e.kind == Entry::kCommitted ? c.v.disk_bytes : DiskBytes(e.path)),
               status});
    if (e.kind != Entry::kCommitted) continue;
    json row = VerifyJson(e.name, KindName(e.kind), c.v);
    row["latest"] = e.name == latest;
    row["restore"] = &c == restore;
    rows.push_back(row);
  }
  if (as_json) {
    const json j = {{"directory", path},
                    {"ok", damaged == 0},
                    {"checkpoints_verified", committed},
                    {"damaged", damaged},
                    {"latest", latest.empty() ? json(nullptr) : json(latest)},
                    {"restore", restore ? json(restore->entry->name) : json(nullptr)},
                    {"checkpoints", rows}};
    std::printf("%s\n", j.dump(2).c_str());
  } else if (committed == 0) {
    std::printf("no checkpoints in %s\n", path.c_str());
    return kExitOk;
  } else {
    std::fputs(table.Render().c_str(), stdout);
    std::printf("%d checkpoint%s verified, %s; %s\n", committed, committed == 1 ? "" : "s",
                damaged == 0 ? "all ok" : (std::to_string(damaged) + " damaged").c_str(),
                restore == nullptr ? "restore would fail: none is usable"
                                   : ("restore would pick " + restore->entry->name).c_str());
  }
  if (damaged > 0) {
    PrintError(std::to_string(damaged) + " of " + std::to_string(committed) + " checkpoint" +
               (committed == 1 ? "" : "s") + " in " + path + " damaged");
    return kExitFailure;
  }
  return kExitOk;
}

}  // namespace holdfast::launcher
