// `holdfast ckpt ls|inspect|verify|get`: looks at a checkpoint directory the way
// CheckpointManager::RestoreLatest would, for people at a terminal (aligned
// tables, human sizes and ages) and for scripts (`--json` on each command,
// verify's exit code).
//
// Every command reads only (it never removes prepare areas or rewrites
// LATEST) and goes through Env::Default(). Exit codes, as in ARCHITECTURE.md:
// 0 done (verify: every checkpoint verified), 2 usage or bad input (a missing
// directory, a path that is no checkpoint), 1 other failure (verify or
// inspect found damage). Errors are one line on stderr, "holdfast: ...".
#pragma once

#include <cstdint>
#include <string>

#include "core/exit_codes.h"

namespace CLI {
class App;
}  // namespace CLI

namespace holdfast::launcher {

// Exit codes: core/exit_codes.h.
// Adds the `ckpt` subcommand and its ls / inspect / verify / get subcommands to
// `app`. When one of them runs (inside app.parse), it prints its output and
// stores its exit code in *exit_code; `exit_code` must outlive `app`.
void AddCkptCommand(CLI::App& app, int* exit_code);

}  // namespace holdfast::launcher
