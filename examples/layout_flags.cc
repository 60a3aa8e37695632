#include "examples/layout_flags.h"

#include <omp.h>

#include <algorithm>

#include "distribute/mpi_communicator.h"

namespace holdfast::examples {

void AddLayoutFlags(CLI::App& app, LayoutFlags* f) {
  app.add_option("--layout-invariant", f->layout_invariant,
                 "on: the same weights and metrics, bit for bit, for any --threads, world size "
                 "and hosts (fixed-order kernels, exact gradient sums); off: the BLAS path, faster "
                 "(README: Layout invariance: cost), whose last bits follow the layout")
      ->check(CLI::IsMember({"on", "off"}))
      ->capture_default_str();
  app.add_option("--micro-shards", f->micro_shards,
                 "Canonical micro-shards per global batch (layout-invariant mode): any world "
                 "size up to this many gives the same bits; part of the run, like the seed")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--threads", f->threads,
                 "Threads per process (0: the host's cores divided by its ranks)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
}

LayoutOptions ToLayoutOptions(const LayoutFlags& f) {
  return {.invariant = f.layout_invariant == "on", .micro_shards = f.micro_shards};
}

void SetThreads(const LayoutFlags& f) {
  omp_set_num_threads(f.threads > 0
                          ? f.threads
                          : std::max(1, omp_get_num_procs() / MpiCommunicator::LocalRankCount()));
}

}  // namespace holdfast::examples
