#include "core/sequential.h"

#include <sstream>
#include <stdexcept>

#include "core/check.h"

namespace holdfast {

Sequential& Sequential::Add(std::unique_ptr<Layer> layer) {
  HOLDFAST_CHECK(!built_, "Sequential::Add after Build");
  layers_.push_back(std::move(layer));
  return *this;
}

void Sequential::Build(uint64_t seed) {
  HOLDFAST_CHECK(!built_, "Sequential::Build called twice");
  if (input_width_ <= 0) throw std::invalid_argument("model input width must be positive");
  int width = input_width_;
  for (size_t i = 0; i < layers_.size(); ++i) {
    width = layers_[i]->Build(width, static_cast<int>(i), &store_);
  }
  output_width_ = width;
  store_.Finalize();
  for (auto& layer : layers_) layer->Initialize(seed);
  activations_.resize(layers_.size() + 1);
  built_ = true;
}

const Matrix& Sequential::Forward(const Matrix& x, const StepContext& ctx) {
  HOLDFAST_CHECK(built_, "Sequential::Forward before Build");
  HOLDFAST_CHECK(x.cols() == input_width_,
                 "input has " << x.cols() << " columns, model expects " << input_width_);
  input_ = &x;
  for (size_t i = 0; i < layers_.size(); ++i) {
    layers_[i]->Forward(i == 0 ? x : activations_[i], &activations_[i + 1], ctx);
  }
  return activations_.back();
}

void Sequential::Backward(const Matrix& doutput, const GradientsReadyFn& ready) {
  HOLDFAST_CHECK(built_ && input_ != nullptr, "Sequential::Backward before Forward");
  dy_ = doutput;
  // Layers finish in reverse order; adjacent parameter-free layers need no
  // report. The first layer's input gradient is never needed.
  for (size_t i = layers_.size(); i-- > 0;) {
    Layer& layer = *layers_[i];
    layer.Backward(i == 0 ? *input_ : activations_[i], activations_[i + 1], dy_,
                   i > 0 ? &dx_ : nullptr);
    if (ready && layer.param_end() > layer.param_begin()) {
      ready(layer.param_begin(), layer.param_end());
    }
    if (i > 0) std::swap(dy_, dx_);
  }
}

std::string Sequential::Signature() const {
  std::ostringstream out;
  out << "in:" << input_width_;
  for (size_t i = 0; i < layers_.size(); ++i) {
    const std::string name = layers_[i]->kind() + "_" + std::to_string(i);
    std::string tensors;
    for (const TensorSpec& t : store_.tensors()) {
      if (t.name.rfind(name + "/", 0) != 0) continue;
      if (!tensors.empty()) tensors += ';';
      tensors += DescribeTensor(t);
    }
    const std::string config = layers_[i]->config();
    out << '|' << (tensors.empty() ? name : tensors);
    if (!config.empty()) out << '(' << config << ')';
  }
  return out.str();
}

double Sequential::ForwardFlopsPerSample() const {
  double flops = 0;
  for (const TensorSpec& t : store_.tensors()) {
    if (t.shape.size() == 2) flops += 2.0 * static_cast<double>(t.size);
  }
  return flops;
}

}  // namespace holdfast
