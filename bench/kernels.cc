// bench/kernels: the layout-invariant kernels against OpenBLAS on one dense
// layer's three products, in the same run.
//
//   build/bench/kernels [--threads 1] [--rounds 7] [--json FILE]
//
// For each layer shape (rows x in x out): the forward X.W (+ bias), the input
// gradient dY.W^T and the weight gradient X^T.dY, each as OpenBLAS's sgemm
// (the `--layout-invariant off` path) and as holdfast's fixed-order kernel
// (core/internal/fixed_order_gemm.h), which the invariant mode uses for all
// three (the weight gradient over the global batch's gathered rows,
// core/gathered_gradients.h). GFLOP/s are medians over interleaved rounds
// whose order rotates; the ratio is the median of the rounds' own ratios, so
// a drift of the host's speed between rounds cancels in it. Prints a table
// and JSON.
#include <cblas.h>
#include <omp.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "bench/median.h"
#include "core/internal/fixed_order_gemm.h"
#include "examples/cli.h"

namespace {

using holdfast::bench::Median;

using Clock = std::chrono::steady_clock;
// Seconds per call of each fn in each round: each round times every fn
// (calls repeated to fill ~20 ms), starting at a rotating position.
std::vector<std::vector<double>> RoundSeconds(const std::vector<std::function<void()>>& fns,
                                              int rounds) {
  std::vector<std::vector<double>> times(fns.size());
  for (auto& fn : fns) fn();  // warm-up: buffers, pages, caches
  for (int round = 0; round < rounds; ++round) {
    for (size_t k = 0; k < fns.size(); ++k) {
      const size_t i = (k + static_cast<size_t>(round)) % fns.size();
      int calls = 0;
      const auto t0 = Clock::now();
      double t = 0;
      do {
        fns[i]();
        ++calls;
        t = std::chrono::duration<double>(Clock::now() - t0).count();
      } while (t < 0.02);
      times[i].push_back(t / calls);
    }
  }
  return times;
}

// The median over rounds of a / b, each pair timed in the same round: a
// drift of the host's speed between rounds cancels in the ratio.
double MedianRatio(const std::vector<double>& a, const std::vector<double>& b) {
  std::vector<double> r;
  for (size_t i = 0; i < a.size(); ++i) r.push_back(a[i] / b[i]);
  return Median(r);
}

struct Layer {
  std::string name;
  int64_t rows, in, out;
};

std::vector<float> Random(size_t n, uint32_t seed, float scale, bool relu) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = relu ? std::max(0.0f, dist(gen)) : dist(gen);
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"holdfast's fixed-order kernels against OpenBLAS on one dense layer"};
  int threads = 1, rounds = 7;
  std::string json_path;
  app.add_option("--threads", threads, "threads for both (OpenMP and OpenBLAS)")
      ->check(CLI::PositiveNumber);
  app.add_option("--rounds", rounds, "interleaved rounds; each figure is their median")
      ->check(CLI::Range(3, 1000));
  app.add_option("--json", json_path, "also write the results as JSON to this file");
  if (const auto code = holdfast::examples::ParseCommandLine(app, "kernels", argc, argv))
    return *code;
  omp_set_num_threads(threads);
  openblas_set_num_threads(threads);

  std::vector<Layer> layers = {{"small model, layer 1 (batch 50)", 50, 784, 256},
                               {"big model, hidden layer (batch 256)", 256, 2048, 2048}};

  nlohmann::json results = nlohmann::json::array();
  std::printf("bench/kernels, %d thread(s): GFLOP/s, median of %d interleaved rounds\n", threads,
              rounds);
  std::printf("%-36s | %-17s | %8s | %8s | %8s | %s\n", "layer", "rows x in x out", "product",
              "OpenBLAS", "holdfast", "holdfast / OpenBLAS");
  for (const Layer& l : layers) {
    const std::vector<float> x = Random(l.rows * l.in, 1, 1.0f, true),
                             w = Random(l.in * l.out, 2, 0.05f, false),
                             dy = Random(l.rows * l.out, 3, 1e-3f, false),
                             bias = Random(l.out, 4, 0.1f, false);
    std::vector<float> y(l.rows * l.out), dx(l.rows * l.in), dw(l.in * l.out);
    using holdfast::internal::FixedOrderGemm;
    const int64_t rows = l.rows, in = l.in, out = l.out;
    std::vector<std::function<void()>> fns = {
        [&] {  // dW = X^T dY
          cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, in, out, rows, 1.0f, x.data(), in,
                      dy.data(), out, 0.0f, dw.data(), out);
        },
        [&] {  // X read down its columns, as ParameterGradients does
          FixedOrderGemm(in, out, rows, {x.data(), 1, in}, {dy.data(), out, 1}, nullptr, dw.data(),
                         out);
        },
        [&] {  // y = X W + b: sgemm onto the broadcast bias, as Eigen does
          for (int64_t r = 0; r < rows; ++r)
            std::copy(bias.begin(), bias.end(), y.data() + r * out);
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, out, in, 1.0f, x.data(), in,
                      w.data(), out, 1.0f, y.data(), out);
        },
        [&] {
          FixedOrderGemm(rows, out, in, {x.data(), in, 1}, {w.data(), out, 1}, bias.data(),
                         y.data(), out);
        },
        [&] {  // dX = dY W^T
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, in, out, 1.0f, dy.data(), out,
                      w.data(), out, 0.0f, dx.data(), in);
        },
        [&] {
          FixedOrderGemm(rows, in, out, {dy.data(), out, 1}, {w.data(), 1, out}, nullptr, dx.data(),
                         in);
        }};
    const std::vector<std::vector<double>> s = RoundSeconds(fns, rounds);
    const double gflop = 2.0 * static_cast<double>(rows * in * out) / 1e9;
    const std::string shape =
        std::to_string(rows) + " x " + std::to_string(in) + " x " + std::to_string(out);
    auto report = [&](const std::string& product, const std::vector<double>& blas,
                      const std::vector<double>& holdfast) {
      const double blas_s = Median(blas), holdfast_s = Median(holdfast);
      const double ratio = MedianRatio(blas, holdfast);
      std::printf("%-36s | %-17s | %8s | %8.1f | %8.1f | %.2f\n", l.name.c_str(), shape.c_str(),
                  product.c_str(), gflop / blas_s, gflop / holdfast_s, ratio);
      results.push_back({{"layer", l.name},
                         {"rows", rows},
                         {"in", in},
                         {"out", out},
                         {"product", product},
                         {"threads", threads},
                         {"openblas_gflops", gflop / blas_s},
                         {"holdfast_gflops", gflop / holdfast_s},
                         {"ratio", ratio}});
    };
    report("X.W+b", s[2], s[3]);
    report("dY.W^T", s[4], s[5]);
    report("X^T.dY", s[0], s[1]);
  }
  if (!json_path.empty()) {
    holdfast::examples::WriteJsonFile(json_path, results);
  }
  return 0;
}
