// HOLDFAST_CHECK: invariants whose violation is a bug, not an input error.
// A failed check prints file:line and the message, then calls the failure
// handler (std::abort by default; distribute/ installs one that calls
// MPI_Abort so that no other rank is left waiting in a collective).
#pragma once

#include <sstream>
#include <string>

namespace holdfast {

using CheckFailureHandler = void (*)();

// Replaces the handler run after a failed check's message is printed. The
// handler must not return. Not thread-safe; call it once at start-up.
void SetCheckFailureHandler(CheckFailureHandler handler);

[[noreturn]] void CheckFailed(const char* file, int line, const char* condition,
                              const std::string& message);

}  // namespace holdfast

#define HOLDFAST_CHECK(cond, msg)                                        \
  do {                                                                   \
    if (!(cond)) {                                                       \
      std::ostringstream _hf_oss;                                        \
      _hf_oss << msg;                                                    \
      ::holdfast::CheckFailed(__FILE__, __LINE__, #cond, _hf_oss.str()); \
    }                                                                    \
  } while (0)
