// The command-line options every example shares for what a run's bits may
// depend on (docs/layout-invariance.md): --layout-invariant and --threads.
#pragma once

#include <CLI/CLI.hpp>
#include <string>

#include "core/fit.h"

namespace holdfast::examples {

struct LayoutFlags {
  std::string layout_invariant = "on";
  int threads = 0;  // 0: this host's cores shared among its ranks
};

void AddLayoutFlags(CLI::App& app, LayoutFlags* flags);
LayoutOptions ToLayoutOptions(const LayoutFlags& flags);
// Sets the OpenMP threads of this process (call once the MPI launch is known).
void SetThreads(const LayoutFlags& flags);

}  // namespace holdfast::examples
