// In-memory datasets and the IDX reader for (gzip-compressed) MNIST-style files.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"
#include "core/tensor.h"

namespace holdfast {

// x: (n x features); y: (n x k) targets, or (n x 1) class indices.
struct Dataset {
  Matrix x;
  Matrix y;
  int64_t size() const { return x.rows(); }
  // The first n samples (n >= size() keeps all).
  Dataset Head(int64_t n) const;
};

// An IDX array: dims and the raw big-endian-decoded unsigned bytes.
struct IdxArray {
  std::vector<uint32_t> dims;
  std::vector<uint8_t> data;  // only type 0x08 (unsigned byte) is supported
};

// Reads an IDX file, gzip-compressed or not. Rejects a wrong magic, an
// unsupported type, absurd dimensions (checked before allocating) and a file
// whose payload is shorter or longer than its dims say, each with an error
// naming the path (NotFound, InvalidArgument or DataLoss).
StatusOr<IdxArray> ReadIdxFile(const std::string& path);

// Images (n x rows x cols, pixels scaled to [0,1]) and labels (n) as a Dataset
// of n x (rows*cols) and n x 1. The counts must agree.
StatusOr<Dataset> LoadIdxDataset(const std::string& images_path, const std::string& labels_path);

struct TrainTestData {
  Dataset train;
  Dataset test;
};

// The default location of Debian's dataset-fashion-mnist package.
inline constexpr const char* kFashionMnistDir = "/usr/share/datasets/fashion-mnist";

// Loads {train,t10k}-{images-idx3,labels-idx1}-ubyte.gz from `dir`.
StatusOr<TrainTestData> LoadFashionMnist(const std::string& dir = kFashionMnistDir);

}  // namespace holdfast
