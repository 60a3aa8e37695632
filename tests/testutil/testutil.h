// Shared helpers for holdfast's unit tests: status assertions, temporary
// directories and small file writers.
#pragma once

#include <gtest/gtest.h>
#include <zlib.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <vector>

#include "core/status.h"
#include "core/tensor.h"

namespace holdfast {
namespace testing_internal {

inline const Status& GetStatus(const Status& s) { return s; }
template <typename T>
const Status& GetStatus(const StatusOr<T>& s) {
  return s.status();
}

}  // namespace testing_internal

// Portable pseudo-random test data: std::mt19937's output sequence is fixed by
// the C++ standard (unlike the standard distributions), so values built from
// it are the same with every compiler and standard library.
class TestRng {
 public:
  explicit TestRng(uint32_t seed) : gen_(seed) {}
  // Uniform in [lo, hi).
  double Uniform(double lo, double hi) {
    return lo + (hi - lo) * static_cast<double>(gen_() >> 8) * 0x1.0p-24;
  }
  // Uniform integer in [0, bound); slightly biased, which tests do not mind.
  uint32_t Below(uint32_t bound) { return static_cast<uint32_t>(gen_() % bound); }

 private:
  std::mt19937 gen_;
};

// A rows x cols matrix of values uniform in [lo, hi).
inline Matrix RandomMatrix(int64_t rows, int64_t cols, double lo, double hi, uint32_t seed) {
  TestRng rng(seed);
  Matrix m(rows, cols);
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t j = 0; j < cols; ++j) m(i, j) = static_cast<float>(rng.Uniform(lo, hi));
  }
  return m;
}

// An empty directory created under $TMPDIR (or /tmp), removed with its
// contents when the object goes out of scope. Not copyable.
class TempDir {
 public:
  // A new directory in `parent` (default: $TMPDIR or /tmp).
  explicit TempDir(std::string parent = "") {
    if (parent.empty()) {
      const char* tmpdir = std::getenv("TMPDIR");
      parent = tmpdir != nullptr && *tmpdir != '\0' ? tmpdir : "/tmp";
    }
    std::string tmpl = parent + "/holdfast_test_XXXXXX";
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    if (mkdtemp(buf.data()) == nullptr) {
      throw std::runtime_error("mkdtemp(" + tmpl + "): " + std::strerror(errno));
    }
    path_ = buf.data();
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  // The path of `name` inside the directory (the file is not created).
  std::string File(std::string_view name) const { return path_ + "/" + std::string(name); }

 private:
  std::string path_;
};

// Writes `bytes` to `path`, replacing it. Throws std::runtime_error on failure.
inline void WriteBytes(const std::string& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) throw std::runtime_error("cannot open " + path);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) throw std::runtime_error("cannot write " + path);
}

inline void WriteBytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  WriteBytes(path, std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
}

// Writes `bytes` gzip-compressed to `path`. Throws std::runtime_error on failure.
inline void WriteGzipBytes(const std::string& path, std::string_view bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  if (f == nullptr) throw std::runtime_error("gzopen " + path);
  if (!bytes.empty() && gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())) !=
                            static_cast<int>(bytes.size())) {
    gzclose(f);
    throw std::runtime_error("gzwrite " + path);
  }
  if (gzclose(f) != Z_OK) throw std::runtime_error("gzclose " + path);
}

inline void WriteGzipBytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  WriteGzipBytes(path, std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
}

// The whole content of `path`. Throws std::runtime_error if it cannot be read.
inline std::string ReadFileToString(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

}  // namespace holdfast

// ASSERT_OK(expr) / EXPECT_OK(expr): expr is a Status or a StatusOr<T>; on
// failure the status is printed with ToString().
#define HOLDFAST_TEST_STATUS_OK_(expr, fail)                                            \
  do {                                                                                  \
    const auto& _hf_test_result = (expr);                                               \
    const ::holdfast::Status& _hf_test_status =                                         \
        ::holdfast::testing_internal::GetStatus(_hf_test_result);                       \
    if (!_hf_test_status.ok()) fail() << #expr << " -> " << _hf_test_status.ToString(); \
  } while (0)

#define ASSERT_OK(expr) HOLDFAST_TEST_STATUS_OK_(expr, FAIL)
#define EXPECT_OK(expr) HOLDFAST_TEST_STATUS_OK_(expr, ADD_FAILURE)
