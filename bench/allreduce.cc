// bench/allreduce: holdfast's gradient synchronisation against a raw
// MPI_Allreduce of the same bytes, in the same run.
//
//   mpirun -np 2 build/bench/allreduce [--min-bytes 4096] [--max-bytes 268435456]
//
// For each size, "holdfast" is MirroredStrategy's real per-step path
// (BeginStepSync + FinishStepSync: control line, fused 1 MiB buckets) over a
// model whose gradient buffer has that many bytes, run inline on the
// training thread and through the sync thread (overlap on); "raw" is one
// in-place MPI_Allreduce of the same buffer. "gather" is the layout-invariant
// default's path for the same gradients (core/gathered_gradients.h): the
// step line's all-gather (ShareRows, here without rows: their bytes depend
// on the model and batch, not on the gradients) and the all-gather of every
// rank's share of the buffer (ShareGradients). Then a bucket-size sweep over
// the big model's gradient size (40 MB). Rank 0 prints a table and JSON.
#include <mpi.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "bench/median.h"
#include "core/gathered_gradients.h"
#include "distribute/mirrored_strategy.h"
#include "distribute/mpi_communicator.h"
#include "examples/cli.h"

namespace {

using holdfast::bench::Median;

using Clock = std::chrono::steady_clock;

// Median seconds per call of each fn, measured interleaved in a rotating
// order so that drift and position in a round hit all alike; enough
// rounds to fill ~min_seconds (at least 5) after two warm-up rounds. Rank 0
// decides when to stop, so every rank runs the same count.
std::vector<double> MedianSeconds(const std::vector<std::function<void()>>& fns, double min_seconds,
                                  MPI_Comm comm) {
  std::vector<std::vector<double>> times(fns.size());
  double total = 0;
  for (int round = 0, go = 1; go; ++round) {
    for (size_t k = 0; k < fns.size(); ++k) {
      // Rotate who goes first: a call right after another one measured
      // slower here, whichever it was.
      const size_t i = (k + static_cast<size_t>(round)) % fns.size();
      MPI_Barrier(comm);
      const auto t0 = Clock::now();
      fns[i]();
      const double t = std::chrono::duration<double>(Clock::now() - t0).count();
      if (round >= 2) {
        times[i].push_back(t);
        total += t;
      }
    }
    const size_t n = times[0].size();
    go = n < 5 || (total < min_seconds && n < 1000);
    MPI_Bcast(&go, 1, MPI_INT, 0, comm);
  }
  std::vector<double> medians;
  for (const auto& t : times) medians.push_back(Median(t));
  return medians;
}

// A model whose gradient buffer holds `floats` floats: Dense(units) on one
// input has 2 * units parameters.
struct SyncFixture {
  holdfast::Sequential model{1};
  holdfast::SGD sgd{0.1f};
  holdfast::MeanSquaredError loss;
  holdfast::Dataset data;
  holdfast::FitOptions options;
  holdfast::MirroredStrategy strategy;

  SyncFixture(holdfast::Communicator* comm, size_t floats, holdfast::MirroredOptions mo)
      : strategy(comm, mo) {
    model.Add<holdfast::Dense>(static_cast<int>(std::max<size_t>(1, floats / 2)));
    model.Build(1);
    sgd.Build(model.store().size());
    data.x = holdfast::Matrix::Zero(1, 1);
    data.y = holdfast::Matrix::Zero(1, model.output_width());
    strategy.BeginTraining(model, sgd, loss, data, options);
  }
  void Step() {
    double metrics[3] = {1, 2, 3};
    strategy.BeginStepSync(metrics);
    strategy.FinishStepSync(model.store().grads(), metrics);
  }
  // The layout-invariant step's exchange, as GatheredGradients makes it.
  void GatherStep() {
    double metrics[3] = {1, 2, 3};
    const int world = strategy.world_size();
    if (lines.empty()) {
      lines.resize(world * holdfast::Replica::kStepLineBytes);
      for (int r = 0; r <= world; ++r)
        line_offsets.push_back(r * holdfast::Replica::kStepLineBytes);
      cuts = holdfast::GradientShares(model.store(), world);
    }
    strategy.ShareRows(lines, line_offsets, metrics);
    strategy.ShareGradients(model.store().grads(), cuts);
  }
  std::vector<std::byte> lines;
  std::vector<size_t> line_offsets, cuts;
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app("bench/allreduce: holdfast gradient sync vs raw MPI_Allreduce (run under mpirun)");
  size_t min_bytes = 4096, max_bytes = size_t{256} << 20;
  double min_seconds = 1.0;
  std::string json_path;
  bool sweep = true;
  app.add_option("--min-bytes", min_bytes, "Smallest buffer")->capture_default_str();
  app.add_option("--max-bytes", max_bytes, "Largest buffer (sizes grow 4x)")->capture_default_str();
  app.add_option("--min-seconds", min_seconds, "Time to spend per measurement")
      ->capture_default_str();
  app.add_option("--json", json_path, "Also write the JSON to FILE");
  app.add_flag("!--no-sweep", sweep, "Skip the bucket-size sweep");
  if (const auto code = holdfast::examples::ParseCommandLine(app, "allreduce", argc, argv))
    return *code;

