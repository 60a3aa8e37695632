// The .npy encoding of `holdfast ckpt get`, byte for byte against NumPy's
// format 1.0 (the header a numpy.save of the same array writes).
#include "launcher/variables.h"

#include <gtest/gtest.h>

#include <cstring>

#include "core/layers.h"
#include "core/sequential.h"

namespace holdfast::launcher {
namespace {

std::string Header(const std::string& npy) {
  const size_t length = static_cast<unsigned char>(npy[8]) | static_cast<unsigned char>(npy[9])
                                                                 << 8;
  return npy.substr(10, length);
}

TEST(NpyBytesTest, HeadersAsNumpyWritesThem) {
  Variable matrix{"m", "float32", {2, 3}, std::vector<unsigned char>(24, 0)};
  const std::string npy = NpyBytes(matrix);
  EXPECT_EQ(npy.substr(0, 8), std::string("\x93NUMPY\x01\x00", 8));
  // numpy.save(numpy.zeros((2, 3), numpy.float32)) writes this header: 58
  // spaces and a newline pad magic, version, length and header to 128 bytes.
  EXPECT_EQ(Header(npy), "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }" +
                             std::string(58, ' ') + "\n");
  EXPECT_EQ((10 + Header(npy).size()) % 64, 0u);
  EXPECT_EQ(npy.size(), 10 + Header(npy).size() + 24);

  Variable vector{"v", "float32", {5}, std::vector<unsigned char>(20, 0)};
  EXPECT_NE(Header(NpyBytes(vector)).find("'shape': (5,), }"), std::string::npos);
  Variable scalar{"s", "int64", {}, std::vector<unsigned char>(8, 0)};
  EXPECT_NE(
      Header(NpyBytes(scalar)).find("{'descr': '<i8', 'fortran_order': False, 'shape': (), }"),
      std::string::npos);
  Variable d{"d", "float64", {}, std::vector<unsigned char>(8, 0)};
  EXPECT_NE(Header(NpyBytes(d)).find("'<f8'"), std::string::npos);
}

TEST(NpyBytesTest, TheDataFollowsTheHeaderUnchanged) {
  const float values[3] = {1.5f, -0.0f, 3.25f};
  Variable v{"v", "float32", {3}, std::vector<unsigned char>(12)};
  std::memcpy(v.bytes.data(), values, 12);
  const std::string npy = NpyBytes(v);
  EXPECT_EQ(std::memcmp(npy.data() + npy.size() - 12, values, 12), 0);
  EXPECT_EQ(FormatVariable(v), "1.5 -0 3.25\n");
}

// A checkpoint's contents by hand: a 2-4-3 model's params (i as values), a
// tracked "ema" of the same size, and a tracked array under its path.
CheckpointContents Contents() {
  Sequential model(2);
  model.Add<Dense>(4).Add<Dense>(3);
  model.Build(1);
  CheckpointContents c;
  c.name = "ckpt-7";
  c.model_signature = model.Signature();
  const size_t n = model.store().params().size();
  std::vector<float> params(n), ema(n, 0.5f);
  for (size_t i = 0; i < n; ++i) params[i] = static_cast<float>(i);
  c.blob_floats = {{"params", n}, {"ema", n}, {"ema/dense_0/kernel", 3}};
  c.blobs = {{"params", params}, {"ema", ema}, {"ema/dense_0/kernel", {7, 8, 9}}};
  c.counters = {{"epoch", 2}};
  return c;
}

TEST(FindVariableTest, TensorsOfEveryParamsSizedBlobAndTrackedArraysByTheirOwnPath) {
  const CheckpointContents c = Contents();
  StatusOr<Variable> kernel = FindVariable(c, "model/dense_0/kernel");
  ASSERT_TRUE(kernel.ok()) << kernel.status().ToString();
  EXPECT_EQ(kernel->shape, (std::vector<int64_t>{2, 4}));
  EXPECT_EQ(FormatVariable(*kernel), "0 1 2 3\n4 5 6 7\n");
  // A tracked array is found by its own path before any tensor view of "ema".
  StatusOr<Variable> tracked = FindVariable(c, "ema/dense_0/kernel");
  ASSERT_TRUE(tracked.ok());
  EXPECT_EQ(FormatVariable(*tracked), "7 8 9\n");
  StatusOr<Variable> bias = FindVariable(c, "ema/dense_1/bias");
  ASSERT_TRUE(bias.ok());
  EXPECT_EQ(FormatVariable(*bias), "0.5 0.5 0.5\n");
  StatusOr<Variable> epoch = FindVariable(c, "counters/epoch");
  ASSERT_TRUE(epoch.ok());
  EXPECT_EQ(epoch->dtype, "int64");
  EXPECT_TRUE(epoch->shape.empty());
  EXPECT_EQ(FindVariable(c, "model/dense_9/kernel").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(FindVariable(c, "counters/none").status().code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace holdfast::launcher
