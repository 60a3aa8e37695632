// bench/checkpoint: holdfast's checkpoints against raw sequential file I/O of
// the same bytes, and the training stall they cause, in the same run.
//
//   build/bench/checkpoint [--sizes-mb 10,1000] [--json FILE]          one process
//   mpirun -np 2 build/bench/checkpoint ...                             two ranks
//
// io: for each state size, a model whose parameters plus Adam's m and v hold
// that many bytes. Each repeat, in alternating order:
//   save      CheckpointManager::Save into a fresh directory D (the whole
//             two-phase commit: shards, manifest, renames, directory fsyncs);
//   raw write every rank writes the same bytes its shard holds (its 1/W of
//             every blob) straight from memory to D/raw-<rank>.bin with one
//             sequential write loop, fsyncs it, and the chief fsyncs D.
// Then, with the page cache of both dropped (posix_fadvise DONTNEED, checked
// with mincore), RestoreLatest against every rank reading its raw file back
// into the state (cold), and both once more (warm). Each operation is timed
// between barriers (the slowest rank's time). Medians over repeats; the
// ratios are the medians of the per-repeat ratios of neighbouring runs.
// Every file-system call of Save and RestoreLatest goes through a timing Env,
// which splits their time into write, fsync, directory and CPU work.
//
// stall: the big model (784-2048-2048-2048-10, batch 256, dropout 0.2, Adam)
// trained by Fit for --steps steps with BackupAndRestore(save_freq) and
// without, alternating; per save, the step's time minus the median step.
//
//
// Units: harness (flags, scratch directory, timed collectives), timing_env
// (the Env that times every file-system call), raw_io (the reference I/O),
// io_mode.cc and stall_mode.cc (the two measurements); this file parses the
// flags and runs them.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <optional>
#include <stdexcept>
#include <string>

#include "bench/checkpoint/harness.h"
#include "bench/checkpoint/modes.h"
#include "core/exit_codes.h"
#include "core/version.h"
#include "distribute/mirrored_strategy.h"
#include "examples/cli.h"

