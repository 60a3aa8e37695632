// holdfast: the command-line tool. Subcommands (one file each, added here):
//   ckpt ls|inspect|verify   look at checkpoint directories (ckpt_command.h)
//
// Exit codes: 0 done, 2 usage or bad input, 1 other failure; every error is
// one line on stderr, "holdfast: ...".
#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "core/version.h"
#include "launcher/ckpt_command.h"

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
  app.footer("Exit codes: 0 done, 2 usage or bad input, 1 other failure.");

  int exit_code = holdfast::launcher::kExitOk;
  holdfast::launcher::AddCkptCommand(app, &exit_code);

  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {  // --help, --version
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "holdfast: %s\n", UsageErrorLine(app, e).c_str());
    return holdfast::launcher::kExitUsage;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "holdfast: %s\n", e.what());
    return holdfast::launcher::kExitFailure;
  }
  return exit_code;
}
