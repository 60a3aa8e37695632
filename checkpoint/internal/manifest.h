// What the manifest writer (commit.cc) and reader (reader.cc) share.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

namespace holdfast::internal {

inline constexpr uint64_t kMaxManifestBytes = 16 << 20;

// The manifest's own checksum: XXH3 of its canonical dump without the
// "checksum" field, so a flipped digit anywhere is caught.
std::string ManifestChecksum(nlohmann::json manifest);

}  // namespace holdfast::internal
