#include "examples/layout_flags.h"

#include <omp.h>

#include <algorithm>

#include "distribute/mpi_communicator.h"

namespace holdfast::examples {

void AddLayoutFlags(CLI::App& app, LayoutFlags* f) {
  app.add_option("--layout-invariant", f->layout_invariant,
                 "on: the same weights and metrics, bit for bit, for any --threads, world size "
                 "and hosts (fixed-order kernels, gradients from gathered rows); off: the BLAS "
                 "path and a float all-reduce, faster "
                 "(README: Layout invariance: cost), whose last bits follow the layout")
      ->check(CLI::IsMember({"on", "off"}))
      ->capture_default_str();
  app.add_option("--threads", f->threads,
                 "Threads per process (0: the host's cores divided by its ranks)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
}

LayoutOptions ToLayoutOptions(const LayoutFlags& f) {
  return {.invariant = f.layout_invariant == "on"};
}

void SetThreads(const LayoutFlags& f) {
  omp_set_num_threads(f.threads > 0
                          ? f.threads
                          : std::max(1, omp_get_num_procs() / MpiCommunicator::LocalRankCount()));
}

}  // namespace holdfast::examples
