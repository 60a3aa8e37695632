// The median every bench program reports: of the values given, the middle
// one, or the mean of the middle two for an even count; NaN for none.
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

namespace holdfast::bench {

inline double Median(std::vector<double> v) {
  if (v.empty()) return NAN;
  std::sort(v.begin(), v.end());
  const size_t mid = v.size() / 2;
  return v.size() % 2 ? v[mid] : (v[mid - 1] + v[mid]) / 2;
}

}  // namespace holdfast::bench
