#include "core/dataset.h"

#include <gtest/gtest.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "core/status.h"
#include "tests/testutil/testutil.h"

namespace holdfast {
namespace {

void AppendU32(std::vector<uint8_t>* out, uint32_t v) {
  out->push_back(static_cast<uint8_t>(v >> 24));
  out->push_back(static_cast<uint8_t>(v >> 16));
  out->push_back(static_cast<uint8_t>(v >> 8));
  out->push_back(static_cast<uint8_t>(v));
}

// An IDX file of unsigned bytes: magic 0x000008<ndims>, big-endian dims, payload.
std::vector<uint8_t> IdxBytes(const std::vector<uint32_t>& dims,
                              const std::vector<uint8_t>& payload) {
  std::vector<uint8_t> out;
  AppendU32(&out, 0x00000800u | static_cast<uint32_t>(dims.size()));
  for (uint32_t d : dims) AppendU32(&out, d);
  out.insert(out.end(), payload.begin(), payload.end());
  return out;
}

std::vector<uint8_t> Iota(size_t n, uint8_t start = 0) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(start + 7 * i);
  return v;
}

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

TEST(ReadIdxFileTest, ReadsGzipCompressedFile) {
  TempDir dir;
  const std::vector<uint8_t> payload = Iota(18);
  const std::string path = dir.File("good-idx3-ubyte.gz");
  WriteGzipBytes(path, IdxBytes({2, 3, 3}, payload));
  StatusOr<IdxArray> idx = ReadIdxFile(path);
  ASSERT_OK(idx);
  EXPECT_EQ(idx->dims, (std::vector<uint32_t>{2, 3, 3}));
  EXPECT_EQ(idx->data, payload);
}

TEST(ReadIdxFileTest, ReadsUncompressedFile) {
  TempDir dir;
  const std::vector<uint8_t> payload = Iota(18, 3);
  const std::string path = dir.File("good-idx3-ubyte");
  WriteBytes(path, IdxBytes({2, 3, 3}, payload));
  StatusOr<IdxArray> idx = ReadIdxFile(path);
  ASSERT_OK(idx);
  EXPECT_EQ(idx->dims, (std::vector<uint32_t>{2, 3, 3}));
  EXPECT_EQ(idx->data, payload);
}

TEST(ReadIdxFileTest, ReadsOneDimensionalLabels) {
  TempDir dir;
  const std::string path = dir.File("labels-idx1-ubyte.gz");
  WriteGzipBytes(path, IdxBytes({5}, {0, 9, 3, 3, 1}));
  StatusOr<IdxArray> idx = ReadIdxFile(path);
  ASSERT_OK(idx);
  EXPECT_EQ(idx->dims, (std::vector<uint32_t>{5}));
  EXPECT_EQ(idx->data, (std::vector<uint8_t>{0, 9, 3, 3, 1}));
}

TEST(ReadIdxFileTest, TruncatedPayloadIsAnErrorNamingThePath) {
  TempDir dir;
  std::vector<uint8_t> bytes = IdxBytes({2, 3, 3}, Iota(18));
  bytes.pop_back();
  for (bool gz : {true, false}) {
    const std::string path = dir.File(gz ? "short.gz" : "short");
    gz ? WriteGzipBytes(path, bytes) : WriteBytes(path, bytes);
    StatusOr<IdxArray> idx = ReadIdxFile(path);
    ASSERT_FALSE(idx.ok()) << path;
    EXPECT_TRUE(Contains(idx.status().message(), path)) << idx.status().ToString();
    EXPECT_NE(idx.status().code(), StatusCode::kNotFound) << idx.status().ToString();
  }
}

TEST(ReadIdxFileTest, TruncatedHeaderIsAnError) {
  TempDir dir;
  std::vector<uint8_t> bytes = IdxBytes({2, 3, 3}, {});
  bytes.resize(9);  // magic and two of three dims, plus a byte
  const std::string path = dir.File("header.gz");
  WriteGzipBytes(path, bytes);
  StatusOr<IdxArray> idx = ReadIdxFile(path);
  ASSERT_FALSE(idx.ok());
  EXPECT_TRUE(Contains(idx.status().message(), path)) << idx.status().ToString();
}

TEST(ReadIdxFileTest, EmptyFileIsAnError) {
  TempDir dir;
  const std::string path = dir.File("empty");
  WriteBytes(path, std::string_view());
  StatusOr<IdxArray> idx = ReadIdxFile(path);
  ASSERT_FALSE(idx.ok());
  EXPECT_TRUE(Contains(idx.status().message(), path)) << idx.status().ToString();
}

TEST(ReadIdxFileTest, TrailingBytesAreAnError) {
  TempDir dir;
  std::vector<uint8_t> bytes = IdxBytes({2, 3, 3}, Iota(18));
  bytes.push_back(42);
  for (bool gz : {true, false}) {
    const std::string path = dir.File(gz ? "long.gz" : "long");
    gz ? WriteGzipBytes(path, bytes) : WriteBytes(path, bytes);
    StatusOr<IdxArray> idx = ReadIdxFile(path);
    ASSERT_FALSE(idx.ok()) << path;
    EXPECT_TRUE(Contains(idx.status().message(), path)) << idx.status().ToString();
  }
}

TEST(ReadIdxFileTest, WrongMagicIsAnError) {
  TempDir dir;
  std::vector<uint8_t> bytes = IdxBytes({2, 3, 3}, Iota(18));
  bytes[0] = 0x01;  // first two bytes must be zero
  const std::string path = dir.File("magic.gz");
  WriteGzipBytes(path, bytes);
  StatusOr<IdxArray> idx = ReadIdxFile(path);
  ASSERT_FALSE(idx.ok());
  EXPECT_TRUE(Contains(idx.status().message(), path)) << idx.status().ToString();

  // Right layout, but an unsupported element type (0x0D: float).
  bytes = IdxBytes({2, 3, 3}, Iota(18));
  bytes[2] = 0x0D;
  WriteGzipBytes(path, bytes);
  EXPECT_FALSE(ReadIdxFile(path).ok());

  // Not an IDX file at all.
  WriteBytes(dir.File("text"), std::string_view("hello, world, this is text\n"));
  EXPECT_FALSE(ReadIdxFile(dir.File("text")).ok());
}

TEST(ReadIdxFileTest, DimensionsDisagreeingWithNdimsAreAnError) {
  TempDir dir;
  // The magic says 3 dims but only 2 are written: the payload's first bytes
  // become an absurd third dim.
  std::vector<uint8_t> bytes;
  AppendU32(&bytes, 0x00000803u);
  AppendU32(&bytes, 2);
  AppendU32(&bytes, 3);
  const std::vector<uint8_t> payload = Iota(6);
  bytes.insert(bytes.end(), payload.begin(), payload.end());
  const std::string path = dir.File("ndims");
  WriteBytes(path, bytes);
  EXPECT_FALSE(ReadIdxFile(path).ok());
}

// Lets the address space grow by at most `bytes` from now on.
void LimitAddressSpaceGrowth(uint64_t bytes) {
  std::ifstream statm("/proc/self/statm");
  uint64_t pages = 0;
  statm >> pages;
  const uint64_t now = pages * static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  rlimit limit{};
  getrlimit(RLIMIT_AS, &limit);
  limit.rlim_cur = now + bytes;
  setrlimit(RLIMIT_AS, &limit);
}

// In a child process that may allocate at most 256 MiB: ReadIdxFile on a
// tiny file whose header claims `dims` fails cleanly (an allocation of the
// claimed size would throw std::bad_alloc and abort the child).
void ExpectRejectedWithoutAllocating(const std::vector<uint32_t>& dims) {
  TempDir dir;
  const std::string path = dir.File("huge.gz");
  WriteGzipBytes(path, IdxBytes(dims, Iota(18)));
  std::string name;
  for (uint32_t d : dims) {
    if (!name.empty()) name += 'x';
    name += std::to_string(d);
  }
  EXPECT_EXIT(
      {
        LimitAddressSpaceGrowth(uint64_t{256} << 20);
        StatusOr<IdxArray> idx = ReadIdxFile(path);
        if (idx.ok()) {
          std::fprintf(stderr, "accepted\n");
          std::_Exit(1);
        }
        if (!Contains(idx.status().message(), path)) {
          std::fprintf(stderr, "message without the path: %s\n", idx.status().ToString().c_str());
          std::_Exit(2);
        }
        std::_Exit(0);
      },
      ::testing::ExitedWithCode(0), "")
      << "dims " << name;
}

TEST(ReadIdxFileTest, HugeDimensionsAreRejectedBeforeAllocating) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  ExpectRejectedWithoutAllocating({0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu});
  ExpectRejectedWithoutAllocating({65536, 65536, 65536});
  ExpectRejectedWithoutAllocating({0x10000000u, 16, 16});
  ExpectRejectedWithoutAllocating({0xFFFFFFFFu});
  ExpectRejectedWithoutAllocating({0x80000000u});
  ExpectRejectedWithoutAllocating({1000000, 28, 28});
  // A plausible size (47 MB) with a short payload is simply truncated.
  ExpectRejectedWithoutAllocating({60000, 28, 28});
}

