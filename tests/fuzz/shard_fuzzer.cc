// libFuzzer target: arbitrary bytes as a shard file, decoded for a fixed
// small model. DecodeShard must return (DataLoss or a shard), never crash,
// leak, throw or allocate beyond what the input can hold; a decoded shard's
// slices must fit the model.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "checkpoint/internal/shard_format.h"
#include "tests/fuzz/fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using holdfast::fuzz::ExpectedBlobs;
  const auto shard = holdfast::internal::DecodeShard(
      std::string_view(reinterpret_cast<const char*>(data), size), ExpectedBlobs());
  if (!shard.ok()) {
    if (shard.status().code() != holdfast::StatusCode::kDataLoss) std::abort();
    return 0;
  }
  for (const auto& slice : shard->slices) {
    const auto it = ExpectedBlobs().find(slice.name);
    if (it == ExpectedBlobs().end() || slice.total != it->second || slice.offset > slice.total ||
        slice.data.size() > slice.total - slice.offset) {
      std::abort();  // a slice that does not fit the model got through
    }
  }
  return 0;
}
