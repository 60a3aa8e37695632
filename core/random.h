// Counter-based random numbers (Philox4x32-10, Salmon et al., SC'11).
//
// Every random draw in holdfast is a pure function of (key, counter): there is
// no generator state to save in a checkpoint, the numbers are identical on
// every platform and standard library, and any element of a stream can be
// computed without the ones before it. That is what makes resume bit-exact.
#pragma once

#include <array>
#include <cstdint>

namespace holdfast {

using PhiloxCounter = std::array<uint32_t, 4>;
using PhiloxKey = std::array<uint32_t, 2>;

// Philox4x32 with 10 rounds: Random123's (Debian librandom123-dev), whose
// known-answer vectors the tests check.
PhiloxCounter Philox4x32(PhiloxCounter counter, PhiloxKey key);

inline PhiloxKey KeyFromSeed(uint64_t seed) {
  return {static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32)};
}

// Separate uses of the generator draw from disjoint counter spaces: the
// domain goes into counter word 3, so shuffling, initialisation and dropout
// can never see correlated numbers for the same seed.
enum class RandomDomain : uint32_t {
  kShuffle = 0x5348'0000,
  kInit = 0x494E'0000,
  kDropout = 0x4452'0000,
};

// A sequential view of one Philox stream: word i of the stream identified by
// (key, domain, a, b) is lane i%4 of Philox({i/4, a, b, domain}, key).
class PhiloxStream {
 public:
  PhiloxStream(uint64_t seed, RandomDomain domain, uint32_t a, uint32_t b)
      : key_(KeyFromSeed(seed)), domain_(static_cast<uint32_t>(domain)), a_(a), b_(b) {}

  uint32_t NextU32();
  // Uniform in [0, 1) with 24 bits of precision (every value exactly representable).
  float NextUniform() { return static_cast<float>(NextU32() >> 8) * 0x1.0p-24f; }
  // Uniform integer in [0, bound), unbiased (Lemire's multiply-and-reject). bound > 0.
  uint32_t NextBelow(uint32_t bound);

 private:
  PhiloxKey key_;
  uint32_t domain_, a_, b_;
  uint32_t block_ = 0;
  PhiloxCounter buffer_{};
  int lane_ = 4;  // 4 = buffer empty
};

}  // namespace holdfast
