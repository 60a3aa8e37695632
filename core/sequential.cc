#include "core/sequential.h"

#include <charconv>
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
  output_grads_.resize(layers_.size() + 1);
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
  output_grads_.back() = doutput;
  // Layers finish in reverse order; adjacent parameter-free layers need no
  // report. The first layer's input gradient is never needed.
  for (size_t i = layers_.size(); i-- > 0;) {
    Layer& layer = *layers_[i];
    layer.Backward(layer_input(i), activations_[i + 1], output_grads_[i + 1],
                   i > 0 ? &output_grads_[i] : nullptr);
    if (ready && layer.param_end() > layer.param_begin()) {
      ready(layer.param_begin(), layer.param_end());
    }
  }
}

const Matrix& Sequential::layer_input(size_t i) const {
  HOLDFAST_CHECK(input_ != nullptr && i < layers_.size(), "no input of layer " << i);
  return i == 0 ? *input_ : activations_[i];
}

const Matrix& Sequential::output_gradient(size_t i) const {
  HOLDFAST_CHECK(i < layers_.size(), "no output gradient of layer " << i);
  return output_grads_[i + 1];
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

std::optional<std::vector<TensorSpec>> TensorsOfSignature(const std::string& signature,
                                                          size_t max_floats, size_t* total_floats) {
  // Layers split at '|' outside a layer's "(config)".
  std::vector<std::string> layers(1);
  int depth = 0;
  for (const char c : signature) {
    if (c == '(') ++depth;
    if (depth == 0 && c == '|') {
      layers.emplace_back();
    } else if (depth == 0) {
      layers.back() += c;
    }
    if (c == ')' && depth > 0) --depth;
  }
  if (layers[0].rfind("in:", 0) != 0) return std::nullopt;
  std::vector<TensorSpec> tensors;
  size_t end = 0;
  for (size_t i = 1; i < layers.size(); ++i) {
    size_t start = 0;
    while (start <= layers[i].size()) {
      size_t semi = layers[i].find(';', start);
      if (semi == std::string::npos) semi = layers[i].size();
      const std::string spec = layers[i].substr(start, semi - start);
      start = semi + 1;
      const size_t colon = spec.rfind(':');
      if (colon == std::string::npos) continue;  // a layer without parameters
      TensorSpec t{spec.substr(0, colon), {}, 0, 1};
      const std::string dims = spec.substr(colon + 1);
      for (size_t p = 0; p <= dims.size();) {
        size_t x = dims.find('x', p);
        if (x == std::string::npos) x = dims.size();
        int64_t d = 0;
        const auto [ptr, ec] = std::from_chars(dims.data() + p, dims.data() + x, d);
        if (ec != std::errc() || ptr != dims.data() + x || d <= 0 || d > (int64_t{1} << 40)) {
          return std::nullopt;
        }
        t.shape.push_back(d);
        t.size *= static_cast<size_t>(d);
        if (t.size > max_floats) return std::nullopt;
        p = x + 1;
      }
      t.offset = ParameterStore::AlignUp(end);
      end = t.offset + t.size;
      if (end > max_floats) return std::nullopt;
      tensors.push_back(std::move(t));
    }
  }
  *total_floats = ParameterStore::AlignUp(end);
  return tensors;
}

}  // namespace holdfast
