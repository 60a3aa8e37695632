// libFuzzer target: arbitrary bytes as a checkpoint's MANIFEST.json, beside
// two valid shards, read with ReadCheckpoint (and ReadManifest). Must return
// (DataLoss / NotFound or contents), never crash, leak, throw or allocate
// beyond what the files on disk can hold.
//
// The first input byte picks a mode: odd, the rest is written as it is (the
// checksum stops almost everything); even, the rest is parsed as JSON and, if
// it is an object, given a valid checksum first, so that the fuzzer explores
// what the reader does with a well-formed but lying manifest.
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "checkpoint/env.h"
#include "checkpoint/internal/manifest.h"
#include "checkpoint/reader.h"
#include "tests/fuzz/fuzz_common.h"

namespace {

std::string g_dir;  // <tmp>/ckpt-8

void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) {
    std::fprintf(stderr, "manifest_fuzzer: cannot write %s\n", path.c_str());
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  const char* base = getenv("TMPDIR");
  std::string tmpl = std::string(base != nullptr && *base != '\0' ? base : "/tmp") +
                     "/holdfast_manifest_fuzzer_XXXXXX";
  if (mkdtemp(tmpl.data()) == nullptr) std::abort();
  g_dir = tmpl + "/ckpt-" + std::to_string(holdfast::fuzz::kStep);
  if (mkdir(g_dir.c_str(), 0755) != 0) std::abort();
  for (uint32_t r = 0; r < 2; ++r) {
    WriteFile(g_dir + "/" + holdfast::fuzz::ShardName(r, 2), holdfast::fuzz::ValidShard(r, 2));
  }
  // Removed at exit; a crash leaves it under $TMPDIR (the script points
  // TMPDIR at its own scratch directory).
  std::atexit([] {
    std::string cmd = "rm -rf '" + g_dir.substr(0, g_dir.find_last_of('/')) + "'";
    (void)std::system(cmd.c_str());
  });
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::string text(reinterpret_cast<const char*>(data) + 1, size - 1);
  if ((data[0] & 1) == 0) {
    nlohmann::json m = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (!m.is_discarded() && m.is_object()) {
      m["checksum"] = holdfast::internal::ManifestChecksum(m);
      text = m.dump();
    }
  }
  WriteFile(g_dir + "/" + holdfast::kManifestFile, text);
  holdfast::Env* env = holdfast::Env::Default();
  const auto manifest = holdfast::ReadManifest(env, g_dir);
  const auto contents = holdfast::ReadCheckpoint(env, g_dir);
  if (contents.ok()) {
    if (!manifest.ok()) std::abort();  // a checkpoint without a valid manifest
    // Every blob the manifest lists came back whole.
    for (const auto& [name, floats] : contents->blob_floats) {
      const auto it = contents->blobs.find(name);
      if (it == contents->blobs.end() || it->second.size() != floats) std::abort();
    }
  } else {
    const holdfast::StatusCode code = contents.status().code();
    if (code != holdfast::StatusCode::kDataLoss && code != holdfast::StatusCode::kNotFound) {
      std::fprintf(stderr, "unexpected status: %s\n", contents.status().ToString().c_str());
      std::abort();
    }
  }
  return 0;
}
