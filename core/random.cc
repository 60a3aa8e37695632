#include "core/random.h"

#include <Random123/philox.h>

namespace holdfast {

// Random123's reference Philox4x32-10 (the generator its authors publish
// and test with known-answer vectors), not a re-implementation of our own.
PhiloxCounter Philox4x32(PhiloxCounter counter, PhiloxKey key) {
  const r123::Philox4x32_R<10>::ctr_type c = {{counter[0], counter[1], counter[2], counter[3]}};
  const r123::Philox4x32_R<10>::key_type k = {{key[0], key[1]}};
  const r123::Philox4x32_R<10>::ctr_type out = r123::Philox4x32_R<10>()(c, k);
  return {out[0], out[1], out[2], out[3]};
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
