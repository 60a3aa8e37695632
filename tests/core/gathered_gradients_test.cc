// Layout-invariant parameter gradients from gathered rows: the shares cut
// the buffer at rows, and a dense layer's gradient over any share is the
// scalar chain over the batch's rows, whoever computes which rows.
#include "core/gathered_gradients.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <cstring>
#include <random>
#include <vector>

#include "core/layers.h"
#include "core/sequential.h"

namespace holdfast {
namespace {

Matrix RandomMatrix(int64_t rows, int64_t cols, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  Matrix m(rows, cols);
  for (int64_t i = 0; i < m.size(); ++i) m.data()[i] = dist(gen);
  return m;
}

TEST(GradientSharesTest, CutWholeRowsAndCoverTheBufferInOrder) {
  Sequential model(37);
  model.Add<Dense>(50).Add<ReLU>().Add<Dense>(3).Add<Dense>(700);
  model.Build(1);
  const ParameterStore& store = model.store();
  for (int world : {1, 2, 3, 4, 7, 16, 5000}) {
    SCOPED_TRACE("world " + std::to_string(world));
    const std::vector<size_t> cuts = GradientShares(store, world);
    ASSERT_EQ(cuts.size(), static_cast<size_t>(world) + 1);
    EXPECT_EQ(cuts.front(), 0u);
    EXPECT_EQ(cuts.back(), store.size());
    for (size_t r = 1; r < cuts.size(); ++r) {
      ASSERT_LE(cuts[r - 1], cuts[r]);
      for (const TensorSpec& t : store.tensors()) {
        if (cuts[r] <= t.offset || cuts[r] >= t.offset + t.size) continue;
        const size_t row = t.shape.size() == 2 ? static_cast<size_t>(t.shape[1]) : 1;
        EXPECT_EQ((cuts[r] - t.offset) % row, 0u) << t.name << " cut inside a row";
      }
    }
    // About even where rows allow it: no share beyond its ideal by more than a row of 700.
    if (world <= 7) {
      for (size_t r = 0; r + 1 < cuts.size(); ++r) {
        EXPECT_LE(cuts[r + 1] - cuts[r], store.size() / world + 700);
      }
    }
  }
}

// The kernel gradient is X^T dY with each element the scalar FMA chain over
// the rows in order, the bias the chain of additions; computed share by
// share, over any cut and thread count, the bits are the same.
TEST(DenseParameterGradientsTest, AnyShareAndThreadCountGivesTheScalarChain) {
  constexpr int64_t kIn = 29, kOut = 21, kRows = 13;
  Sequential model(kIn);
  model.Add<Dense>(kOut);
  model.Build(2);
  Layer& dense = *model.layers()[0];
  const Matrix x = RandomMatrix(kRows, kIn, 3), dy = RandomMatrix(kRows, kOut, 4);
  const ParameterStore& store = model.store();
  const TensorSpec& k = store.tensors()[0];
  const TensorSpec& b = store.tensors()[1];
  std::vector<float> expected(store.size(), 0.0f);
  for (int64_t i = 0; i < kIn; ++i) {
    for (int64_t j = 0; j < kOut; ++j) {
      float acc = 0.0f;
      for (int64_t r = 0; r < kRows; ++r) acc = std::fma(x(r, i), dy(r, j), acc);
      expected[k.offset + i * kOut + j] = acc;
    }
  }
  for (int64_t j = 0; j < kOut; ++j) {
    float acc = 0.0f;
    for (int64_t r = 0; r < kRows; ++r) acc = acc + dy(r, j);
    expected[b.offset + j] = acc;
  }
  const int saved = omp_get_max_threads();
  for (int threads : {1, 2, 3}) {
    omp_set_num_threads(threads);
    for (int world : {1, 2, 3, 4, 30}) {
      SCOPED_TRACE("threads " + std::to_string(threads) + ", world " + std::to_string(world));
      std::span<float> grads = model.store().grads();
      std::fill(grads.begin(), grads.end(), -9.0f);
      const std::vector<size_t> cuts = GradientShares(store, world);
      for (int r = world - 1; r >= 0; --r) {  // in reverse: the order plays no part
        const size_t lo = std::max(cuts[r], dense.param_begin());
        const size_t hi = std::min(cuts[r + 1], dense.param_end());
        if (lo < hi) dense.ParameterGradients(x, dy, lo, hi);
      }
      for (const TensorSpec* t : {&k, &b}) {
        EXPECT_EQ(0, std::memcmp(grads.data() + t->offset, expected.data() + t->offset,
                                 t->size * sizeof(float)))
            << t->name;
      }
    }
  }
  omp_set_num_threads(saved);
}

TEST(DenseParameterGradientsTest, ACutInsideAKernelRowIsRefused) {
  Sequential model(4);
  model.Add<Dense>(3);
  model.Build(2);
  const Matrix x = RandomMatrix(2, 4, 5), dy = RandomMatrix(2, 3, 6);
  EXPECT_DEATH(model.layers()[0]->ParameterGradients(x, dy, 1, 3), "cut inside a row");
}

}  // namespace
}  // namespace holdfast
