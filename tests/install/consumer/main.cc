// Trains a tiny regression with the installed holdfast, checks the loss fell,
// and saves and restores a checkpoint: every installed library links.
#include <cstdio>
#include <cstdlib>
#include <string>

#include "checkpoint/manager.h"
#include "core/fit.h"
#include "core/version.h"
#include "distribute/mirrored_strategy.h"

int main() {
  holdfast::Dataset data;
  data.x.resize(64, 2);
  data.y.resize(64, 1);
  for (int i = 0; i < 64; ++i) {
    data.x(i, 0) = static_cast<float>(i % 8) / 8;
    data.x(i, 1) = static_cast<float>(i / 8) / 8;
    data.y(i, 0) = 3 * data.x(i, 0) - 2 * data.x(i, 1) + 1;
  }
  holdfast::Sequential model(2);
  model.Add<holdfast::Dense>(8).Add<holdfast::ReLU>().Add<holdfast::Dense>(1);
  model.Build(1);
  holdfast::Adam adam(0.01f);
  adam.Build(model.store().size());
  holdfast::MeanSquaredError mse;
  holdfast::AutoStrategy strategy;
  holdfast::FitOptions options;
  options.epochs = 40;
  options.batch_size = 8;
  options.replica = &strategy.strategy();
  const holdfast::History h = holdfast::Fit(model, adam, mse, data, options);
  const double first = h.epochs.front().loss, last = h.epochs.back().loss;
  std::printf("holdfast %s consumer: loss %.4f -> %.4f\n", HOLDFAST_VERSION, first, last);

  char dir[] = "/tmp/holdfast-consumer-XXXXXX";
  if (mkdtemp(dir) == nullptr) return 1;
  holdfast::Checkpoint checkpoint(&model, &adam);
  holdfast::CheckpointManager manager(&checkpoint, &strategy.communicator(), {.directory = dir});
  const holdfast::Status saved = manager.Save();
  auto restored = manager.RestoreLatest();
  const bool checkpoint_ok = saved.ok() && restored.ok() && restored->has_value() &&
                             **restored == adam.iterations() && manager.DeleteAll().ok();
  std::printf("checkpoint save/restore: %s\n", checkpoint_ok ? "ok" : "FAILED");
  std::system((std::string("rm -rf ") + dir).c_str());
  return last < first / 4 && checkpoint_ok ? 0 : 1;
}
