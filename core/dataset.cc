#include "core/dataset.h"

#include <sys/stat.h>
#include <zlib.h>

#include <cerrno>
#include <memory>

namespace holdfast {
namespace {

// Largest payload accepted from an IDX header, checked before allocating.
constexpr uint64_t kMaxIdxBytes = uint64_t{1} << 32;

struct GzCloser {
  void operator()(gzFile_s* f) const { gzclose(f); }
};
using GzFile = std::unique_ptr<gzFile_s, GzCloser>;

// Reads exactly n bytes; false on a short read or a decompression error.
bool ReadExactly(gzFile f, uint8_t* out, uint64_t n) {
  while (n > 0) {
    const unsigned chunk = static_cast<unsigned>(std::min<uint64_t>(n, 1u << 30));
    const int got = gzread(f, out, chunk);
    if (got <= 0) return false;
    out += got;
    n -= static_cast<uint64_t>(got);
  }
  return true;
}

}  // namespace

Dataset Dataset::Head(int64_t n) const {
  if (n >= size()) return *this;
  return {x.topRows(n), y.topRows(n)};
}

StatusOr<IdxArray> ReadIdxFile(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return ErrnoToStatus(errno, path);
  if (!S_ISREG(st.st_mode)) return InvalidArgumentError(path + ": not a regular file");
  GzFile file(gzopen(path.c_str(), "rb"));
  if (!file) return ErrnoToStatus(errno, path);

  uint8_t magic[4];
  if (!ReadExactly(file.get(), magic, 4)) {
    return DataLossError(path + ": truncated IDX file (no header)");
  }
  if (magic[0] != 0 || magic[1] != 0) {
    return InvalidArgumentError(path + ": not an IDX file (bad magic number)");
  }
  if (magic[2] != 0x08) {
    return InvalidArgumentError(path + ": unsupported IDX element type " +
                                std::to_string(magic[2]) + " (only unsigned bytes, 0x08)");
  }
  const int ndims = magic[3];
  if (ndims < 1 || ndims > 4) {
    return InvalidArgumentError(path + ": IDX file with " + std::to_string(ndims) +
                                " dimensions (expected 1 to 4)");
  }
  IdxArray array;
  uint64_t total = 1;
  for (int i = 0; i < ndims; ++i) {
    uint8_t be[4];
    if (!ReadExactly(file.get(), be, 4)) {
      return DataLossError(path + ": truncated IDX file (header)");
    }
    const uint32_t dim =
        uint32_t{be[0]} << 24 | uint32_t{be[1]} << 16 | uint32_t{be[2]} << 8 | be[3];
    if (dim == 0) return InvalidArgumentError(path + ": IDX dimension of size 0");
    total *= dim;
    if (total > kMaxIdxBytes) {
      return InvalidArgumentError(path + ": IDX dimensions describe more than 4 GiB");
    }
    array.dims.push_back(dim);
  }
  // Grow the buffer as bytes arrive instead of trusting the header's size:
  // a damaged header must not make us allocate gigabytes first.
  constexpr uint64_t kChunk = uint64_t{16} << 20;
  while (array.data.size() < total) {
    const uint64_t have = array.data.size();
    const uint64_t want = std::min(kChunk, total - have);
    array.data.resize(have + want);
    if (!ReadExactly(file.get(), array.data.data() + have, want)) {
      return DataLossError(path + ": truncated IDX file: header promises " + std::to_string(total) +
                           " bytes of data");
    }
  }
  uint8_t extra;
  if (gzread(file.get(), &extra, 1) != 0) {
    return DataLossError(path + ": IDX file longer than its header says");
  }
  int err = Z_OK;
  gzerror(file.get(), &err);
  if (err != Z_OK && err != Z_STREAM_END) {
    return DataLossError(path + ": corrupt gzip stream");
  }
  return array;
}

StatusOr<Dataset> LoadIdxDataset(const std::string& images_path, const std::string& labels_path) {
  HOLDFAST_ASSIGN_OR_RETURN(IdxArray images, ReadIdxFile(images_path));
  HOLDFAST_ASSIGN_OR_RETURN(IdxArray labels, ReadIdxFile(labels_path));
  if (images.dims.size() != 3) {
    return InvalidArgumentError(images_path + ": expected 3 dimensions (n x rows x cols)");
  }
  if (labels.dims.size() != 1) {
    return InvalidArgumentError(labels_path + ": expected 1 dimension (n)");
  }
  if (images.dims[0] != labels.dims[0]) {
    return InvalidArgumentError(images_path + " has " + std::to_string(images.dims[0]) +
                                " images but " + labels_path + " has " +
                                std::to_string(labels.dims[0]) + " labels");
  }
  const int64_t n = images.dims[0];
  const int64_t features = int64_t{images.dims[1]} * images.dims[2];
  Dataset data;
  data.x.resize(n, features);
  float* x = data.x.data();
  for (size_t i = 0; i < images.data.size(); ++i) x[i] = images.data[i] * (1.0f / 255.0f);
  data.y.resize(n, 1);
  for (int64_t i = 0; i < n; ++i) data.y(i, 0) = labels.data[i];
  return data;
}

StatusOr<TrainTestData> LoadFashionMnist(const std::string& dir) {
  struct stat st;
  if (stat(dir.c_str(), &st) != 0) return ErrnoToStatus(errno, "data directory " + dir);
  if (!S_ISDIR(st.st_mode))
    return InvalidArgumentError("data directory " + dir + ": not a directory");
  TrainTestData out;
  HOLDFAST_ASSIGN_OR_RETURN(out.train, LoadIdxDataset(dir + "/train-images-idx3-ubyte.gz",
                                                      dir + "/train-labels-idx1-ubyte.gz"));
  HOLDFAST_ASSIGN_OR_RETURN(out.test, LoadIdxDataset(dir + "/t10k-images-idx3-ubyte.gz",
                                                     dir + "/t10k-labels-idx1-ubyte.gz"));
  return out;
}

}  // namespace holdfast
