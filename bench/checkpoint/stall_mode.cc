// bench/checkpoint's stall mode: the big model trained by Fit with
// BackupAndRestore saving every --save-freq steps and without it,
// alternating; per save, the step's time minus the median step.
#include <omp.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "bench/checkpoint/modes.h"
#include "bench/checkpoint/timing_env.h"
#include "checkpoint/backup_and_restore.h"
#include "core/fit.h"
#include "distribute/mirrored_strategy.h"
#include "distribute/mpi_communicator.h"

namespace checkpoint_bench {
namespace {

std::string Percent(double share) {
  char text[32];
  std::snprintf(text, sizeof text, "%.1f%%", share * 100);
  return text;
}

namespace fs = std::filesystem;

class StallBench {
 public:
  StallBench(Harness& h, holdfast::AutoStrategy& strategy, const StallData& data)
      : h_(h),
        f_(h.flags()),
        comm_(h.comm()),
        chief_(h.chief()),
        world_(h.world()),
        strategy_(strategy),
        data_(data) {}

  // Wall time of every step, measured between consecutive OnBatchEnd calls
  // (so it includes the data gather, forward, backward, sync, update and the
  // callbacks before this one: the save), which steps saved, and the
  // file-system calls of each save (from the timing Env, reset every step).
  class StepTimer final : public holdfast::Callback {
   public:
    StepTimer(const holdfast::BackupAndRestore* backup, TimingEnv* env)
        : backup_(backup), env_(env) {}
    void OnBatchBegin(holdfast::TrainingState&) override {
      if (started_) return;
      started_ = true;
      last_ = Clock::now();
      last_saves_ = backup_ ? backup_->save_stats().started : 0;
      if (env_) env_->Reset();
    }
    void OnBatchEnd(holdfast::TrainingState&) override {
      const auto now = Clock::now();
      seconds.push_back(std::chrono::duration<double>(now - last_).count());
      last_ = now;
      // Begun, not committed: an asynchronous save commits steps later, and
      // its stall is the step that began it.
      const int64_t saves = backup_ ? backup_->save_stats().started : 0;
      const bool did_save = saves != last_saves_;
      last_saves_ = saves;
      saved.push_back(did_save);
      if (env_ && did_save) {
        save_env.push_back(StatsJson(*env_));
        save_env_seconds.push_back(env_->TotalSeconds());
      }
      if (env_) env_->Reset();
    }
    // After the callbacks before this one: the last asynchronous save's
    // drain, which a run that saves must pay too.
    void OnTrainEnd(holdfast::TrainingState&) override {
      tail_seconds = std::chrono::duration<double>(Clock::now() - last_).count();
    }
    std::vector<double> seconds;
    double tail_seconds = 0;  // from the last step to Fit's end
    std::vector<bool> saved;
    std::vector<json> save_env;            // per save: its file-system calls
    std::vector<double> save_env_seconds;  // per save: their total time

   private:
    const holdfast::BackupAndRestore* backup_;
    TimingEnv* env_;
    bool started_ = false;
    Clock::time_point last_;
    int64_t last_saves_ = 0;
  };