TEST(ReadIdxFileTest, MissingFileIsNotFound) {
  TempDir dir;
  const std::string path = dir.File("does-not-exist.gz");
  StatusOr<IdxArray> idx = ReadIdxFile(path);
  ASSERT_FALSE(idx.ok());
  EXPECT_EQ(idx.status().code(), StatusCode::kNotFound) << idx.status().ToString();
  EXPECT_TRUE(Contains(idx.status().message(), path)) << idx.status().ToString();
}

TEST(LoadIdxDatasetTest, ScalesPixelsAndReadsLabels) {
  TempDir dir;
  // 3 images of 2x2.
  const std::vector<uint8_t> pixels = {0, 255, 51, 102, 255, 255, 0, 0, 1, 2, 3, 4};
  WriteGzipBytes(dir.File("images.gz"), IdxBytes({3, 2, 2}, pixels));
  WriteGzipBytes(dir.File("labels.gz"), IdxBytes({3}, {7, 0, 9}));
  StatusOr<Dataset> ds = LoadIdxDataset(dir.File("images.gz"), dir.File("labels.gz"));
  ASSERT_OK(ds);
  EXPECT_EQ(ds->size(), 3);
  ASSERT_EQ(ds->x.rows(), 3);
  ASSERT_EQ(ds->x.cols(), 4);
  ASSERT_EQ(ds->y.rows(), 3);
  ASSERT_EQ(ds->y.cols(), 1);
  for (int r = 0; r < 3; ++r) {
    for (int c = 0; c < 4; ++c) {
      EXPECT_FLOAT_EQ(ds->x(r, c), pixels[r * 4 + c] / 255.0f) << r << "," << c;
    }
  }
  EXPECT_EQ(ds->x(0, 1), 1.0f);
  EXPECT_EQ(ds->x(0, 0), 0.0f);
  EXPECT_EQ(ds->y(0, 0), 7.0f);
  EXPECT_EQ(ds->y(1, 0), 0.0f);
  EXPECT_EQ(ds->y(2, 0), 9.0f);
}