  holdfast::MpiCommunicator comm;
  MPI_Comm world = MPI_COMM_WORLD;
  const bool chief = comm.rank() == 0;
  nlohmann::json out;
  out["world_size"] = comm.size();
  out["sizes"] = nlohmann::json::array();
  if (chief) {
    std::printf("allreduce, np=%d (median per call; GB/s = bytes / time)\n", comm.size());
    std::printf("%12s %10s %10s %10s %9s %9s %9s %7s %7s %10s %9s %9s\n", "bytes", "raw us",
                "inline us", "thread us", "raw GB/s", "inl GB/s", "thr GB/s", "inl/raw", "thr/raw",
                "gather us", "gat GB/s", "gat/raw");
  }
  for (size_t bytes = min_bytes; bytes <= max_bytes; bytes *= 4) {
    const size_t floats = bytes / sizeof(float);
    holdfast::MirroredOptions inline_options, thread_options, gather_options;
    inline_options.overlap = holdfast::Overlap::kOff;
    inline_options.layout.invariant = false;
    thread_options.overlap = holdfast::Overlap::kOn;
    thread_options.layout.invariant = false;
    gather_options.layout.invariant = true;
    SyncFixture inline_fixture(&comm, floats, inline_options);
    SyncFixture thread_fixture(&comm, floats, thread_options);
    SyncFixture gather_fixture(&comm, floats, gather_options);
    std::span<float> buffer = inline_fixture.model.store().control_and_grads();
    const size_t sync_bytes = buffer.size_bytes();
    const std::vector<double> t =
        MedianSeconds({[&] {
                         MPI_Allreduce(MPI_IN_PLACE, buffer.data(), static_cast<int>(buffer.size()),
                                       MPI_FLOAT, MPI_SUM, world);
                       },
                       [&] { inline_fixture.Step(); }, [&] { thread_fixture.Step(); },
                       [&] { gather_fixture.GatherStep(); }},
                      min_seconds, world);
    const double raw = t[0], inl = t[1], thr = t[2], gather = t[3];
    out["sizes"].push_back({{"bytes", sync_bytes},
                            {"raw_seconds", raw},
                            {"inline_seconds", inl},
                            {"thread_seconds", thr},
                            {"inline_ratio", raw / inl},
                            {"thread_ratio", raw / thr},
                            {"gather_seconds", gather},
                            {"gather_ratio", raw / gather}});
    if (chief) {
      const double gb = static_cast<double>(sync_bytes) / 1e9;
      std::printf("%12zu %10.1f %10.1f %10.1f %9.2f %9.2f %9.2f %7.3f %7.3f %10.1f %9.2f %9.3f\n",
                  sync_bytes, raw * 1e6, inl * 1e6, thr * 1e6, gb / raw, gb / inl, gb / thr,
                  raw / inl, raw / thr, gather * 1e6, gb / gather, raw / gather);
    }
  }
  if (sweep) {
    // The big model's gradients (784-2048-2048-2048-10: ~10M floats).
    const size_t floats = 10'014'720;
    out["bucket_sweep"] = nlohmann::json::array();
    if (chief)
      std::printf("\nbucket sweep over %zu gradient bytes\n%12s %12s %10s\n", floats * 4,
                  "bucket MiB", "us/step", "GB/s");
    for (size_t mib : {1, 2, 4, 8, 16, 32, 64}) {
      holdfast::MirroredOptions mo;
      mo.bucket_bytes = mib << 20;
      mo.overlap = holdfast::Overlap::kOff;
      mo.layout.invariant = false;
      SyncFixture fixture(&comm, floats, mo);
      const double t = MedianSeconds({[&] { fixture.Step(); }}, min_seconds, world)[0];
      out["bucket_sweep"].push_back({{"bucket_mib", mib}, {"seconds", t}});
      if (chief) std::printf("%12zu %12.1f %10.2f\n", mib, t * 1e6, floats * 4 / t / 1e9);
    }
  }
  if (chief) {
    std::printf("\n%s\n", out.dump().c_str());
    if (!json_path.empty()) holdfast::examples::WriteJsonFile(json_path, out);
  }
  return 0;
}
