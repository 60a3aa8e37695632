#include "bench/checkpoint/raw_io.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <filesystem>

#include "bench/checkpoint/harness.h"
#include "core/data_order.h"

namespace checkpoint_bench {
namespace {

namespace fs = std::filesystem;

void WriteAll(int fd, const void* data, size_t bytes, const std::string& path) {
  const char* p = static_cast<const char*>(data);
  while (bytes > 0) {
    const ssize_t n = ::write(fd, p, bytes);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) Fail(Errno("write", path));
    p += n;
    bytes -= static_cast<size_t>(n);
  }
}

void ReadAll(int fd, void* data, size_t bytes, const std::string& path) {
  char* p = static_cast<char*>(data);
  while (bytes > 0) {
    const ssize_t n = ::read(fd, p, bytes);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) Fail(n < 0 ? Errno("read", path) : path + ": short read");
    p += n;
    bytes -= static_cast<size_t>(n);
  }
}

void SyncPath(const std::string& path, int flags) {
  const int fd = ::open(path.c_str(), flags | O_CLOEXEC);
  if (fd < 0) Fail(Errno("open", path));
  if (::fsync(fd) != 0) Fail(Errno("fsync", path));
  ::close(fd);
}

}  // namespace

// This rank's slice of every blob: the bytes its shard holds.
std::vector<std::span<std::byte>> MySlices(holdfast::Checkpoint& ckpt, int rank, int world) {
  std::vector<std::span<std::byte>> out;
  for (const holdfast::NamedBlob& blob : ckpt.Blobs()) {
    const holdfast::Range r = holdfast::ReplicaSlice(
        static_cast<int64_t>(blob.bytes.size() / sizeof(float)), rank, world);
    out.push_back(blob.bytes.subspan(static_cast<size_t>(r.begin) * sizeof(float),
                                     static_cast<size_t>(r.size()) * sizeof(float)));
  }
  return out;
}

// The reference save: this rank's bytes, one sequential write loop, fsync,
// close; then (after every rank is done) the chief fsyncs the directory so
// the new names are durable too.
RawWriteSplit RawWrite(holdfast::Communicator& comm, const std::string& path,
                       const std::vector<std::span<std::byte>>& slices, const std::string& dir) {
  RawWriteSplit split;
  auto t0 = Clock::now();
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) Fail(Errno("create", path));
  for (std::span<std::byte> s : slices) WriteAll(fd, s.data(), s.size_bytes(), path);
  split.write = SecondsSince(t0);
  t0 = Clock::now();
  if (::fsync(fd) != 0) Fail(Errno("fsync", path));
  if (::close(fd) != 0) Fail(Errno("close", path));
  split.fsync = SecondsSince(t0);
  comm.Barrier();
  if (comm.rank() == 0) {
    t0 = Clock::now();
    SyncPath(dir, O_RDONLY | O_DIRECTORY);
    split.fsync_dir = SecondsSince(t0);
  }
  return split;
}

void RawRead(const std::string& path, const std::vector<std::span<std::byte>>& slices) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) Fail(Errno("open", path));
  for (std::span<std::byte> s : slices) ReadAll(fd, s.data(), s.size_bytes(), path);
  ::close(fd);
}

// Asks the kernel to drop the (clean, fsynced) pages of every file under
// `dir` from the page cache.
void DropPageCache(const std::string& dir) {
  for (const auto& entry : fs::recursive_directory_iterator(dir)) {
    if (!entry.is_regular_file()) continue;
    const int fd = ::open(entry.path().c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) continue;
    (void)::fdatasync(fd);  // pages under writeback would stay
    (void)::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    ::close(fd);
  }
}

// The share of the pages of the files under `dir` that are in the page
// cache (mincore), and the worst file's name and share, for the record.
std::pair<double, std::string> ResidentShare(const std::string& dir) {
  uint64_t pages = 0, resident = 0;
  double worst = -1;
  std::string worst_name;
  const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  for (const auto& entry : fs::recursive_directory_iterator(dir)) {
    if (!entry.is_regular_file()) continue;
    const int fd = ::open(entry.path().c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) continue;
    struct stat st;
    if (::fstat(fd, &st) == 0 && st.st_size > 0) {
      const size_t bytes = static_cast<size_t>(st.st_size);
      void* map = ::mmap(nullptr, bytes, PROT_READ, MAP_SHARED, fd, 0);
      if (map != MAP_FAILED) {
        std::vector<unsigned char> vec((bytes + page - 1) / page);
        if (::mincore(map, bytes, vec.data()) == 0) {
          uint64_t in = 0;
          for (unsigned char c : vec) in += c & 1;
          pages += vec.size();
          resident += in;
          const double share = static_cast<double>(in) / static_cast<double>(vec.size());
          if (share > worst) {
            worst = share;
            worst_name = entry.path().filename().string();
          }
        }
        ::munmap(map, bytes);
      }
    }
    ::close(fd);
  }
  char note[64];
  std::snprintf(note, sizeof note, " (%.0f%%)", worst * 100);
  return {pages ? static_cast<double>(resident) / static_cast<double>(pages) : 0.0,
          worst_name + note};
}

}  // namespace checkpoint_bench
