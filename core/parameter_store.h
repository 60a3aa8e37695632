// ParameterStore: every parameter of a model in one contiguous float buffer,
// every gradient in a second buffer of the same layout.
//
// Layers declare tensors while the model is built and get views into the
// buffers afterwards. All-reduce then runs over contiguous buckets without a
// copy, optimizer state mirrors the same layout, and a checkpoint writes a few
// large blobs instead of many small tensors.
#pragma once

#include <cstddef>
#include <cstdint>
#include <new>
#include <span>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace holdfast {

// Allocates on 64-byte boundaries (a cache line, an AVX-512 vector) whatever
// instruction set Eigen was compiled for.
template <typename T>
struct CacheLineAllocator {
  using value_type = T;
  static constexpr std::align_val_t kAlignment{64};
  CacheLineAllocator() = default;
  template <typename U>
  CacheLineAllocator(const CacheLineAllocator<U>&) {}  // NOLINT: rebinding
  T* allocate(size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), kAlignment)); }
  void deallocate(T* p, size_t) { ::operator delete(p, kAlignment); }
  template <typename U>
  bool operator==(const CacheLineAllocator<U>&) const {
    return true;
  }
};

using FloatBuffer = std::vector<float, CacheLineAllocator<float>>;

struct TensorSpec {
  std::string name;            // "dense_0/kernel"
  std::vector<int64_t> shape;  // {784, 256}
  size_t offset = 0;           // in floats, into the flat buffers
  size_t size = 0;             // product of shape
};

// "dense_0/kernel:784x256".
std::string DescribeTensor(const TensorSpec& t);
// "784x256".
std::string DescribeShape(const std::vector<int64_t>& shape);

class ParameterStore {
 public:
  // Offsets are rounded up to this many floats (64 bytes) so that every
  // tensor starts on a cache line; the padding stays zero in every buffer.
  static constexpr size_t kAlignFloats = 16;
  // `floats` rounded up to kAlignFloats: where the next tensor starts, and
  // (of the last tensor's end) the buffers' size.
  static constexpr size_t AlignUp(size_t floats) {
    return (floats + kAlignFloats - 1) / kAlignFloats * kAlignFloats;
  }
  // The gradient buffer is preceded by one cache line of control floats.
  // A data-parallel strategy fills it with per-step words (metrics, "a rank
  // asks to stop") so they ride in the gradient all-reduce: the line sits
  // before offset 0, the last part of the buffer that backward completes.
  static constexpr size_t kControlFloats = 16;

  ParameterStore() = default;
  ParameterStore(const ParameterStore&) = delete;
  ParameterStore& operator=(const ParameterStore&) = delete;

  // Declares a tensor; returns its index. Only before Finalize().
  size_t Declare(std::string name, std::vector<int64_t> shape);
  // Allocates the zeroed parameter and gradient buffers. Called once.
  void Finalize();
  bool finalized() const { return finalized_; }

  const std::vector<TensorSpec>& tensors() const { return tensors_; }
  size_t size() const { return total_; }  // floats per buffer, padding included

  std::span<float> params() { return {params_.data(), params_.size()}; }
  std::span<const float> params() const { return {params_.data(), params_.size()}; }
  std::span<float> grads() { return {grad_base(), total_}; }
  std::span<const float> grads() const { return {grad_base(), total_}; }
  // The control line followed by grads(): what a strategy all-reduces.
  std::span<float> control_and_grads() { return {grads_.data(), grads_.size()}; }

  float* param(size_t index) { return params_.data() + tensors_[index].offset; }
  float* grad(size_t index) { return grad_base() + tensors_[index].offset; }
  // A 2-D view of tensor `index` (1-D tensors are one row).
  MatrixMap ParamMatrix(size_t index);
  MatrixMap GradMatrix(size_t index);

  // "dense_0/kernel:784x256;dense_0/bias:256;..." — equal for equal layouts.
  std::string Signature() const;

 private:
  std::vector<TensorSpec> tensors_;
  size_t total_ = 0;
  bool finalized_ = false;
  float* grad_base() { return grads_.data() + kControlFloats; }
  const float* grad_base() const { return grads_.data() + kControlFloats; }
  FloatBuffer params_;
  FloatBuffer grads_;  // kControlFloats control floats, then the gradients
};

}  // namespace holdfast
