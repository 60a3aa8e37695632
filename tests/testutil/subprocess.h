// Runs a real program the way a user would, for end-to-end tests.
#pragma once

#include <string>
#include <vector>

namespace holdfast::testing {

struct ProcessResult {
  int exit_code = -1;  // -1: did not exit normally (signal)
  std::string out;     // stdout
  std::string err;     // stderr
};

// Runs argv[0] with arguments argv[1..] (no shell), waits, and captures both
// output streams. Extra environment entries "NAME=value" are added.
ProcessResult RunProcess(const std::vector<std::string>& argv,
                         const std::vector<std::string>& extra_env = {});

// Number of lines in s (a last line without '\n' counts).
int CountLines(const std::string& s);

}  // namespace holdfast::testing
