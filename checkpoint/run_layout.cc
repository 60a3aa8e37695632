#include "checkpoint/run_layout.h"

namespace holdfast {
namespace {

std::string Describe(bool invariant) {
  return invariant ? "--layout-invariant on" : "--layout-invariant off";
}

std::string Plural(int64_t n, const char* word) {
  return std::to_string(n) + " " + word + (n == 1 ? "" : "s");
}

}  // namespace

void RecordRunLayout(const LayoutOptions& layout, int threads_per_rank,
                     std::map<std::string, int64_t>* counters) {
  (*counters)[kLayoutInvariantCounter] = layout.invariant ? 1 : 0;
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
  const auto threads = counters.find(kThreadsCounter);
  if (mode == counters.end() || threads == counters.end()) {
    *warning =
        "it records no layout (written before holdfast recorded layouts, or by a manager "
        "without the training's replica), so this resume cannot be bit-exact with the run "
        "that wrote it";
    return Status::Ok();
  }
  const bool written_invariant = mode->second != 0;
  if (written_invariant != layout.invariant) {
    return FailedPreconditionError(
        "written with " + Describe(written_invariant) + ", this run has " +
        Describe(layout.invariant) +
        ": resuming would change the result (start with the checkpoint's setting or another "
        "directory)");
  }
  const auto shards = counters.find(kMicroShardsCounter);
  if (written_invariant && shards != counters.end()) {
    *warning = "written by an earlier holdfast that summed layout-invariant gradients over " +
               Plural(shards->second, "micro-shard") +
               "; this one gathers rows, so this resume cannot be bit-exact with the run that "
               "wrote it";
    return Status::Ok();
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