namespace checkpoint_bench {
namespace {

using holdfast::kExitFailure;
using holdfast::kExitUsage;

bool Wants(const Flags& f, const std::string& mode) {
  return std::find(f.modes.begin(), f.modes.end(), mode) != f.modes.end();
}

// Every mode asked for, in the order given, through one Harness (one
// scratch directory, removed when it returns).
json Run(const Flags& f, holdfast::AutoStrategy& strategy) {
  std::optional<StallData> stall_data;
  if (Wants(f, "stall")) stall_data = LoadStallData(f);  // before anything is measured
  Harness h(f, strategy.communicator());
  json out;
  out["benchmark"] = "checkpoint";
  out["world_size"] = h.world();
  out["holdfast_version"] = HOLDFAST_VERSION;
  out["scratch_dir"] = h.scratch();
  out["filesystem"] = h.FilesystemInfo();
  out["load_average_start"] = LoadAverage();
  for (const std::string& mode : f.modes) {
    if (mode == "io") out["io"] = RunIo(h);
    if (mode == "stall") out["stall"] = RunStall(h, strategy, *stall_data);
  }
  out["load_average_end"] = LoadAverage();
  h.comm().Barrier();
  return out;
}

void ParseFlags(CLI::App& app, Flags& f) {
  app.description(
      "holdfast checkpoints against raw sequential file I/O of the same bytes (save, restore), "
      "and the training stall per save on the big model. Run alone or under mpirun.\n"
      "Exit codes: 0 done, 2 usage or bad input, 1 other failure.");
  app.add_option("--mode", f.modes, "What to measure: io, stall (comma separated)")
      ->delimiter(',')
      ->check(CLI::IsMember({"io", "stall"}))
      ->capture_default_str();
  app.add_option("--sizes-mb", f.sizes_mb, "io: state sizes in MB (1e6 bytes), comma separated")
      ->delimiter(',')
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--gather-piece-mb", f.gather_piece_mb,
                 "io: RestoreOptions::gather_piece_bytes, in MiB (2^20 bytes)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--repeats", f.repeats, "io: repeats per size (after one warm-up)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--settle-seconds", f.settle_seconds,
                 "io: rest before every timed operation, so that none inherits memory the "
                 "previous one freed (see bench/README.md); 0: none")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--dir", f.dir,
                 "Parent of the scratch directory (default: beside this executable); it is "
                 "created fresh and removed at the end");
  app.add_option("--json", f.json_path, "Also write the JSON to FILE");
  app.add_option("--data", f.data, "stall: Fashion-MNIST directory")->capture_default_str();
  app.add_flag("--synthetic", f.synthetic, "stall: random data instead of Fashion-MNIST");
  app.add_flag("--async-checkpoint", f.async_checkpoint,
               "stall: asynchronous saves (BackupAndRestoreOptions::async)");
  app.add_option("--hidden", f.hidden, "stall: hidden layer widths")
      ->delimiter(',')
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--batch", f.batch, "stall: global batch size")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--dropout", f.dropout, "stall: dropout after each hidden layer")
      ->check(CLI::Range(0.0f, 0.999f))
      ->capture_default_str();
  app.add_option("--steps", f.steps, "stall: steps per training run")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--save-freq", f.save_freq, "stall: save every N steps")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_flag("--save-freq-auto", f.save_freq_auto,
               "stall: save as often as --overhead-budget allows (save_freq = kSaveFreqAuto) "
               "instead of every --save-freq steps");
  app.add_option("--overhead-budget", f.overhead_budget,
                 "stall, with --save-freq-auto: the share of run time saves may cost")
      ->check(CLI::Range(0.0001, 0.9999))
      ->capture_default_str();
  app.add_option("--stall-repeats", f.stall_repeats,
                 "stall: runs with and without saves (alternating)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--threads", f.threads,
                 "stall: threads per process (0: the host's cores divided by its ranks)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_flag("--quick", f.quick,
               "Small and fast (for testing): 10 MB only, 2 repeats, 30 steps, 1 stall repeat, "
               "0.5 s settle, unless given");
  app.add_flag("--quiet", f.quiet, "No progress lines on stderr");
  app.set_version_flag("--version", std::string("holdfast ") + HOLDFAST_VERSION);
}

}  // namespace
}  // namespace checkpoint_bench

int main(int argc, char** argv) {
  using namespace checkpoint_bench;
  CLI::App app("bench/checkpoint");
  Flags flags;
  ParseFlags(app, flags);
  if (const auto code = holdfast::examples::ParseCommandLine(app, "checkpoint", argc, argv))
    return *code;
  if (flags.quick) {  // only where the flag was not given
    if (app.count("--sizes-mb") == 0) flags.sizes_mb = {10};
    if (app.count("--repeats") == 0) flags.repeats = 2;
    if (app.count("--steps") == 0) flags.steps = 30;
    if (app.count("--stall-repeats") == 0) flags.stall_repeats = 1;
    if (app.count("--settle-seconds") == 0) flags.settle_seconds = 0.5;
  }
  holdfast::AutoStrategy strategy;
  holdfast::Communicator& comm = strategy.communicator();
  try {
    const json out = Run(flags, strategy);  // the scratch directory is gone after it
    if (comm.rank() == 0) {
      std::printf("\n%s\n", out.dump().c_str());
      if (!flags.json_path.empty()) holdfast::examples::WriteJsonFile(flags.json_path, out);
    }
    return 0;
  } catch (const std::invalid_argument& e) {
    holdfast::EndJob(comm, kExitUsage, "checkpoint", e.what());
  } catch (const std::exception& e) {
    holdfast::EndJob(comm, kExitFailure, "checkpoint", e.what());
  }
}