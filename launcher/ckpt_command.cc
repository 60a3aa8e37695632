#include "launcher/ckpt_command.h"

#include <CLI/CLI.hpp>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "checkpoint/env.h"
#include "checkpoint/reader.h"
#include "launcher/ckpt_util.h"
#include "launcher/table.h"

namespace holdfast::launcher {

namespace {

// `holdfast ckpt ls`.
struct Row {
  Entry entry;
  std::optional<CheckpointContents> manifest;
  Status damage;  // OK: no damage found
};

}  // namespace

int RunLs(const std::string& dir_arg, bool verify, bool as_json) {
  const std::string dir = StripTrailingSlashes(dir_arg);
  std::string why;
  const PathKind kind = Classify(dir, &why);
  if (kind == PathKind::kCheckpoint) {
    PrintError(dir + " is one checkpoint, not a checkpoint directory (see `holdfast ckpt inspect " +
               dir + "`)");
    return kExitUsage;
  }
  if (kind != PathKind::kCheckpointDir) return RejectPath(kind, dir, why);
  Env* env = Env::Default();
  auto entries = ListCheckpoints(env, dir);
  if (!entries.ok()) {
    PrintError("cannot list " + dir + ": " + entries.status().message());
    return kExitFailure;
  }
  if (entries->empty() && !as_json) {
    std::printf("no checkpoints in %s\n", dir.c_str());
    return kExitOk;
  }

  std::vector<Row> rows;
  for (const Entry& e : *entries) rows.push_back({e, std::nullopt, Status::Ok()});
  // Newest first, as restore looks at them.
  const Row* restore = nullptr;
  for (auto it = rows.rbegin(); it != rows.rend(); ++it) {
    Row& row = *it;
    if (row.entry.kind != Entry::kCommitted) continue;
    auto manifest = ReadManifest(env, row.entry.path);
    if (!manifest.ok()) {
      row.damage = manifest.status();
      continue;
    }
    row.manifest = std::move(*manifest);
    if (verify) {
      // Holds one checkpoint in memory at a time.
      const auto full = ReadCheckpoint(env, row.entry.path);
      if (!full.ok()) row.damage = full.status();
    }
    if (restore == nullptr && row.damage.ok()) restore = &row;
  }

  const std::string latest = ReadLatest(env, dir);
  bool latest_found = latest.empty();
  const double now = UnixNow();
  Table table({"NAME", "STEP", "EPOCH/BATCH", "WORLD", "SIZE", "AGE", ""},
              {false, true, false, true, true, false, false});
  json checkpoints = json::array();
  for (const Row& row : rows) {
    const Entry& e = row.entry;
    const CheckpointContents* m = row.manifest ? &*row.manifest : nullptr;
    std::vector<std::string> marks;
    if (e.kind == Entry::kCommitted && e.name == latest) {
      marks.push_back("LATEST");
      latest_found = true;
    }
    if (&row == restore) marks.push_back("restore");
    if (!row.damage.ok()) marks.push_back("DAMAGED: " + Shorten(row.damage.message(), e.path));
    if (e.kind == Entry::kPrepareArea) marks.push_back(kIncompleteNote);
    if (e.kind == Entry::kUncommitted) marks.push_back(kUncommittedNote);
    std::string note;
    for (const std::string& mark : marks) note += (note.empty() ? "" : ", ") + mark;
    const uint64_t bytes = DiskBytes(e.path);
    const double created = m ? m->created_unix : ModifiedUnix(e.path);
    table.Add({e.name, std::to_string(m ? m->step : e.step), m ? EpochBatch(m->counters) : "-",
               m ? std::to_string(m->world_size) : "-", HumanBytes(bytes), HumanAge(now - created),
               note});
    checkpoints.push_back(
        {{"name", e.name},
         {"path", e.path},
         {"state", KindName(e.kind)},
         {"step", m ? m->step : e.step},
         {"epoch", Counter(m, "holdfast/epoch")},
         {"batch", Counter(m, "holdfast/batch")},
         {"world_size", m ? json(m->world_size) : json(nullptr)},
         {"bytes_on_disk", bytes},
         {"created_unix", created},
         {"age_seconds", now - created},
         {"latest", e.kind == Entry::kCommitted && e.name == latest},
         {"restore", &row == restore},
         {"ok", e.kind == Entry::kCommitted && row.damage.ok()},
         {"damage",
          row.damage.ok() ? json(nullptr) : json(Shorten(row.damage.message(), e.path))}});
  }
  if (as_json) {
    const json j = {{"directory", dir},
                    {"latest", latest.empty() ? json(nullptr) : json(latest)},
                    {"latest_is_committed", !latest.empty() && latest_found},
                    {"restore", restore ? json(restore->entry.name) : json(nullptr)},
                    {"shards_verified", verify},
                    {"checkpoints", checkpoints}};
    std::printf("%s\n", j.dump(2).c_str());
    return kExitOk;
  }
  std::fputs(table.Render().c_str(), stdout);
  if (!latest_found) {
    std::printf("note: LATEST names %s, which is not a committed checkpoint here\n",
                latest.c_str());
  }
  if (restore == nullptr) {
    std::printf("note: no checkpoint here is usable; restore would fail\n");
  }
  if (!verify) {
    std::printf("note: shards not verified (--no-verify); `holdfast ckpt verify %s` checks them\n",
                dir.c_str());
  }
  return kExitOk;
}

void AddCkptCommand(CLI::App& app, int* exit_code) {
  CLI::App* ckpt = app.add_subcommand(
      "ckpt",
      "Look at checkpoint directories: list, inspect, verify checkpoints and get variables");
  ckpt->require_subcommand(1);
  ckpt->footer(
      "Exit codes: 0 done (verify: all ok), 1 damage found or other failure, 2 usage or bad "
      "input.");

  // Options live as long as `app`: the callbacks below run inside app.parse.
  struct Args {
    std::string dir;
    bool no_verify = false;
    bool json = false;
    std::string variable, npy;
    bool list = false;
  };
  auto args = std::make_shared<Args>();

  CLI::App* ls = ckpt->add_subcommand(
      "ls",
      "List the checkpoints in DIR, oldest first: step, epoch/batch, world size, size, age;\n"
      "which one LATEST names, which one restore would pick (the newest that verifies),\n"
      "damaged ones and leftover prepare areas of interrupted saves.");
  ls->add_option("DIR", args->dir, "Checkpoint directory (CheckpointOptions::directory)")
      ->required()
      ->type_name("");
  ls->add_flag("--no-verify", args->no_verify,
               "Read manifests only, no shard hashing (fast for big checkpoints);\n"
               "`restore` then marks the newest readable manifest");
  ls->add_flag("--json", args->json, "Print JSON instead of the table");
  ls->callback([args, exit_code] { *exit_code = RunLs(args->dir, !args->no_verify, args->json); });

  CLI::App* inspect = ckpt->add_subcommand(
      "inspect",
      "Show one checkpoint: its manifest (step, world size, creation time, versions,\n"
      "signatures, counters, values), its shards, and statistics of every blob.\n"
      "DIR: the newest committed checkpoint in DIR; DIR/ckpt-N: that one.");
  inspect->add_option("DIR", args->dir, "Checkpoint directory (its newest), or DIR/ckpt-N")
      ->required()
      ->type_name("");
  inspect->add_flag("--json", args->json, "Print JSON instead of text");
  inspect->callback([args, exit_code] { *exit_code = RunInspect(args->dir, args->json); });

  CLI::App* verify = ckpt->add_subcommand(
      "verify",
      "Verify every committed checkpoint in DIR fully (manifest checksum, every shard's size\n"
      "and hash, blob coverage), or just DIR/ckpt-N. Exit 0 if all are ok, 1 if any is\n"
      "damaged, 2 for usage errors.");
  verify->add_option("DIR", args->dir, "Checkpoint directory (all of it), or DIR/ckpt-N")
      ->required()
      ->type_name("");
  verify->add_flag("--json", args->json, "Print JSON instead of the table");
  verify->callback([args, exit_code] { *exit_code = RunVerify(args->dir, args->json); });

  CLI::App* get = ckpt->add_subcommand(
      "get",
      "Print one variable of a checkpoint, or write it as a NumPy .npy file (numpy.load reads\n"
      "it), after verifying the whole checkpoint. PATH: model/<tensor> (model/dense_0/kernel),\n"
      "optimizer/<slot>/<tensor>, counters/<name>, values/<name>, or a whole flat blob\n"
      "(params, optimizer/m); --list prints them all. DIR: its newest committed checkpoint.");
  get->add_option("DIR", args->dir, "Checkpoint directory (its newest), or DIR/ckpt-N")
      ->required()
      ->type_name("");
  get->add_option("PATH", args->variable, "The variable")->type_name("");
  get->add_option("--npy", args->npy, "Write it to FILE as .npy instead of printing it");
  get->add_flag("--list", args->list, "Print every variable's path instead");
  get->add_flag("--json", args->json, "Print JSON (path, dtype, shape, values) instead of text");
  get->callback([args, exit_code] {
    *exit_code = RunGet(args->dir, args->variable, args->npy, args->list, args->json);
  });
}

}  // namespace holdfast::launcher
