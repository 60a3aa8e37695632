// toy_linear: the smallest end-to-end example. A Dense(5) layer learns
// y = 5x + [0, 1, 2, 3, 4] for x = 0..9 (the data set repeated 10 times), with
// mean absolute error, Adam(0.1) and batch 2, printing the loss of every step.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>

#include "core/fit.h"
#include "core/hash.h"
#include "distribute/mirrored_strategy.h"
#include "examples/cli.h"

namespace {

class PrintStepLoss final : public holdfast::Callback {
 public:
  void OnBatchEnd(holdfast::TrainingState& s) override {
    if (s.replica->rank() == 0) {
      std::printf("epoch %d step %lld loss %.6f\n", s.epoch + 1, static_cast<long long>(s.step()),
                  s.last_batch_loss);
    }
  }
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app("toy_linear: Dense(5) learns y = 5x + [0..4] with MAE and Adam(0.1)");
  int epochs = 1, repeat = 10;
  int64_t batch = 2;
  uint64_t seed = 0;
  app.add_option("--epochs", epochs, "Epochs")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--repeat", repeat, "Times the 10 samples are repeated per epoch")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--batch", batch, "Batch size")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--seed", seed, "Initialisation seed")->capture_default_str();
  if (const auto code = holdfast::examples::ParseCommandLine(app, "toy_linear", argc, argv))
    return *code;

  holdfast::AutoStrategy auto_strategy;  // MPI under mpirun, else one process
  holdfast::Dataset data;
  data.x.resize(10 * repeat, 1);
  data.y.resize(10 * repeat, 5);
  for (int i = 0; i < 10 * repeat; ++i) {
    const int x = i % 10;
    data.x(i, 0) = static_cast<float>(x);
    for (int j = 0; j < 5; ++j) data.y(i, j) = static_cast<float>(5 * x + j);
  }
  holdfast::Sequential model(1);
  model.Add<holdfast::Dense>(5);
  model.Build(seed);
  holdfast::Adam adam(0.1f);
  adam.Build(model.store().size());
  holdfast::MeanAbsoluteError mae;
  PrintStepLoss print;
  holdfast::FitOptions options;
  options.epochs = epochs;
  options.batch_size = batch;
  options.shuffle = false;  // the data set in order, as tf.data without shuffle
  options.callbacks = {&print};
  options.replica = &auto_strategy.strategy();
  const holdfast::History history = holdfast::Fit(model, adam, mae, data, options);
  if (auto_strategy.strategy().rank() == 0) {
    std::printf("world size %d, final loss %.6f, weights xxh3-64 %s\n",
                auto_strategy.strategy().world_size(), history.epochs.back().loss,
                holdfast::HexU64(holdfast::Xxh3(model.store().params())).c_str());
  }
  return 0;
}
