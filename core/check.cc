#include "core/check.h"

#include <cstdio>
#include <cstdlib>

namespace holdfast {
namespace {
CheckFailureHandler g_check_failure_handler = nullptr;
}  // namespace

void SetCheckFailureHandler(CheckFailureHandler handler) { g_check_failure_handler = handler; }

void CheckFailed(const char* file, int line, const char* condition, const std::string& message) {
  std::fprintf(stderr, "holdfast: CHECK failed at %s:%d: %s: %s\n", file, line, condition,
               message.c_str());
  std::fflush(stderr);
  if (g_check_failure_handler != nullptr) g_check_failure_handler();
  std::abort();
}

}  // namespace holdfast
