// Layers of a Sequential model. A layer declares its parameters in the
// model's ParameterStore at build time and reads them through views; it never
// owns parameter memory.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "core/parameter_store.h"
#include "core/tensor.h"

namespace holdfast {

// What a forward pass needs to know about the step it belongs to.
struct StepContext {
  bool training = false;
  uint64_t seed = 0;  // the run's seed
  int64_t step = 0;   // global optimizer step being computed
  // Global row index, within the global batch, of this replica's first row.
  // Dropout masks are keyed by global rows, so they do not depend on how the
  // batch is split across ranks.
  int64_t first_row = 0;
  // Layout-invariant mode (docs/layout-invariance.md): products as
  // fixed-order FMA chains (core/internal/fixed_order_gemm.h), whose bits do
  // not depend on threads or on the rows around a row. In training, Backward
  // then computes the input gradient only; the parameter gradients come from
  // ParameterGradients over the whole global batch's rows.
  bool fixed_order = false;
};

class Layer {
 public:
  virtual ~Layer() = default;

  // "dense", "relu", "dropout".
  virtual std::string kind() const = 0;
  // Settings that change what the layer computes but are not tensor shapes,
  // e.g. "rate=0.2"; part of the model signature ranks and checkpoints compare.
  virtual std::string config() const { return ""; }
  // Declares this layer's tensors (named "<kind>_<index>/...") and returns the
  // output width for an input of `input_width` columns.
  virtual int Build(int input_width, int index, ParameterStore* store) = 0;
  // Writes initial parameter values, a pure function of (seed, index).
  virtual void Initialize(uint64_t /*seed*/) {}
  // y = f(x). `x` stays alive and unchanged until Backward.
  virtual void Forward(const Matrix& x, Matrix* y, const StepContext& ctx) = 0;
  // Given dL/dy, writes dL/d(parameters) into the store's gradient buffer
  // (overwriting) and dL/dx into *dx unless dx is null (the first layer).
  // After a fixed-order Forward: dL/dx only (ParameterGradients follows).
  virtual void Backward(const Matrix& x, const Matrix& y, const Matrix& dy, Matrix* dx) = 0;
  // Layout-invariant training (docs/layout-invariance.md): the elements
  // [begin, end) of this layer's part of the gradient buffer (whole rows of
  // its tensors, cut by GradientShares), from x and dy of EVERY row of the
  // global batch in order, each element one fixed-order chain over the rows:
  // so its bits do not depend on which replica or thread computes it. A
  // layer with parameters must override it.
  virtual void ParameterGradients(const Matrix& x, const Matrix& dy, size_t begin, size_t end);
  // Part of the flat buffers this layer's tensors occupy (empty if none).
  virtual size_t param_begin() const { return 0; }
  virtual size_t param_end() const { return 0; }
};

// y = x W + b; W is (in x out), Glorot-uniform initialised, b zero (Keras).
class Dense final : public Layer {
 public:
  explicit Dense(int units) : units_(units) {}
  std::string kind() const override { return "dense"; }
  int Build(int input_width, int index, ParameterStore* store) override;
  void Initialize(uint64_t seed) override;
  void Forward(const Matrix& x, Matrix* y, const StepContext& ctx) override;
  void Backward(const Matrix& x, const Matrix& y, const Matrix& dy, Matrix* dx) override;
  void ParameterGradients(const Matrix& x, const Matrix& dy, size_t begin, size_t end) override;
  size_t param_begin() const override;
  size_t param_end() const override;

 private:
  int units_, inputs_ = 0, index_ = 0;
  ParameterStore* store_ = nullptr;
  size_t kernel_ = 0, bias_ = 0;
  bool fixed_order_ = false;  // of the last Forward
};

class ReLU final : public Layer {
 public:
  std::string kind() const override { return "relu"; }
  int Build(int input_width, int, ParameterStore*) override { return input_width; }
  void Forward(const Matrix& x, Matrix* y, const StepContext& ctx) override;
  void Backward(const Matrix& x, const Matrix& y, const Matrix& dy, Matrix* dx) override;
};

// Inverted dropout: in training, zeroes each element with probability `rate`
// and scales the rest by 1/(1-rate); identity otherwise. The mask of element
// (row r, column c) is a pure function of (seed, step, layer, r + first_row, c).
class Dropout final : public Layer {
 public:
  explicit Dropout(float rate);
  std::string kind() const override { return "dropout"; }
  std::string config() const override;
  int Build(int input_width, int index, ParameterStore*) override;
  void Forward(const Matrix& x, Matrix* y, const StepContext& ctx) override;
  void Backward(const Matrix& x, const Matrix& y, const Matrix& dy, Matrix* dx) override;
  float rate() const { return rate_; }

 private:
  float rate_;
  int index_ = 0, width_ = 0;
  Matrix mask_;  // the scale applied to each element in the last training forward
  bool mask_active_ = false;
};

}  // namespace holdfast
