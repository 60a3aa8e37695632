#include "core/random.h"

namespace holdfast {
namespace {
constexpr uint32_t kMul0 = 0xD2511F53, kMul1 = 0xCD9E8D57;
constexpr uint32_t kWeyl0 = 0x9E3779B9, kWeyl1 = 0xBB67AE85;

inline PhiloxCounter Round(const PhiloxCounter& c, const PhiloxKey& k) {
  const uint64_t p0 = static_cast<uint64_t>(kMul0) * c[0];
  const uint64_t p1 = static_cast<uint64_t>(kMul1) * c[2];
  return {static_cast<uint32_t>(p1 >> 32) ^ c[1] ^ k[0], static_cast<uint32_t>(p1),
          static_cast<uint32_t>(p0 >> 32) ^ c[3] ^ k[1], static_cast<uint32_t>(p0)};
}
}  // namespace

PhiloxCounter Philox4x32(PhiloxCounter counter, PhiloxKey key) {
  counter = Round(counter, key);
  for (int i = 1; i < 10; ++i) {
    key[0] += kWeyl0;
    key[1] += kWeyl1;
    counter = Round(counter, key);
  }
  return counter;
}

uint32_t PhiloxStream::NextU32() {
  if (lane_ == 4) {
    buffer_ = Philox4x32({block_++, a_, b_, domain_}, key_);
    lane_ = 0;
  }
  return buffer_[lane_++];
}

uint32_t PhiloxStream::NextBelow(uint32_t bound) {
  // Lemire, "Fast Random Integer Generation in an Interval" (2019): the high
  // word of x * bound is uniform once the low word escapes the biased zone.
  uint64_t m = static_cast<uint64_t>(NextU32()) * bound;
  uint32_t low = static_cast<uint32_t>(m);
  if (low < bound) {
    const uint32_t threshold = (0u - bound) % bound;
    while (low < threshold) {
      m = static_cast<uint64_t>(NextU32()) * bound;
      low = static_cast<uint32_t>(m);
    }
  }
  return static_cast<uint32_t>(m >> 32);
}

}  // namespace holdfast