 public:
  json Run() {
    omp_set_num_threads(
        f_.threads > 0
            ? f_.threads
            : std::max(1, omp_get_num_procs() / holdfast::MpiCommunicator::LocalRankCount()));
    const holdfast::Dataset& train = data_.train;
    holdfast::Sequential model(784);
    for (int w : f_.hidden) {
      model.Add<holdfast::Dense>(w).Add<holdfast::ReLU>();
      if (f_.dropout > 0) model.Add<holdfast::Dropout>(f_.dropout);
    }
    model.Add<holdfast::Dense>(10);
    model.Build(42);
    holdfast::Adam adam(1e-3f);
    adam.Build(model.store().size());
    holdfast::SoftmaxCrossEntropy loss;
    const uint64_t state_bytes = 3 * model.store().size() * sizeof(float);

    const std::string backup_dir = (fs::path(h_.scratch()) / "stall-backup").string();
    TimingEnv env;  // reset by the StepTimer at every step
    holdfast::BackupAndRestoreOptions bo;
    bo.checkpoint.directory = backup_dir;
    bo.checkpoint.max_to_keep = 1;  // as Keras' callback
    bo.checkpoint.env = &env;
    bo.checkpoint.async = f_.async_checkpoint;
    bo.save_freq = f_.save_freq_auto ? holdfast::kSaveFreqAuto : f_.save_freq;
    bo.checkpoint.overhead_budget = f_.overhead_budget;
    const std::string schedule =
        f_.save_freq_auto ? "saving as often as a " + Percent(f_.overhead_budget) + " budget allows"
                          : "saving every " + std::to_string(f_.save_freq) + " steps";
    // Each run starts fresh: the bench removes the backup after the run, out
    // of its time (deleting it is a once-per-run cost, not a save's).
    bo.delete_checkpoint = false;
    bo.fail_on_save_error = true;

    struct RunResult {
      std::vector<double> seconds;
      double tail_seconds = 0;
      std::vector<bool> saved;
      std::vector<json> save_env;
      std::vector<double> save_env_seconds;
      double foreign_cpu_share = -1;
      int64_t waits = 0;       // async saves that waited for the previous one
      double snapshot_ms = 0;  // async: mean time of the state copy per save
      json auto_save;          // what save_freq = auto chose
    };
    auto train_once = [&](bool with_saves, int64_t steps) {
      holdfast::BackupAndRestore backup(bo, &comm_);
      StepTimer timer(with_saves ? &backup : nullptr, with_saves ? &env : nullptr);
      holdfast::FitOptions options;
      options.epochs = 1;
      options.batch_size = f_.batch;
      options.seed = 42;
      options.replica = &strategy_.strategy();
      if (with_saves) options.callbacks.push_back(&backup);
      options.callbacks.push_back(&timer);  // last: its step time includes the save
      const holdfast::Dataset part = train.Head(steps * f_.batch);
      const CpuSample cpu0 = SampleCpu();
      holdfast::Fit(model, adam, loss, part, options);
      RunResult run{timer.seconds,
                    timer.tail_seconds,
                    timer.saved,
                    timer.save_env,
                    timer.save_env_seconds,
                    -1,
                    0,
                    0,
                    {}};
      if (with_saves) {
        const holdfast::SaveStats st = backup.save_stats();
        run.waits = st.waits;
        run.snapshot_ms =
            st.started > 0 ? st.snapshot_seconds * 1e3 / static_cast<double>(st.started) : 0;
        if (const auto a = backup.auto_save()) {
          run.auto_save = {{"interval_steps", a->interval},
                           {"step_seconds", a->step_seconds},
                           {"save_cost_seconds", a->save_cost_seconds},
                           {"saves_measured", a->saves_measured},
                           {"estimated_overhead", a->estimated_overhead},
                           {"saves", st.started}};
        }
      }
      run.foreign_cpu_share = h_.ForeignCpuShare(cpu0);
      if (with_saves && backup.saves_failed() > 0) Fail("a save failed during training");
      return run;
    };
    // After a run and its manager are gone (the manager holds the directory's
    // lock): the next run starts fresh.
    auto remove_backup = [&] {
      comm_.Barrier();
      if (chief_) fs::remove_all(backup_dir);
      comm_.Barrier();
    };

    // Warm-up: BLAS threads, page faults of the activations, the first save.
    h_.Log("stall: warm-up");
    (void)train_once(true, std::min<int64_t>(f_.steps, f_.save_freq_auto ? 25 : f_.save_freq + 2));
    remove_backup();
    json runs = json::array();
    std::vector<double> base_ms, mean_ms, save_step_ms, stall_ms, stall_share, total_on, total_off,
        overhead, save_fs_ms, foreign, saves_per_step;
    json auto_save;                                        // the last run's, with save_freq = auto
    std::map<std::string, std::vector<double>> fs_groups;  // per save, by kind of call
    for (int r = 0; r < f_.stall_repeats; ++r) {
      RunResult with_run, without_run;
      for (int k = 0; k < 2; ++k) {
        const bool with_saves = (k == 0) == (r % 2 == 1);
        h_.Log(std::string("stall: repeat ") + std::to_string(r + 1) + ", " +
               (with_saves ? schedule : std::string("no saves")));
        (with_saves ? with_run : without_run) = train_once(with_saves, f_.steps);
        remove_backup();
      }
      // Step 0 carries Fit's start (broadcast, first touch): left out.
      auto steady = [](const RunResult& run) {
        std::vector<double> v;
        for (size_t i = 1; i < run.seconds.size(); ++i)
          if (!run.saved[i]) v.push_back(run.seconds[i]);
        return v;
      };
      // Every step but the first, and the drain after the last one.
      auto total = [](const RunResult& run) {
        double t = run.tail_seconds;
        for (size_t i = 1; i < run.seconds.size(); ++i) t += run.seconds[i];
        return t;
      };
      const std::vector<double> steady_without = steady(without_run);
      const double base = Median(steady_without);
      const double base_with = Median(steady(with_run));
      std::vector<double> stalls, saves_t;
      for (size_t i = 1; i < with_run.seconds.size(); ++i) {
        if (!with_run.saved[i]) continue;
        saves_t.push_back(with_run.seconds[i]);
        stalls.push_back(with_run.seconds[i] - base_with);
      }
      double mean_stall = 0, mean_step = 0, mean_save_step = 0;
      for (double x : stalls) mean_stall += x / static_cast<double>(stalls.size());
      for (double x : saves_t) mean_save_step += x / static_cast<double>(saves_t.size());
      for (double x : steady_without) mean_step += x / static_cast<double>(steady_without.size());
      for (double x : with_run.save_env_seconds) save_fs_ms.push_back(x * 1e3);
      for (const json& e : with_run.save_env) {
        for (const auto& [group, kinds] : StallGroups()) {
          double t = 0;
          for (const std::string& kind : kinds)
            if (e.contains(kind)) t += e[kind]["seconds"].get<double>();
          fs_groups[group].push_back(t * 1e3);
        }
      }
      base_ms.push_back(base * 1e3);
      mean_ms.push_back(mean_step * 1e3);
      save_step_ms.push_back(mean_save_step * 1e3);
      stall_ms.push_back(mean_stall * 1e3);
      stall_share.push_back(mean_stall / base);
      total_on.push_back(total(with_run));
      total_off.push_back(total(without_run));
      overhead.push_back(total(with_run) / total(without_run) - 1);
      saves_per_step.push_back(static_cast<double>(stalls.size()) /
                               static_cast<double>(with_run.seconds.size() - 1));
      auto_save = with_run.auto_save;
      foreign.push_back(std::max(with_run.foreign_cpu_share, without_run.foreign_cpu_share));
      runs.push_back({{"repeat", r},
                      {"with_saves",
                       {{"step_seconds", with_run.seconds},
                        {"saved", with_run.saved},
                        {"tail_seconds", with_run.tail_seconds},
                        {"save_file_system_calls", with_run.save_env},
                        {"waits", with_run.waits},
                        {"snapshot_ms", with_run.snapshot_ms},
                        {"foreign_cpu_share", with_run.foreign_cpu_share}}},
                      {"without_saves",
                       {{"step_seconds", without_run.seconds},
                        {"tail_seconds", without_run.tail_seconds},
                        {"foreign_cpu_share", without_run.foreign_cpu_share}}},
                      {"median_step_seconds_without", base},
                      {"median_step_seconds_with_non_save_steps", base_with},
                      {"saves", stalls.size()},
                      {"mean_stall_seconds_per_save", mean_stall}});
    }
    const double step_ms = Median(base_ms);
    const double stall = Median(stall_ms);
    // The reference of an asynchronous save's stall: copying this rank's
    // share of the state once in memory, into a buffer already touched.
    const size_t share_floats = state_bytes / sizeof(float) / static_cast<size_t>(world_);
    std::vector<float> from(share_floats, 1.0f), to(share_floats, 0.0f);
    std::vector<double> memcpy_ms;
    for (int i = 0; i < 7; ++i) {
      const auto t0 = Clock::now();
      std::memcpy(to.data(), from.data(), share_floats * sizeof(float));
      memcpy_ms.push_back(std::chrono::duration<double>(Clock::now() - t0).count() * 1e3);
      from[static_cast<size_t>(i)] = to[share_floats - 1 - static_cast<size_t>(i)];
    }
    const double copy_ms = Median(memcpy_ms);
    int64_t waits = 0;
    std::vector<double> snapshot_ms;
    for (const json& run : runs) {
      waits += run["with_saves"]["waits"].get<int64_t>();
      snapshot_ms.push_back(run["with_saves"]["snapshot_ms"].get<double>());
    }
    json fs_breakdown = json::object();
    for (const auto& [group, v] : fs_groups) fs_breakdown[group] = Median(v);
    fs_breakdown["total"] = Median(save_fs_ms);
    json j = {
        {"hidden", f_.hidden},
        {"batch", f_.batch},
        {"dropout", f_.dropout},
        {"optimizer", adam.Signature()},
        {"data", data_.source},
        {"threads", omp_get_max_threads()},
        {"steps_per_run", f_.steps},
        {"save_freq", f_.save_freq_auto ? json("auto") : json(f_.save_freq)},
        {"overhead_budget", f_.save_freq_auto ? json(f_.overhead_budget) : json(nullptr)},
        {"auto_save", auto_save},
        {"repeats", f_.stall_repeats},
        {"state_bytes", state_bytes},
        {"median_step_ms", step_ms},
        {"mean_step_ms", Median(mean_ms)},
        {"mean_save_step_ms", Median(save_step_ms)},
        {"async", f_.async_checkpoint},
        {"stall_ms_per_save", stall},
        {"memcpy_ms_per_rank", copy_ms},
        {"stall_over_memcpy", stall / copy_ms},
        {"async_waits", waits},
        {"snapshot_ms_per_save", Median(snapshot_ms)},
        {"stall_share_of_step", Median(stall_share)},
        {"save_file_system_ms_chief", fs_breakdown},
        // What saving every save_freq steps costs, from the stall per save,
        // and as measured on whole runs (noisier).
        {"overhead_share_from_stall", Median(stall_share) * Median(saves_per_step)},
        {"overhead_share_measured", Median(overhead)},
        {"total_seconds_with_saves", total_on},
        {"total_seconds_without_saves", total_off},
        {"foreign_cpu_share", foreign},
        {"runs", runs},
    };
    if (chief_) {
      std::printf(
          "\ntraining stall per save, np=%d x %d threads: %s, batch %lld, Adam, %.0f MB "
          "of state, %s, %lld steps per run, median of %d\n",
          world_, omp_get_max_threads(), HiddenLabel().c_str(), static_cast<long long>(f_.batch),
          static_cast<double>(state_bytes) / 1e6, schedule.c_str(),
          static_cast<long long>(f_.steps), f_.stall_repeats);
      std::printf("%9s %9s %9s %9s %10s %12s %14s\n", "step ms", "save step", "stall ms",
                  "stall/step", "overhead", "overhead", "other CPU use");
      std::printf("%9s %9s %9s %9s %10s %12s %14s\n", "(median)", "ms", "per save", "",
                  "from stall", "measured", "(max)");
      double max_foreign = 0;
      for (double x : foreign) max_foreign = std::max(max_foreign, x);
      std::printf("%9.1f %9.1f %9.1f %9.2f %9.1f%% %11.1f%% %13.0f%%\n", step_ms,
                  Median(save_step_ms), stall, Median(stall_share),
                  Median(stall_share) * Median(saves_per_step) * 100, Median(overhead) * 100,
                  max_foreign * 100);
      std::printf(
          "(save step = mean time of the steps that saved; stall = that minus the "
          "median other step of the same run; overhead from stall = stall / median step x "
          "saves per step; measured = run time with saves / without - 1, from the second step to "
          "Fit's end (the last save's drain included), median over the alternating pairs)\n");
      if (!auto_save.is_null()) {
        std::printf("save_freq auto: interval %lld steps, %lld saves, estimated overhead %.1f%%\n",
                    static_cast<long long>(auto_save["interval_steps"].get<int64_t>()),
                    static_cast<long long>(auto_save["saves"].get<int64_t>()),
                    auto_save["estimated_overhead"].get<double>() * 100);
      }
      std::printf(
          "%s saves; copying this rank's %.0f MB share in memory takes %.1f ms: stall / copy = "
          "%.2f; the save's own snapshot took %.1f ms; saves that waited for the previous one: "
          "%lld\n",
          f_.async_checkpoint ? "asynchronous" : "synchronous",
          static_cast<double>(share_floats * sizeof(float)) / 1e6, copy_ms, stall / copy_ms,
          Median(snapshot_ms), static_cast<long long>(waits));
      std::printf("file-system calls of a save on the chief, median ms:");
      for (const auto& [group, v] : fs_breakdown.items())
        std::printf(" %s %.1f,", group.c_str(), v.get<double>());
      std::printf(" rest of the stall (CPU: encoding, hashing, JSON; waiting for ranks) %.1f\n",
                  stall - fs_breakdown["total"].get<double>());
    }
    return j;
  }

