#include "core/exact_sum.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/check.h"

namespace holdfast {

int64_t BoundExponent(double bound) {
  if (!std::isfinite(bound)) return kNonFiniteExponent;
  if (bound <= 0) return kZeroExponent;
  int e = 0;
  std::frexp(bound, &e);  // bound = f * 2^e with f in [0.5, 1): bound < 2^e
  return e;
}

int GridScale(int64_t bound_exponent) {
  // |sum| <= 2^e, so |sum| * 2^(50-e) <= 2^50, and so is every partial sum
  // (the M/2 grid units rounding adds are far below): 8x under 2^53, where
  // doubles stop being exact integers, a margin for the float rounding of
  // the micro-shard partials themselves.
  const int64_t s = 50 - bound_exponent;
  return static_cast<int>(std::clamp<int64_t>(s, -126, 127));
}

void GridToFloat(std::span<const double> grid, int64_t bound_exponent, std::span<float> out) {
  HOLDFAST_CHECK(grid.size() == out.size(), "grid and output sizes differ");
  if (bound_exponent == kNonFiniteExponent) {
    std::fill(out.begin(), out.end(), std::numeric_limits<float>::quiet_NaN());
    return;
  }
  // A product by a power of two is exact in double; the cast is the one rounding.
  const double unscale = std::ldexp(1.0, -GridScale(bound_exponent));
  const double* in = grid.data();
  float* to = out.data();
  const size_t n = grid.size();
#pragma omp simd
  for (size_t i = 0; i < n; ++i) to[i] = static_cast<float>(in[i] * unscale);
}

double RoundToMetricGrid(double value) {
  return std::nearbyint(std::ldexp(value, kMetricGridBits)) * std::ldexp(1.0, -kMetricGridBits);
}

}  // namespace holdfast
