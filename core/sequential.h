// Sequential: a stack of layers over one ParameterStore.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/layers.h"
#include "core/parameter_store.h"
#include "core/tensor.h"

namespace holdfast {

// Called during Backward each time a contiguous range [begin, end) of the
// gradient buffer holds its final values. Ranges arrive from the end of the
// buffer towards the start (layers finish in reverse order), which lets a
// strategy start all-reducing a bucket while backward goes on.
using GradientsReadyFn = std::function<void(size_t begin, size_t end)>;

class Sequential {
 public:
  explicit Sequential(int input_width) : input_width_(input_width) {}
  Sequential(const Sequential&) = delete;
  Sequential& operator=(const Sequential&) = delete;

  // Appends a layer. Only before Build().
  Sequential& Add(std::unique_ptr<Layer> layer);
  template <typename L, typename... Args>
  Sequential& Add(Args&&... args) {
    return Add(std::make_unique<L>(std::forward<Args>(args)...));
  }

  // Declares every tensor, allocates the flat buffers and initialises the
  // parameters from `seed`. Called once, before anything below.
  void Build(uint64_t seed);

  // Runs the layers; the returned reference is valid until the next Forward.
  // `x` must stay alive and unchanged until the matching Backward.
  const Matrix& Forward(const Matrix& x, const StepContext& ctx);
  // Back-propagates dL/d(output of the last Forward) and fills the gradient
  // buffer; `ready` (may be empty) is told as parts of it become final.
  void Backward(const Matrix& doutput, const GradientsReadyFn& ready = {});
  // After Backward: layer i's input in the last Forward, and dL/d(its output).
  const Matrix& layer_input(size_t i) const;
  const Matrix& output_gradient(size_t i) const;

  ParameterStore& store() { return store_; }
  const ParameterStore& store() const { return store_; }
  int input_width() const { return input_width_; }
  int output_width() const { return output_width_; }
  const std::vector<std::unique_ptr<Layer>>& layers() const { return layers_; }
  // The layer list and every tensor's name and shape, e.g.
  // "in:784|dense_0/kernel:784x256;dense_0/bias:256|relu_1|dropout_2(rate=0.2)|...":
  // each layer as its tensors, or its name if it has none, then its config.
  std::string Signature() const;
  // Floating-point operations of one forward pass for one sample (2 per
  // multiply-add of the dense layers), for throughput reports.
  double ForwardFlopsPerSample() const;

 private:
  int input_width_, output_width_ = 0;
  bool built_ = false;
  std::vector<std::unique_ptr<Layer>> layers_;
  ParameterStore store_;
  const Matrix* input_ = nullptr;     // the last Forward's input
  std::vector<Matrix> activations_;   // [i+1] = output of layer i; [0] unused
  std::vector<Matrix> output_grads_;  // [i+1] = dL/d(output of layer i); [0] unused
};

// The inverse of Sequential::Signature, for tools that read a checkpoint
// without its model: the tensors a signature names, laid out as the model's
// ParameterStore lays them out, and in *total_floats the buffers' size.
// nullopt when the signature does not parse or its tensors would need more
// than `max_floats` floats (it may come from a damaged file).
std::optional<std::vector<TensorSpec>> TensorsOfSignature(const std::string& signature,
                                                          size_t max_floats, size_t* total_floats);

}  // namespace holdfast
