// `holdfast ckpt get`: one variable of a verified checkpoint, printed or
// written as a NumPy .npy file (tf.train.load_variable).
#include <cstdio>
#include <string>

#include "checkpoint/env.h"
#include "checkpoint/reader.h"
#include "core/exit_codes.h"
#include "core/parameter_store.h"
#include "launcher/ckpt_util.h"
#include "launcher/variables.h"

namespace holdfast::launcher {

int RunGet(const std::string& arg, const std::string& variable, const std::string& npy, bool list,
           bool as_json) {
  std::string path;
  if (const std::optional<int> code = ResolveCheckpoint(arg, &path)) return *code;
  // Everything verified before a byte is shown: a damaged checkpoint is not
  // half read.
  auto c = ReadCheckpoint(Env::Default(), path);
  if (!c.ok()) {
    PrintError(path + " is DAMAGED: " + Shorten(c.status().message(), path));
    return kExitFailure;
  }
  if (list) {
    const std::vector<std::string> paths = VariablePaths(*c);
    if (as_json) {
      std::printf("%s\n", json(paths).dump(2).c_str());
    } else {
      for (const std::string& p : paths) std::printf("%s\n", p.c_str());
    }
    return kExitOk;
  }
  if (variable.empty()) {
    PrintError("ckpt get: which variable? (a PATH, or --list to see them)");
    return kExitUsage;
  }
  StatusOr<Variable> v = FindVariable(*c, variable);
  if (!v.ok()) {
    PrintError(v.status().message());
    return kExitUsage;
  }
  if (!npy.empty()) {
    // Whole or not at all: a reader never sees half a file.
    const Status written = AtomicWriteFile(Env::Default(), npy, NpyBytes(*v), Durability::kHint);
    if (!written.ok()) {
      PrintError("cannot write " + npy + ": " + written.message());
      return kExitFailure;
    }
    return kExitOk;
  }
  if (as_json) {
    json values = json::array();
    for (size_t i = 0; i < ValueCount(*v); ++i) values.push_back(ValueJson(*v, i));
    std::printf("%s\n", json({{"checkpoint", path},
                              {"path", v->path},
                              {"dtype", v->dtype},
                              {"shape", v->shape},
                              {"values", values}})
                            .dump(2)
                            .c_str());
    return kExitOk;
  }
  const std::string shape = v->shape.empty() ? "scalar" : DescribeShape(v->shape);
  std::printf("%s %s %s (%s)\n%s", v->path.c_str(), v->dtype.c_str(), shape.c_str(), path.c_str(),
              FormatVariable(*v).c_str());
  return kExitOk;
}

}  // namespace holdfast::launcher
