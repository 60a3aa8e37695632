// Small synthetic data sets and models for tests of the training loop and
// of the data-parallel strategies built on it.
#pragma once

#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "core/dataset.h"
#include "core/hash.h"
#include "core/layers.h"
#include "core/optimizer.h"
#include "core/sequential.h"
#include "tests/testutil/testutil.h"

namespace holdfast {

// Three Gaussian-ish blobs in the plane, labelled 0..2 (sample i has label i % 3).
inline Dataset MakeBlobs(int n, uint32_t seed) {
  const float centers[3][2] = {{0.0f, 2.0f}, {-2.0f, -1.0f}, {2.0f, -1.0f}};
  TestRng rng(seed);
  Dataset ds;
  ds.x.resize(n, 2);
  ds.y.resize(n, 1);
  for (int i = 0; i < n; ++i) {
    const int label = i % 3;
    ds.x(i, 0) = centers[label][0] + static_cast<float>(rng.Uniform(-1.2, 1.2));
    ds.x(i, 1) = centers[label][1] + static_cast<float>(rng.Uniform(-1.2, 1.2));
    ds.y(i, 0) = static_cast<float>(label);
  }
  return ds;
}

// A model and its optimizer, built for each other.
struct Trainee {
  std::unique_ptr<Sequential> model;
  std::unique_ptr<Optimizer> optimizer;
  uint64_t Hash() const { return Xxh3(std::as_const(*model).store().params()); }
  std::vector<float> Params() const {
    auto p = std::as_const(*model).store().params();
    return std::vector<float>(p.begin(), p.end());
  }
};

// 2 -> Dense(hidden) -> ReLU [-> Dropout(0.25)] -> Dense(3), initialised from
// `seed`, with Adam (default lr 0.01) or SGD with momentum 0.9 (default lr
// 0.1); lr > 0 overrides the default.
inline Trainee MakeClassifier(uint64_t seed, bool dropout = false, bool adam = true,
                              int hidden = 16, float lr = 0) {
  Trainee t;
  t.model = std::make_unique<Sequential>(2);
  t.model->Add<Dense>(hidden).Add<ReLU>();
  if (dropout) t.model->Add<Dropout>(0.25f);
  t.model->Add<Dense>(3);
  t.model->Build(seed);
  if (adam) {
    t.optimizer = std::make_unique<Adam>(lr > 0 ? lr : 0.01f);
  } else {
    t.optimizer = std::make_unique<SGD>(lr > 0 ? lr : 0.1f, 0.9f);
  }
  t.optimizer->Build(t.model->store().size());
  return t;
}

}  // namespace holdfast
