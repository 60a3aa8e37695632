#include "core/parameter_store.h"

#include <sstream>

#include "core/check.h"

namespace holdfast {

size_t ParameterStore::Declare(std::string name, std::vector<int64_t> shape) {
  HOLDFAST_CHECK(!finalized_, "Declare after Finalize: " << name);
  size_t size = 1;
  for (int64_t d : shape) {
    HOLDFAST_CHECK(d > 0, "tensor " << name << " has a non-positive dimension");
    size *= static_cast<size_t>(d);
  }
  const size_t offset = AlignUp(total_);
  tensors_.push_back({std::move(name), std::move(shape), offset, size});
  total_ = offset + size;
  return tensors_.size() - 1;
}

void ParameterStore::Finalize() {
  HOLDFAST_CHECK(!finalized_, "Finalize called twice");
  total_ = AlignUp(total_);
  params_.assign(total_, 0.0f);
  grads_.assign(kControlFloats + total_, 0.0f);
  finalized_ = true;
}

MatrixMap ParameterStore::ParamMatrix(size_t index) {
  const TensorSpec& t = tensors_[index];
  const int64_t rows = t.shape.size() == 2 ? t.shape[0] : 1;
  return MatrixMap(params_.data() + t.offset, rows, static_cast<int64_t>(t.size) / rows);
}

MatrixMap ParameterStore::GradMatrix(size_t index) {
  const TensorSpec& t = tensors_[index];
  const int64_t rows = t.shape.size() == 2 ? t.shape[0] : 1;
  return MatrixMap(grad_base() + t.offset, rows, static_cast<int64_t>(t.size) / rows);
}

std::string DescribeShape(const std::vector<int64_t>& shape) {
  std::ostringstream out;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (d > 0) out << 'x';
    out << shape[d];
  }
  return out.str();
}

std::string DescribeTensor(const TensorSpec& t) { return t.name + ':' + DescribeShape(t.shape); }

std::string ParameterStore::Signature() const {
  std::string out;
  for (size_t i = 0; i < tensors_.size(); ++i) {
    if (i > 0) out += ';';
    out += DescribeTensor(tensors_[i]);
  }
  return out;
}

}  // namespace holdfast
