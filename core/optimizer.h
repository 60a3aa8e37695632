// Optimizers over the flat buffers. All state lives in flat slot buffers with
// the parameter layout plus a step count, so a checkpoint stores it as a few
// blobs and data-parallel replicas apply identical updates.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "core/parameter_store.h"

namespace holdfast {

struct OptimizerSlot {
  std::string name;  // "m", "v", "momentum"
  std::span<float> values;
};

class Optimizer {
 public:
  virtual ~Optimizer() = default;
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  // "adam", "sgd".
  virtual std::string name() const = 0;
  // Name and hyper-parameters, e.g. "adam(lr=0.001,beta1=0.9,beta2=0.999,eps=1e-07)".
  virtual std::string Signature() const = 0;
  // Allocates zeroed slots for `size` parameters. Called once.
  virtual void Build(size_t size) = 0;
  // One update of params from grads (same layout); increments iterations().
  virtual void Apply(std::span<float> params, std::span<const float> grads) = 0;
  // The state to checkpoint besides iterations(); spans stay valid for the
  // optimizer's lifetime.
  virtual std::vector<OptimizerSlot> slots() = 0;

  int64_t iterations() const { return iterations_; }
  void set_iterations(int64_t n) { iterations_ = n; }

  // The rate Apply uses: the one the optimizer was built with, until a
  // learning-rate schedule sets another. Not part of Signature(), which
  // names the optimizer as built, so that a checkpoint of a scheduled run
  // still matches it: the schedule is state of its own, tracked with the
  // run (examples/custom_loop.cc) and applied again after a restore.
  float learning_rate() const { return learning_rate_; }
  void set_learning_rate(float learning_rate) { learning_rate_ = learning_rate; }

 protected:
  explicit Optimizer(float learning_rate) : learning_rate_(learning_rate) {}
  int64_t iterations_ = 0;
  float learning_rate_;
};

// v = momentum * v - lr * g; p += v (Keras SGD; momentum 0 is plain SGD).
class SGD final : public Optimizer {
 public:
  explicit SGD(float learning_rate = 0.01f, float momentum = 0.0f)
      : Optimizer(learning_rate), lr_(learning_rate), momentum_(momentum) {}
  std::string name() const override { return "sgd"; }
  std::string Signature() const override;
  void Build(size_t size) override;
  void Apply(std::span<float> params, std::span<const float> grads) override;
  std::vector<OptimizerSlot> slots() override;

 private:
  float lr_, momentum_;  // as built (the signature's)
  size_t size_ = 0;
  FloatBuffer velocity_;  // only with momentum
};

// Adam with Keras' bias correction folded into the step size:
// t = iterations + 1; a = lr * sqrt(1 - b2^t) / (1 - b1^t);
// m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2; p -= a m / (sqrt(v) + eps).
class Adam final : public Optimizer {
 public:
  explicit Adam(float learning_rate = 0.001f, float beta1 = 0.9f, float beta2 = 0.999f,
                float epsilon = 1e-7f)
      : Optimizer(learning_rate),
        lr_(learning_rate),
        beta1_(beta1),
        beta2_(beta2),
        epsilon_(epsilon) {}
  std::string name() const override { return "adam"; }
  std::string Signature() const override;
  void Build(size_t size) override;
  void Apply(std::span<float> params, std::span<const float> grads) override;
  std::vector<OptimizerSlot> slots() override;

 private:
  float lr_, beta1_, beta2_, epsilon_;  // as built (the signature's)
  FloatBuffer m_, v_;
};

}  // namespace holdfast
