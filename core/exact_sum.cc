#include "core/exact_sum.h"

#include <cmath>

namespace holdfast {

double RoundToMetricGrid(double value) {
  return std::nearbyint(std::ldexp(value, kMetricGridBits)) * std::ldexp(1.0, -kMetricGridBits);
}

}  // namespace holdfast
