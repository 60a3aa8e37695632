// Writes the fuzzers' seed corpora: valid shards (and a header-only one)
// into <dir>/shard; a valid manifest for two shards (in both fuzzer modes) and
// one with unbacked size claims, and one listing tracked objects into
// <dir>/manifest. Usage: make_seeds <dir>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "tests/fuzz/fuzz_common.h"

namespace {
void Write(const std::filesystem::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) {
    std::fprintf(stderr, "make_seeds: cannot write %s\n", path.c_str());
    std::exit(1);
  }
}
}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_seeds <dir>\n");
    return 2;
  }
  using namespace holdfast::fuzz;
  const std::filesystem::path dir = argv[1];
  std::filesystem::create_directories(dir / "shard");
  std::filesystem::create_directories(dir / "manifest");
  const std::string s0 = ValidShard(0, 2), s1 = ValidShard(1, 2), whole = ValidShard(0, 1);
  Write(dir / "shard" / "valid-0-of-2", s0);
  Write(dir / "shard" / "valid-1-of-2", s1);
  Write(dir / "shard" / "valid-0-of-1", whole);
  Write(dir / "shard" / "header-only", whole.substr(0, 40));
  const std::string manifest = ValidManifest({{ShardName(0, 2), s0}, {ShardName(1, 2), s1}});
  Write(dir / "manifest" / "raw", "\x01" + manifest);
  Write(dir / "manifest" / "fixup", std::string(1, '\0') + manifest);
  Write(dir / "manifest" / "fixup-empty", std::string("\x00{}", 3));
  // A well-formed manifest whose size claims (4e9 bytes in a shard, 1e9
  // floats in a blob) the files on disk do not back: the reader must find out
  // before it allocates.
  nlohmann::json lying = nlohmann::json::parse(manifest);
  lying["blobs"][0]["floats"] = uint64_t{1'000'000'000};
  lying["shards"][0]["bytes"] = uint64_t{4'000'100'000};
  Write(dir / "manifest" / "fixup-size-claims", std::string(1, '\0') + lying.dump());
  // The objects list (checkpoint/object_info.h) over the same blobs: every
  // kind, so that the fuzzer starts from entries the reader accepts.
  nlohmann::json objects = nlohmann::json::parse(manifest);
  objects["objects"] = nlohmann::json::array(
      {{{"path", "model"}, {"kind", "model"}, {"signature", "in:2"}, {"blobs", {"params"}}},
       {{"path", "optimizer"},
        {"kind", "optimizer"},
        {"signature", "adam()"},
        {"blobs", {"optimizer/m"}}},
       {{"path", "stats"},
        {"kind", "array"},
        {"dtype", "float64"},
        {"shape", {33}},
        {"blobs", {"optimizer/v"}}},
       {{"path", "sampler"},
        {"kind", "serializable"},
        {"type", "Sampler"},
        {"class_version", 2},
        {"per_rank", true},
        {"world", 1},
        {"blobs", {"optimizer/v"}}}});
  Write(dir / "manifest" / "fixup-objects", std::string(1, '\0') + objects.dump());
  return 0;
}
