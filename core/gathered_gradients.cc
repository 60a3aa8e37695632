#include "core/gathered_gradients.h"

#include <algorithm>
#include <cstring>

#include "core/check.h"
#include "core/data_order.h"
#include "core/fit.h"

namespace holdfast {

std::vector<size_t> GradientShares(const ParameterStore& store, int world) {
  HOLDFAST_CHECK(world >= 1, "gradient shares for " << world << " replicas");
  const size_t total = store.size();
  std::vector<size_t> cuts(1, 0);
  for (int r = 1; r < world; ++r) {
    size_t cut = total * static_cast<size_t>(r) / static_cast<size_t>(world);
    for (const TensorSpec& t : store.tensors()) {
      if (cut <= t.offset || cut >= t.offset + t.size) continue;
      size_t row = 1;  // floats per row: everything after the first dimension
      for (size_t d = 1; d < t.shape.size(); ++d) row *= static_cast<size_t>(t.shape[d]);
      cut = t.offset + (cut - t.offset + row / 2) / row * row;
      break;
    }
    cuts.push_back(std::max(cut, cuts.back()));
  }
  cuts.push_back(total);
  return cuts;
}

void GatheredGradients::Compute(Sequential& model, const Matrix& global_input, Replica& replica,
                                std::span<double> metrics) {
  const int world = replica.world_size(), rank = replica.rank();
  const int64_t batch = global_input.rows();
  std::vector<size_t> layers;  // those with parameters
  for (size_t l = 0; l < model.layers().size(); ++l) {
    if (model.layers()[l]->param_end() > model.layers()[l]->param_begin()) layers.push_back(l);
  }
  // A tensor outside every layer's reported range would keep a stale gradient.
  for (const TensorSpec& t : model.store().tensors()) {
    const bool covered = std::any_of(layers.begin(), layers.end(), [&](size_t l) {
      const Layer& layer = *model.layers()[l];
      return layer.param_begin() <= t.offset && t.offset + t.size <= layer.param_end();
    });
    HOLDFAST_CHECK(covered, "no layout-invariant gradient is formed for "
                                << t.name
                                << ": its layer does not report its parameters (param_begin, "
                                   "param_end); train it with --layout-invariant off");
  }
  // What travels, in this order in every replica's part: each parameter
  // layer's input (but the model's, which every replica reads from the data)
  // and output gradient; `whole` receives every replica's rows of `local`.
  inputs_.resize(layers.size());
  output_grads_.resize(layers.size());
  struct Traveling {
    const Matrix* local;
    Matrix* whole;
  };
  std::vector<Traveling> traveling;
  for (size_t k = 0; k < layers.size(); ++k) {
    if (layers[k] > 0) traveling.push_back({&model.layer_input(layers[k]), &inputs_[k]});
    traveling.push_back({&model.output_gradient(layers[k]), &output_grads_[k]});
  }
  int64_t row_floats = 0;
  for (const Traveling& t : traveling) row_floats += t.local->cols();
  // Each replica's part: its step line, then (on several) its rows.
  offsets_.assign(1, 0);
  for (int r = 0; r < world; ++r) {
    const int64_t rows = world > 1 ? ReplicaSlice(batch, r, world).size() : 0;
    offsets_.push_back(offsets_.back() + Replica::kStepLineBytes +
                       static_cast<size_t>(rows * row_floats) * sizeof(float));
  }
  exchange_.resize(offsets_.back());
  if (world > 1) {
    const int64_t own = ReplicaSlice(batch, rank, world).size();
    std::byte* at = exchange_.data() + offsets_[rank] + Replica::kStepLineBytes;
    for (const Traveling& t : traveling) {
      HOLDFAST_CHECK(t.local->rows() == own, "a traveling matrix has "
                                                 << t.local->rows()
                                                 << " rows; this replica's share of the batch is "
                                                 << own);
      const size_t bytes = sizeof(float) * static_cast<size_t>(t.local->size());
      if (bytes > 0) std::memcpy(at, t.local->data(), bytes);
      at += bytes;
    }
  }
  replica.ShareRows(exchange_, offsets_, metrics);

  // Every row of every traveling matrix, in global order: replica r's rows
  // follow replica r-1's, as ReplicaSlice deals them.
  if (world > 1) {
    for (const Traveling& t : traveling) t.whole->resize(batch, t.local->cols());
    for (int r = 0; r < world; ++r) {
      const Range rows = ReplicaSlice(batch, r, world);
      const std::byte* from = exchange_.data() + offsets_[r] + Replica::kStepLineBytes;
      for (const Traveling& t : traveling) {
        const size_t bytes = sizeof(float) * static_cast<size_t>(rows.size() * t.whole->cols());
        if (bytes > 0) std::memcpy(t.whole->data() + rows.begin * t.whole->cols(), from, bytes);
        from += bytes;
      }
    }
  }

  cuts_ = GradientShares(model.store(), world);
  for (size_t k = 0; k < layers.size(); ++k) {
    const size_t l = layers[k];
    Layer& layer = *model.layers()[l];
    const size_t lo = std::max(cuts_[rank], layer.param_begin());
    const size_t hi = std::min(cuts_[rank + 1], layer.param_end());
    if (lo >= hi) continue;
    const Matrix& x = l == 0 ? global_input : world > 1 ? inputs_[k] : model.layer_input(l);
    const Matrix& dy = world > 1 ? output_grads_[k] : model.output_gradient(l);
    layer.ParameterGradients(x, dy, lo, hi);
  }
  replica.ShareGradients(model.store().grads(), cuts_);
}

}  // namespace holdfast
