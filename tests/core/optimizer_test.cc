#include "core/optimizer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

namespace holdfast {
namespace {

void ExpectRelNear(double actual, double expected, double rel, const std::string& what) {
  EXPECT_NEAR(actual, expected, rel * std::max(std::abs(expected), 1e-3)) << what;
}

const std::vector<std::vector<float>> kGrads = {
    {0.5f, 1.0f, -2.0f, 0.0f, 3e-4f},
    {-0.25f, 0.75f, 1.5f, 0.1f, -2e-4f},
    {0.125f, -1.0f, 0.5f, -0.3f, 1e-4f},
};
const std::vector<float> kInitial = {1.0f, -2.0f, 0.5f, 0.0f, 10.0f};

TEST(SgdTest, PlainSgdMatchesHandComputation) {
  SGD sgd(0.1f);
  EXPECT_EQ(sgd.name(), "sgd");
  sgd.Build(kInitial.size());
  std::vector<float> p = kInitial;
  std::vector<double> expected(kInitial.begin(), kInitial.end());
  for (size_t step = 0; step < kGrads.size(); ++step) {
    sgd.Apply(p, kGrads[step]);
    EXPECT_EQ(sgd.iterations(), static_cast<int64_t>(step + 1));
    for (size_t i = 0; i < p.size(); ++i) {
      expected[i] -= static_cast<double>(0.1f) * kGrads[step][i];
      ExpectRelNear(p[i], expected[i], 1e-6,
                    "step " + std::to_string(step) + " param " + std::to_string(i));
    }
  }
  // Explicit values after the first two steps for the first parameter:
  // 1 - 0.1*0.5 - 0.1*(-0.25) = 0.975.
  SGD again(0.1f);
  again.Build(1);
  std::vector<float> q = {1.0f};
  again.Apply(q, std::vector<float>{0.5f});
  EXPECT_FLOAT_EQ(q[0], 0.95f);
  again.Apply(q, std::vector<float>{-0.25f});
  EXPECT_FLOAT_EQ(q[0], 0.975f);
}

TEST(SgdTest, MomentumMatchesHandComputation) {
  constexpr float kLr = 0.1f, kMomentum = 0.9f;
  SGD sgd(kLr, kMomentum);
  sgd.Build(kInitial.size());
  std::vector<float> p = kInitial;
  std::vector<double> expected(kInitial.begin(), kInitial.end());
  std::vector<double> velocity(kInitial.size(), 0.0);
  for (size_t step = 0; step < kGrads.size(); ++step) {
    sgd.Apply(p, kGrads[step]);
    for (size_t i = 0; i < p.size(); ++i) {
      velocity[i] =
          static_cast<double>(kMomentum) * velocity[i] - static_cast<double>(kLr) * kGrads[step][i];
      expected[i] += velocity[i];
      ExpectRelNear(p[i], expected[i], 1e-6,
                    "step " + std::to_string(step) + " param " + std::to_string(i));
    }
  }
  EXPECT_EQ(sgd.iterations(), 3);
  // Constant gradient 1 from 0: v = -0.1, -0.19, -0.271; p = -0.1, -0.29, -0.561.
  SGD again(kLr, kMomentum);
  again.Build(1);
  std::vector<float> q = {0.0f};
  const std::vector<float> one = {1.0f};
  again.Apply(q, one);
  EXPECT_NEAR(q[0], -0.1f, 1e-6);
  again.Apply(q, one);
  EXPECT_NEAR(q[0], -0.29f, 1e-6);
  again.Apply(q, one);
  EXPECT_NEAR(q[0], -0.561f, 1e-6);
}

TEST(SgdTest, MomentumSlot) {
  SGD sgd(0.1f, 0.9f);
  sgd.Build(7);
  std::vector<OptimizerSlot> slots = sgd.slots();
  ASSERT_EQ(slots.size(), 1u);
  EXPECT_EQ(slots[0].name, "momentum");
  ASSERT_EQ(slots[0].values.size(), 7u);
  for (float v : slots[0].values) EXPECT_EQ(v, 0.0f);
  std::vector<float> p(7, 0.0f), g(7, 2.0f);
  sgd.Apply(p, g);
  // The slot holds the velocity: -lr * g after one step.
  for (float v : sgd.slots()[0].values) EXPECT_FLOAT_EQ(v, -0.2f);
}

TEST(SgdTest, SlotsHaveBuildSize) {
  SGD sgd(0.1f);
  sgd.Build(9);
  for (const OptimizerSlot& slot : sgd.slots()) EXPECT_EQ(slot.values.size(), 9u) << slot.name;
}

// Reference Adam in double from the formula in optimizer.h, with the float
// hyper-parameters widened exactly.
struct ReferenceAdam {
  double lr, b1, b2, eps;
  std::vector<double> m, v;
  int64_t iterations = 0;
  void Apply(std::vector<double>& p, const std::vector<float>& g) {
    const double t = static_cast<double>(iterations + 1);
    const double a = lr * std::sqrt(1 - std::pow(b2, t)) / (1 - std::pow(b1, t));
    for (size_t i = 0; i < p.size(); ++i) {
      m[i] = b1 * m[i] + (1 - b1) * g[i];
      v[i] = b2 * v[i] + (1 - b2) * static_cast<double>(g[i]) * g[i];
      p[i] -= a * m[i] / (std::sqrt(v[i]) + eps);
    }
    ++iterations;
  }
};

TEST(AdamTest, ThreeStepsMatchDoublePrecisionReference) {
  constexpr float kLr = 0.01f, kB1 = 0.9f, kB2 = 0.999f, kEps = 1e-7f;
  Adam adam(kLr, kB1, kB2, kEps);
  EXPECT_EQ(adam.name(), "adam");
  adam.Build(kInitial.size());
  ReferenceAdam ref{kLr,
                    kB1,
                    kB2,
                    kEps,
                    std::vector<double>(kInitial.size(), 0.0),
                    std::vector<double>(kInitial.size(), 0.0)};
  std::vector<float> p = kInitial;
  std::vector<double> expected(kInitial.begin(), kInitial.end());
  for (size_t step = 0; step < kGrads.size(); ++step) {
    adam.Apply(p, kGrads[step]);
    ref.Apply(expected, kGrads[step]);
    EXPECT_EQ(adam.iterations(), ref.iterations);
    std::vector<OptimizerSlot> slots = adam.slots();
    ASSERT_EQ(slots.size(), 2u);
    for (size_t i = 0; i < p.size(); ++i) {
      const std::string what = "step " + std::to_string(step) + " param " + std::to_string(i);
      ExpectRelNear(p[i], expected[i], 1e-6, what);
      EXPECT_NEAR(slots[0].values[i], ref.m[i], 1e-5 * std::abs(ref.m[i]) + 1e-12) << what;
      EXPECT_NEAR(slots[1].values[i], ref.v[i], 1e-5 * std::abs(ref.v[i]) + 1e-15) << what;
    }
  }
  // The update actually moved every parameter with a non-zero gradient.
  EXPECT_NE(p[0], kInitial[0]);
  EXPECT_NE(p[4], kInitial[4]);
}

TEST(AdamTest, FirstStepMovesByLearningRate) {
  // At t = 1, m / sqrt(v) = sign(g), so every parameter moves by ~lr.
  Adam adam(0.001f);
  adam.Build(3);
  std::vector<float> p = {0.0f, 1.0f, -1.0f};
  adam.Apply(p, std::vector<float>{5.0f, -0.01f, 100.0f});
  EXPECT_NEAR(p[0], -0.001, 1e-6);
  EXPECT_NEAR(p[1], 1.001, 1e-6);
  EXPECT_NEAR(p[2], -1.001, 1e-6);
}

TEST(AdamTest, SlotsNamesAndSizes) {
  Adam adam;
  adam.Build(11);
  std::vector<OptimizerSlot> slots = adam.slots();
  ASSERT_EQ(slots.size(), 2u);
  EXPECT_EQ(slots[0].name, "m");
  EXPECT_EQ(slots[1].name, "v");
  for (const OptimizerSlot& slot : slots) {
    ASSERT_EQ(slot.values.size(), 11u) << slot.name;
    for (float x : slot.values) EXPECT_EQ(x, 0.0f) << slot.name;
  }
  EXPECT_NE(slots[0].values.data(), slots[1].values.data());
}

TEST(AdamTest, RestoringSlotsAndIterationsContinuesBitExactly) {
  const std::vector<float> g3 = kGrads[2];
  Adam a(0.01f);
  a.Build(kInitial.size());
  std::vector<float> pa = kInitial;
  a.Apply(pa, kGrads[0]);
  a.Apply(pa, kGrads[1]);

  // What a checkpoint holds: params, iterations and the slots.
  Adam b(0.01f);
  b.Build(kInitial.size());
  std::vector<float> pb = pa;
  b.set_iterations(a.iterations());
  std::vector<OptimizerSlot> from = a.slots(), to = b.slots();
  ASSERT_EQ(from.size(), to.size());
  for (size_t s = 0; s < from.size(); ++s) {
    ASSERT_EQ(from[s].values.size(), to[s].values.size());
    std::memcpy(to[s].values.data(), from[s].values.data(), from[s].values.size_bytes());
  }
  a.Apply(pa, g3);
  b.Apply(pb, g3);
  EXPECT_EQ(b.iterations(), 3);
  EXPECT_EQ(0, std::memcmp(pa.data(), pb.data(), pa.size() * sizeof(float)));

  // Without the slots (a fresh optimizer at iteration 2) the result differs.
  Adam c(0.01f);
  c.Build(kInitial.size());
  c.set_iterations(2);
  Adam d(0.01f);
  d.Build(kInitial.size());
  std::vector<float> pd = kInitial;
  d.Apply(pd, kGrads[0]);
  d.Apply(pd, kGrads[1]);
  std::vector<float> pc = pd;
  c.Apply(pc, g3);
  d.Apply(pd, g3);
  EXPECT_NE(0, std::memcmp(pc.data(), pd.data(), pc.size() * sizeof(float)));
}

TEST(AdamTest, IterationsCountAndCanBeSet) {
  Adam adam;
  adam.Build(2);
  EXPECT_EQ(adam.iterations(), 0);
  std::vector<float> p = {1, 2}, g = {0.1f, 0.2f};
  adam.Apply(p, g);
  adam.Apply(p, g);
  EXPECT_EQ(adam.iterations(), 2);
  adam.set_iterations(41);
  adam.Apply(p, g);
  EXPECT_EQ(adam.iterations(), 42);
}

TEST(OptimizerSignatureTest, DocumentedAdamFormat) {
  EXPECT_EQ(Adam().Signature(), "adam(lr=0.001,beta1=0.9,beta2=0.999,eps=1e-07)");
}

TEST(OptimizerSignatureTest, DiffersWhenAHyperParameterDiffers) {
  const std::string base = Adam(0.001f, 0.9f, 0.999f, 1e-7f).Signature();
  EXPECT_EQ(base, Adam(0.001f, 0.9f, 0.999f, 1e-7f).Signature());
  EXPECT_NE(base, Adam(0.002f, 0.9f, 0.999f, 1e-7f).Signature());
  EXPECT_NE(base, Adam(0.001f, 0.8f, 0.999f, 1e-7f).Signature());
  EXPECT_NE(base, Adam(0.001f, 0.9f, 0.99f, 1e-7f).Signature());
  EXPECT_NE(base, Adam(0.001f, 0.9f, 0.999f, 1e-8f).Signature());
  const std::string sgd = SGD(0.01f, 0.0f).Signature();
  EXPECT_EQ(sgd, SGD(0.01f, 0.0f).Signature());
  EXPECT_NE(sgd, SGD(0.02f, 0.0f).Signature());
  EXPECT_NE(sgd, SGD(0.01f, 0.9f).Signature());
  EXPECT_NE(sgd, base);
  EXPECT_EQ(sgd.rfind("sgd", 0), 0u) << sgd;
  EXPECT_EQ(base.rfind("adam", 0), 0u) << base;
}

}  // namespace
}  // namespace holdfast
