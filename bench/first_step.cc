// bench/first_step: a restarted job's way back to training. With --setup it
// trains one step of the big model (784-2048-2048-2048-10, Adam) and saves a
// checkpoint of --state-mb of state (the model and Adam's slots, plus a
// tracked array for the rest), then exits. Without, it is the restarted job:
// it loads the data, builds the model, restores the newest checkpoint
// (verified: every shard's checksum) and trains one step; rank 0 then prints
// one JSON line with the wall-clock time (CLOCK_REALTIME) at the end of that
// step and the time of each phase. bench/first_step.py times it from the
// process's spawn against PyTorch doing the same (bench/peers/torch_first_step.py).
#include <omp.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "checkpoint/manager.h"
#include "core/dataset.h"
#include "core/exit_codes.h"
#include "core/fit.h"
#include "core/layers.h"
#include "core/loss.h"
#include "core/optimizer.h"
#include "core/sequential.h"
#include "core/version.h"
#include "distribute/mirrored_strategy.h"
#include "examples/cli.h"

namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

double UnixNow() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

struct Flags {
  std::string checkpoint_dir;
  bool setup = false;
  double state_mb = 120;
  std::string data = "/usr/share/datasets/fashion-mnist";
  std::vector<int> hidden = {2048, 2048, 2048};
  int64_t batch = 256;
};

}  // namespace

int main(int argc, char** argv) {
  const double started_unix = UnixNow();
  const auto t0 = Clock::now();
  CLI::App app(
      "A restarted job's time to its first trained step: restore the big model's checkpoint "
      "(and a tracked array making --state-mb of state), verify it, train one step. --setup "
      "writes that checkpoint first. Run alone or under mpirun; bench/first_step.py drives it.");
  Flags f;
  app.add_option("--checkpoint-dir", f.checkpoint_dir, "Where the checkpoint is (or goes)")
      ->required();
  app.add_flag("--setup", f.setup, "Train one step, save the checkpoint and exit");
  app.add_option("--state-mb", f.state_mb,
                 "MB (1e6 bytes) of state: the model and Adam's slots (~120 MB), plus a tracked "
                 "float array for the rest")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--data", f.data, "Fashion-MNIST directory")->capture_default_str();
  app.add_option("--hidden", f.hidden, "Hidden layer widths")
      ->delimiter(',')
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--batch", f.batch, "Global batch size")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.set_version_flag("--version", std::string("holdfast ") + HOLDFAST_VERSION);
  if (const auto code = holdfast::examples::ParseCommandLine(app, "first_step", argc, argv))
    return *code;

  holdfast::AutoStrategy strategy;
  holdfast::Communicator& comm = strategy.communicator();
  try {
    const auto t_data = Clock::now();
    auto data = holdfast::LoadFashionMnist(f.data);
    if (!data.ok()) throw std::invalid_argument("cannot load data: " + data.status().message());
    const holdfast::Dataset batch = data->train.Head(f.batch);
    const double load_seconds = SecondsSince(t_data);

    const auto t_build = Clock::now();
    holdfast::Sequential model(784);
    for (int w : f.hidden)
      model.Add<holdfast::Dense>(w).Add<holdfast::ReLU>().Add<holdfast::Dropout>(0.2f);
    model.Add<holdfast::Dense>(10);
    model.Build(42);
    holdfast::Adam adam(1e-3f);
    adam.Build(model.store().size());
    holdfast::Checkpoint checkpoint(&model, &adam);
    const double model_bytes = 3.0 * static_cast<double>(model.store().size()) * sizeof(float);
    std::vector<float> extra(static_cast<size_t>(
        std::max(0.0, (f.state_mb * 1e6 - model_bytes) / static_cast<double>(sizeof(float)))));
    for (size_t i = 0; i < extra.size(); ++i) extra[i] = static_cast<float>(i % 1000) * 1e-3f;
    if (!extra.empty()) checkpoint.Track("extra", std::span<float>(extra));
    holdfast::CheckpointManager manager(&checkpoint, &comm, {.directory = f.checkpoint_dir});
    const double build_seconds = SecondsSince(t_build);

    holdfast::FitOptions options;
    options.epochs = 1;
    options.batch_size = f.batch;
    options.seed = 42;
    options.replica = &strategy.strategy();
    holdfast::SoftmaxCrossEntropy loss;
    if (f.setup) {
      holdfast::Fit(model, adam, loss, batch, options);
      const holdfast::Status saved = manager.Save();
      if (!saved.ok()) throw std::runtime_error(saved.ToString());
      if (comm.rank() == 0) std::printf("{\"saved\": true}\n");
      return 0;
    }
    const auto t_restore = Clock::now();
    const auto restored = manager.RestoreLatest();
    if (!restored.ok()) throw std::runtime_error(restored.status().ToString());
    if (!restored->has_value()) throw std::invalid_argument("no checkpoint in " + f.checkpoint_dir);
    const double restore_seconds = SecondsSince(t_restore);
    const auto t_step = Clock::now();
    holdfast::Fit(model, adam, loss, batch, options);
    const double step_seconds = SecondsSince(t_step);
    if (comm.rank() == 0) {
      const nlohmann::json line = {{"first_step_done_unix", UnixNow()},
                                   {"main_started_unix", started_unix},
                                   {"in_main_seconds", SecondsSince(t0)},
                                   {"load_data_seconds", load_seconds},
                                   {"build_seconds", build_seconds},
                                   {"restore_seconds", restore_seconds},
                                   {"step_seconds", step_seconds},
                                   {"restored_step", **restored},
                                   {"state_bytes", model_bytes + 4.0 * extra.size()},
                                   {"world_size", comm.size()},
                                   {"threads", omp_get_max_threads()}};
      std::printf("%s\n", line.dump().c_str());
      std::fflush(stdout);
    }
    return 0;
  } catch (const std::invalid_argument& e) {
    holdfast::EndJob(comm, holdfast::kExitUsage, "first_step", e.what());
  } catch (const std::exception& e) {
    holdfast::EndJob(comm, holdfast::kExitFailure, "first_step", e.what());
  }
}
