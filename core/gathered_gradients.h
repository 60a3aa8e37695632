// The parameter gradients of a layout-invariant training step
// (docs/layout-invariance.md, rule 2): gather the rows, not the gradients.
//
// Every replica computes forward and the input gradients of its own rows of
// the global batch; these are per-row products in a fixed order, so a row's
// values do not depend on which replica holds it. Then:
//   1. one all-gather hands every replica every row of each parameter
//      layer's input and output gradient (the model's input it reads from
//      the data itself), with the step's control line;
//   2. each replica computes its share of the gradient buffer (whole rows of
//      tensors, GradientShares) as Layer::ParameterGradients: each element
//      one float FMA chain over the global batch's rows in order;
//   3. a second all-gather hands every replica every share.
// A gradient element is thus the same float chain whatever the world size,
// the threads or the hosts: no grid, no rounding beyond float arithmetic,
// and nothing to agree on first. On one replica there is no collective.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "core/sequential.h"
#include "core/tensor.h"

namespace holdfast {

class Replica;  // core/fit.h

// Cuts [0 = c0 <= c1 <= ... <= c_world = store.size()] of the gradient
// buffer into `world` shares of about equal size, each cut at a row of a
// 2-D tensor (an element of a 1-D one) or in padding, so that a layer
// computes whole rows. Replica r computes [cuts[r], cuts[r+1]).
std::vector<size_t> GradientShares(const ParameterStore& store, int world);

class GatheredGradients {
 public:
  // After model.Backward of a fixed-order training Forward on this
  // replica's rows ReplicaSlice(global_input.rows(), rank, world): fills the
  // store's gradient buffer with the global batch's parameter gradients and
  // `metrics` with every replica's sums (replica.ShareRows). `global_input`
  // holds every row of the global batch's input, in order.
  void Compute(Sequential& model, const Matrix& global_input, Replica& replica,
               std::span<double> metrics);

 private:
  std::vector<std::byte> exchange_;  // rank-major: each rank's line, then its rows
  std::vector<size_t> offsets_, cuts_;
  std::vector<Matrix> inputs_, output_grads_;  // per layer with parameters, every row
};

}  // namespace holdfast