 private:
  static const std::vector<std::pair<std::string, std::vector<std::string>>>& StallGroups() {
    static const std::vector<std::pair<std::string, std::vector<std::string>>> kGroups = {
        {"shard_write", {"shard_write"}},
        {"shard_fsync", {"shard_fsync"}},
        {"meta_files", {"meta_write", "meta_fsync", "meta_read", "create", "close"}},
        {"dir_fsync", {"fsync_dir"}},
        {"remove_old", {"remove"}},
        {"dir_ops", {"mkdir", "rename", "list_dir", "stat"}},
    };
    return kGroups;
  }

  std::string HiddenLabel() const {
    std::string s = "784";
    for (int w : f_.hidden) s += "-" + std::to_string(w);
    return s + "-10";
  }

  Harness& h_;
  const Flags& f_;
  holdfast::Communicator& comm_;
  const bool chief_;
  const int world_;
  holdfast::AutoStrategy& strategy_;
  const StallData& data_;
};

}  // namespace

StallData LoadStallData(const Flags& f) {
  StallData d;
  const int64_t samples = f.steps * f.batch;
  if (f.synthetic) {
    d.source = "synthetic";
  } else {
    auto data = holdfast::LoadFashionMnist(f.data);
    if (!data.ok()) {
      throw std::invalid_argument("cannot load data (use --synthetic to do without): " +
                                  data.status().message());
    }
    d.train = data->train.Head(samples);
    d.source = f.data;
  }
  if (d.train.size() < samples) {
    d.train.x = (holdfast::Matrix::Random(samples, 784).array() + 1.0f) * 0.5f;
    d.train.y = holdfast::Matrix(samples, 1);
    for (int64_t i = 0; i < samples; ++i) d.train.y(i, 0) = static_cast<float>(i % 10);
    if (!f.synthetic) d.source += " (too few samples: synthetic used)";
  }
  return d;
}

json RunStall(Harness& harness, holdfast::AutoStrategy& strategy, const StallData& data) {
  return StallBench(harness, strategy, data).Run();
}

}  // namespace checkpoint_bench
