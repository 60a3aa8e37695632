// What every holdfast program (examples/, bench/) does with its command line
// and its JSON output, so that each behaves the same: --help and --version
// print and exit 0, a bad option is one line naming the program with exit 2
// (kExitUsage), and a JSON file that cannot be written is an error, not a
// silent loss.
#pragma once

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

namespace holdfast::examples {

// Parses the command line into `app`'s options. Returns the exit code when
// the program should end now (after --help or --version: 0; a parse error,
// printed as "<program>: <error> (see --help)": 2), nullopt to go on.
std::optional<int> ParseCommandLine(CLI::App& app, const char* program, int argc, char** argv);

// Writes `j` indented to `path`; std::runtime_error("cannot write PATH")
// when it cannot.
void WriteJsonFile(const std::string& path, const nlohmann::json& j);

}  // namespace holdfast::examples
