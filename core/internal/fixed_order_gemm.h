// Matrix products whose bits do not depend on threads, tiling, the number of
// rows or the vector width (docs/layout-invariance.md, rule 1).
//
// Every output element is ONE fused multiply-add chain in a fixed order:
//   c[m][n] = fma(a(m,K-1), b(K-1,n), ... fma(a(m,0), b(0,n), 0.0f)) (+ bias[n])
// The kernels tile, pack, vectorise and split the output over OpenMP threads
// freely; a chain cut into K blocks continues from the previous block's
// float, which is the same float. ReferenceGemm is the definition, written
// with std::fma, and the tests compare the fast kernels to it bit for bit.
#pragma once

#include <cstdint>
#include <span>

namespace holdfast::internal {

// A strided read-only matrix: element (i, j) is data[i * row_stride + j * col_stride].
struct StridedMatrix {
  const float* data;
  int64_t row_stride;
  int64_t col_stride;
  float at(int64_t i, int64_t j) const { return data[i * row_stride + j * col_stride]; }
};

// c (m x n, row stride ldc) = a (m x k) . b (k x n) [+ bias (n), may be null],
// each element one FMA chain over k ascending. Threads: OpenMP, any count.
void FixedOrderGemm(int64_t m, int64_t n, int64_t k, StridedMatrix a, StridedMatrix b,
                    const float* bias, float* c, int64_t ldc);
// The definition of FixedOrderGemm's result, one scalar std::fma at a time.
void ReferenceGemm(int64_t m, int64_t n, int64_t k, StridedMatrix a, StridedMatrix b,
                   const float* bias, float* c, int64_t ldc);

}  // namespace holdfast::internal