TEST(LoadIdxDatasetTest, CountMismatchIsAnError) {
  TempDir dir;
  WriteGzipBytes(dir.File("images.gz"), IdxBytes({3, 2, 2}, Iota(12)));
  WriteGzipBytes(dir.File("labels.gz"), IdxBytes({2}, {1, 2}));
  StatusOr<Dataset> ds = LoadIdxDataset(dir.File("images.gz"), dir.File("labels.gz"));
  EXPECT_FALSE(ds.ok());
}

TEST(LoadIdxDatasetTest, WrongRankIsAnError) {
  TempDir dir;
  WriteGzipBytes(dir.File("labels.gz"), IdxBytes({3}, {1, 2, 3}));
  WriteGzipBytes(dir.File("images.gz"), IdxBytes({3, 2, 2}, Iota(12)));
  // Labels passed as images and the other way round.
  EXPECT_FALSE(LoadIdxDataset(dir.File("labels.gz"), dir.File("images.gz")).ok());
}

TEST(LoadIdxDatasetTest, MissingFileIsNotFound) {
  TempDir dir;
  WriteGzipBytes(dir.File("labels.gz"), IdxBytes({3}, {1, 2, 3}));
  StatusOr<Dataset> ds = LoadIdxDataset(dir.File("nope.gz"), dir.File("labels.gz"));
  ASSERT_FALSE(ds.ok());
  EXPECT_EQ(ds.status().code(), StatusCode::kNotFound) << ds.status().ToString();
}

