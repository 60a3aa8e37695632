// holdfast: the command-line tool. Subcommands (one file each, added here):
//   launch                   run a job under mpirun with restarts (launch_command.h)
//   ckpt ls|inspect|verify   look at checkpoint directories (ckpt_command.h)
//
// Exit codes: 0 done, 2 usage or bad input, 1 other failure (launch: the
// job's outcome, 75 when preempted); every error is one line on stderr,
// "holdfast: ...".
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "core/exit_codes.h"
#include "core/version.h"
#include "launcher/ckpt_command.h"
#include "launcher/launch_command.h"

namespace {

// A parse error as one line that names the command it is about: the
// deepest subcommand given on the command line.
std::string UsageErrorLine(const CLI::App& app, const CLI::ParseError& e) {
  const CLI::App* where = &app;
  std::string command = app.get_name();
  for (std::vector<CLI::App*> subs = where->get_subcommands(); !subs.empty();
       subs = where->get_subcommands()) {
    where = subs.front();
    command += " " + where->get_name();
  }
  if (dynamic_cast<const CLI::RequiredError*>(&e) != nullptr &&
      std::string(e.what()).find("subcommand") != std::string::npos) {
    std::string choices;
    const std::vector<const CLI::App*> subs =
        where->get_subcommands([](const CLI::App* sub) { return !sub->get_disabled(); });
    for (size_t i = 0; i < subs.size(); ++i) {
      if (i > 0) choices += i + 1 == subs.size() ? " or " : ", ";
      choices += subs[i]->get_name();
    }
    const std::vector<std::string> extra = where->remaining();
    if (!extra.empty()) {
      return "unknown command '" + extra.front() + "' for `" + command + "`: use " + choices;
    }
    return "`" + command + "` needs a command: " + choices + " (see `" + command + " --help`)";
  }
  return std::string(e.what()) + " (see `" + command + " --help`)";
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app(
      "holdfast: data-parallel training that survives preemption.\n"
      "Run `holdfast <command> --help` for a command's options.",
      "holdfast");
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("holdfast ") + HOLDFAST_VERSION);
  app.footer(
      "Exit codes: 0 done, 2 usage or bad input, 1 other failure; `launch`: the job's outcome "
      "(75: preempted, requeue it).");

  int exit_code = holdfast::kExitOk;
  holdfast::launcher::AddLaunchCommand(app, &exit_code);
  holdfast::launcher::AddCkptCommand(app, &exit_code);

  // mpirun's spelling `-np N` is accepted too (CLI11 takes one-dash names of
  // one letter only): rewritten to --np before the program's own arguments.
  std::vector<std::string> args(argv + 1, argv + argc);
  for (std::string& a : args) {
    if (a == "--") break;
    if (a == "-np") a = "--np";
  }
  std::reverse(args.begin(), args.end());  // CLI11 parses a reversed vector
  try {
    app.parse(args);
  } catch (const CLI::Success& e) {  // --help, --version
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "holdfast: %s\n", UsageErrorLine(app, e).c_str());
    return holdfast::kExitUsage;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "holdfast: %s\n", e.what());
    return holdfast::kExitFailure;
  }
  return exit_code;
}
