// libFuzzer target: arbitrary bytes as a shard file, decoded for a fixed
// small model. DecodeShard must return (DataLoss or a shard), never crash,
// leak, throw or allocate beyond what the input can hold; a decoded shard's
// slices must fit the model.
#include <cstdint>
#include <cstdlib>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "checkpoint/internal/shard_format.h"
#include "tests/fuzz/fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using holdfast::fuzz::ExpectedBlobs;
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  // Once for the layout only, once copying the floats into blobs of the
  // model's sizes: a slice that did not fit would write outside them (ASan).
  std::map<std::string, std::vector<float>> blobs;
  for (const auto& [name, floats] : ExpectedBlobs()) blobs[name].resize(floats);
  const holdfast::internal::SliceDestination into = [&](const std::string& name, uint64_t offset,
                                                        uint64_t /*count*/) {
    return reinterpret_cast<std::byte*>(blobs.at(name).data() + offset);
  };
  for (const bool copy : {false, true}) {
    const auto shard =
        holdfast::internal::DecodeShard(bytes, ExpectedBlobs(), copy ? into : nullptr);
    if (!shard.ok()) {
      if (shard.status().code() != holdfast::StatusCode::kDataLoss) std::abort();
      continue;
    }
    for (const auto& slice : shard->slices) {
      const auto it = ExpectedBlobs().find(slice.name);
      if (it == ExpectedBlobs().end() || slice.total != it->second || slice.offset > slice.total ||
          slice.count > slice.total - slice.offset) {
        std::abort();  // a slice that does not fit the model got through
      }
    }
  }
  return 0;
}