TEST(DatasetTest, Head) {
  Dataset ds;
  ds.x = Matrix(3, 2);
  ds.x << 1, 2, 3, 4, 5, 6;
  ds.y = Matrix(3, 1);
  ds.y << 7, 8, 9;
  Dataset head = ds.Head(2);
  EXPECT_EQ(head.size(), 2);
  ASSERT_EQ(head.x.rows(), 2);
  ASSERT_EQ(head.x.cols(), 2);
  ASSERT_EQ(head.y.rows(), 2);
  EXPECT_EQ(head.x, Matrix(ds.x.topRows(2)));
  EXPECT_EQ(head.y, Matrix(ds.y.topRows(2)));
  Dataset all = ds.Head(10);
  EXPECT_EQ(all.size(), 3);
  EXPECT_EQ(all.x, ds.x);
  EXPECT_EQ(all.y, ds.y);
  EXPECT_EQ(ds.Head(3).size(), 3);
  EXPECT_EQ(ds.Head(0).size(), 0);
}

TEST(FashionMnistTest, LoadsTheInstalledDataset) {
  StatusOr<TrainTestData> data = LoadFashionMnist();
  ASSERT_OK(data);
  const Dataset& train = data->train;
  const Dataset& test = data->test;
  ASSERT_EQ(train.x.rows(), 60000);
  ASSERT_EQ(train.x.cols(), 784);
  ASSERT_EQ(train.y.rows(), 60000);
  ASSERT_EQ(train.y.cols(), 1);
  ASSERT_EQ(test.x.rows(), 10000);
  ASSERT_EQ(test.x.cols(), 784);
  ASSERT_EQ(test.y.rows(), 10000);
  ASSERT_EQ(test.y.cols(), 1);
  EXPECT_EQ(train.x.minCoeff(), 0.0f);
  EXPECT_EQ(train.x.maxCoeff(), 1.0f);
  EXPECT_EQ(test.x.minCoeff(), 0.0f);
  EXPECT_EQ(test.x.maxCoeff(), 1.0f);
  // Fashion-MNIST is balanced: 6000 / 1000 samples of each of the 10 classes.
  for (const auto& [ds, per_class] : {std::pair<const Dataset*, int>{&train, 6000},
                                      std::pair<const Dataset*, int>{&test, 1000}}) {
    std::vector<int> counts(10, 0);
    for (int64_t i = 0; i < ds->y.rows(); ++i) {
      const float label = ds->y(i, 0);
      ASSERT_GE(label, 0.0f);
      ASSERT_LE(label, 9.0f);
      ASSERT_EQ(label, static_cast<float>(static_cast<int>(label)));
      ++counts[static_cast<int>(label)];
    }
    for (int c = 0; c < 10; ++c) EXPECT_EQ(counts[c], per_class) << "class " << c;
  }
  // The first training label of Fashion-MNIST is 9 (ankle boot).
  EXPECT_EQ(train.y(0, 0), 9.0f);
}

TEST(FashionMnistTest, MissingDirectoryIsNotFound) {
  TempDir dir;
  StatusOr<TrainTestData> data = LoadFashionMnist(dir.path());
  ASSERT_FALSE(data.ok());
  EXPECT_EQ(data.status().code(), StatusCode::kNotFound) << data.status().ToString();
}

}  // namespace
}  // namespace holdfast
