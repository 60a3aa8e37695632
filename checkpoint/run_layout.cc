#include "checkpoint/run_layout.h"

namespace holdfast {
namespace {

std::string Describe(bool invariant, int64_t micro_shards) {
  return invariant ? "--layout-invariant on with " + std::to_string(micro_shards) + " micro-shards"
                   : std::string("--layout-invariant off");
}

std::string Plural(int64_t n, const char* word) {
  return std::to_string(n) + " " + word + (n == 1 ? "" : "s");
}

}  // namespace

void RecordRunLayout(const LayoutOptions& layout, int threads_per_rank,
                     std::map<std::string, int64_t>* counters) {
  (*counters)[kLayoutInvariantCounter] = layout.invariant ? 1 : 0;
  (*counters)[kMicroShardsCounter] = layout.micro_shards;
  (*counters)[kThreadsCounter] = threads_per_rank;
}

void EraseRunLayout(std::map<std::string, int64_t>* counters) {
  counters->erase(kLayoutInvariantCounter);
  counters->erase(kMicroShardsCounter);
  counters->erase(kThreadsCounter);
}

Status CheckRunLayout(const std::map<std::string, int64_t>& counters, int written_world_size,
                      const LayoutOptions& layout, int threads_per_rank, int world_size,
                      std::string* warning) {
  warning->clear();
  const auto mode = counters.find(kLayoutInvariantCounter);
  const auto shards = counters.find(kMicroShardsCounter);
  const auto threads = counters.find(kThreadsCounter);
  if (mode == counters.end() || shards == counters.end() || threads == counters.end()) {
    *warning =
        "it records no layout (written before holdfast recorded layouts, or by a manager "
        "without the training's replica), so this resume cannot be bit-exact with the run "
        "that wrote it";
    return Status::Ok();
  }
  const bool written_invariant = mode->second != 0;
  // Under the opt-out the micro-shard count plays no part.
  if (written_invariant != layout.invariant ||
      (layout.invariant && shards->second != layout.micro_shards)) {
    return FailedPreconditionError(
        "written with " + Describe(written_invariant, shards->second) + ", this run has " +
        Describe(layout.invariant, layout.micro_shards) +
        ": resuming would change the result (start with the checkpoint's setting or another "
        "directory)");
  }
  if (!layout.invariant &&
      (threads->second != threads_per_rank || written_world_size != world_size)) {
    *warning = "written by " + Plural(written_world_size, "rank") + " x " +
               Plural(threads->second, "thread") + ", this run has " + Plural(world_size, "rank") +
               " x " + Plural(threads_per_rank, "thread") +
               ": with --layout-invariant off the resumed run cannot be bit-exact";
  }
  return Status::Ok();
}

}  // namespace holdfast
