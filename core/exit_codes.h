// What holdfast's programs and `holdfast launch` agree on across a process
// boundary: exit codes and the environment variables the launcher sets.
// One definition, shared by examples/, bench/, checkpoint/ and launcher/
// (README, "Exit codes").
#pragma once

namespace holdfast {

inline constexpr int kExitOk = 0;
// Something failed that a restart may not repeat (I/O error, a lost rank).
inline constexpr int kExitFailure = 1;
// Bad flags or input: a restart would fail the same way, so none is made.
inline constexpr int kExitUsage = 2;
// Preempted: every rank saved a checkpoint at the same step; restart to
// resume (sysexits' EX_TEMPFAIL).
inline constexpr int kExitPreempted = 75;

// When this names a file, the chief's restore writes there what it restored
// ("step N" or "none"); `holdfast launch` sets it to report each attempt.
inline constexpr const char* kRestoreReportEnv = "HOLDFAST_RESTORE_REPORT";
// The launcher's attempt number (1, 2, ...), for logs and tests.
inline constexpr const char* kAttemptEnv = "HOLDFAST_ATTEMPT";

}  // namespace holdfast
