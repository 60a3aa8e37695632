#include "checkpoint/env.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

namespace holdfast {
namespace {

// write(2) until all `size` bytes at `p` are written or an error (errno) is
// returned; `*written` (optional) counts the bytes written either way.
int WriteAll(int fd, const char* p, size_t size, size_t* written = nullptr) {
  size_t done = 0;
  int err = 0;
  while (done < size) {
    const ssize_t n = ::write(fd, p + done, size - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      err = errno;
      break;
    }
    done += static_cast<size_t>(n);
  }
  if (written != nullptr) *written = done;
  return err;
}

class PosixWritableFile final : public WritableFile {
 public:
  PosixWritableFile(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
  ~PosixWritableFile() override { (void)Close(); }

  Status Append(std::span<const char> data) override {
    const int err = WriteAll(fd_, data.data(), data.size());
    return err == 0 ? Status::Ok() : ErrnoToStatus(err, "write " + path_);
  }

  Status Sync() override {
    if (::fsync(fd_) != 0) return ErrnoToStatus(errno, "fsync " + path_);
    return Status::Ok();
  }

  Status Close() override {
    if (fd_ < 0) return Status::Ok();
    const int fd = fd_;
    fd_ = -1;
    if (::close(fd) != 0) return ErrnoToStatus(errno, "close " + path_);
    return Status::Ok();
  }

 private:
  std::string path_;
  int fd_;
};

// A file opened with O_DIRECT: appends gather in an aligned buffer, and
// each full buffer goes from there to the device by DMA, so the CPU neither
// copies the data into the page cache nor writes it back later (the cost
// that matters for a background writer sharing the cores with training).
// The tail, less than one block, is written through the page cache when the
// file is synced or closed, after O_DIRECT is turned off (O_DIRECT needs
// block-aligned offsets and lengths). A file system that refuses O_DIRECT
// writes (EINVAL) gets buffered ones instead.
class PosixDirectWritableFile final : public WritableFile {
 public:
  static constexpr size_t kAlign = kDirectIoAlignment;
  static constexpr size_t kBufferBytes = size_t{4} << 20;

  PosixDirectWritableFile(std::string path, int fd)
      : path_(std::move(path)),
        fd_(fd),
        buffer_(static_cast<char*>(std::aligned_alloc(kAlign, kBufferBytes))) {}
  ~PosixDirectWritableFile() override {
    (void)Close();
    std::free(buffer_);
  }

  Status Append(std::span<const char> data) override {
    if (buffer_ == nullptr) return ErrnoToStatus(ENOMEM, "write " + path_);
    if (!direct_) return Write(data.data(), data.size());
    // The staging buffer always starts at a block of the file. Memory that
    // sits where the next block would start in it needs no copy: complete
    // the staged block from it, send the staged bytes, then send its whole
    // blocks straight from where they are.
    const size_t fill = (kAlign - used_ % kAlign) % kAlign;
    if (data.size() >= fill + kAlign &&
        reinterpret_cast<uintptr_t>(data.data() + fill) % kAlign == 0) {
      std::memcpy(buffer_ + used_, data.data(), fill);
      HOLDFAST_RETURN_IF_ERROR(Write(buffer_, used_ + fill));
      used_ = 0;
      const size_t whole = (data.size() - fill) / kAlign * kAlign;
      HOLDFAST_RETURN_IF_ERROR(Write(data.data() + fill, whole));
      data = data.subspan(fill + whole);
    }
    while (!data.empty()) {
      const size_t n = std::min(data.size(), kBufferBytes - used_);
      std::memcpy(buffer_ + used_, data.data(), n);
      used_ += n;
      data = data.subspan(n);
      if (used_ == kBufferBytes) {
        HOLDFAST_RETURN_IF_ERROR(Write(buffer_, used_));
        used_ = 0;
      }
    }
    return Status::Ok();
  }

  Status Sync() override {
    HOLDFAST_RETURN_IF_ERROR(WriteTail());
    if (::fsync(fd_) != 0) return ErrnoToStatus(errno, "fsync " + path_);
    return Status::Ok();
  }

  Status Close() override {
    if (fd_ < 0) return Status::Ok();
    const Status tail = WriteTail();
    const int fd = fd_;
    fd_ = -1;
    if (::close(fd) != 0 && tail.ok()) return ErrnoToStatus(errno, "close " + path_);
    return tail;
  }

 private:
  // Writes the buffered bytes: the whole blocks directly, the rest buffered.
  // From here on the file is an ordinary one.
  Status WriteTail() {
    if (!direct_) return Status::Ok();
    const size_t whole = used_ / kAlign * kAlign;
    HOLDFAST_RETURN_IF_ERROR(Write(buffer_, whole));
    if (direct_) HOLDFAST_RETURN_IF_ERROR(StopDirect());
    HOLDFAST_RETURN_IF_ERROR(Write(buffer_ + whole, used_ - whole));
    used_ = 0;
    return Status::Ok();
  }

  Status StopDirect() {
    const int flags = ::fcntl(fd_, F_GETFL);
    if (flags < 0 || ::fcntl(fd_, F_SETFL, flags & ~O_DIRECT) != 0) {
      return ErrnoToStatus(errno, "write " + path_ + " (turning O_DIRECT off)");
    }
    direct_ = false;
    return Status::Ok();
  }

  Status Write(const char* p, size_t n) {
    size_t written = 0;
    int err = WriteAll(fd_, p, n, &written);
    if (err == EINVAL && direct_) {
      // No O_DIRECT here after all (or not for what is left after a short
      // write): go on buffered from where it stopped.
      HOLDFAST_RETURN_IF_ERROR(StopDirect());
      err = WriteAll(fd_, p + written, n - written);
    }
    return err == 0 ? Status::Ok() : ErrnoToStatus(err, "write " + path_);
  }

  std::string path_;
  int fd_;
  char* buffer_;
  size_t used_ = 0;
  bool direct_ = true;
};

class PosixFileLock final : public FileLock {
 public:
  explicit PosixFileLock(int fd) : fd_(fd) {}
  ~PosixFileLock() override { ::close(fd_); }  // closing the file drops the lock

 private:
  int fd_;
};

class PosixRandomAccessFile final : public RandomAccessFile {
 public:
  PosixRandomAccessFile(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
  ~PosixRandomAccessFile() override { ::close(fd_); }

  Status Read(uint64_t offset, std::span<char> out) override {
    size_t done = 0;
    while (done < out.size()) {
      const ssize_t n =
          ::pread(fd_, out.data() + done, out.size() - done, static_cast<off_t>(offset + done));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return ErrnoToStatus(errno, "read " + path_);
      if (n == 0)
        return DataLossError(path_ + ": ends before byte " + std::to_string(offset + out.size()));
      done += static_cast<size_t>(n);
    }
    return Status::Ok();
  }

 private:
  const int fd_;
  const std::string path_;
};

class PosixEnv final : public Env {
 public:
  StatusOr<std::unique_ptr<WritableFile>> NewWritableFile(const std::string& path) override {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return ErrnoToStatus(errno, "create " + path);
    return std::unique_ptr<WritableFile>(new PosixWritableFile(path, fd));
  }

  StatusOr<std::unique_ptr<WritableFile>> NewDirectWritableFile(const std::string& path) override {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_DIRECT, 0644);
    // File systems without O_DIRECT (tmpfs) refuse the open with EINVAL.
    if (fd < 0 && errno == EINVAL) return NewWritableFile(path);
    if (fd < 0) return ErrnoToStatus(errno, "create " + path);
    return std::unique_ptr<WritableFile>(new PosixDirectWritableFile(path, fd));
  }

  StatusOr<std::string> ReadFile(const std::string& path, uint64_t max_bytes) override {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return ErrnoToStatus(errno, "open " + path);
    struct stat st;
    if (::fstat(fd, &st) != 0) {
      const int err = errno;
      ::close(fd);
      return ErrnoToStatus(err, "stat " + path);
    }
    if (static_cast<uint64_t>(st.st_size) > max_bytes) {
      ::close(fd);
      return DataLossError(path + ": " + std::to_string(st.st_size) + " bytes, more than the " +
                           std::to_string(max_bytes) + " allowed");
    }
    std::string out(static_cast<size_t>(st.st_size), '\0');
    size_t done = 0;
    while (done < out.size()) {
      const ssize_t n = ::read(fd, out.data() + done, out.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        const int err = n < 0 ? errno : EIO;
        ::close(fd);
        return n < 0 ? ErrnoToStatus(err, "read " + path)
                     : DataLossError(path + ": shorter than its size while reading");
      }
      done += static_cast<size_t>(n);
    }
    ::close(fd);
    return out;
  }

  StatusOr<std::unique_ptr<RandomAccessFile>> NewRandomAccessFile(
      const std::string& path) override {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return ErrnoToStatus(errno, "open " + path);
    return std::unique_ptr<RandomAccessFile>(new PosixRandomAccessFile(fd, path));
  }

  StatusOr<uint64_t> FileSize(const std::string& path) override {
    struct stat st;
    if (::stat(path.c_str(), &st) != 0) return ErrnoToStatus(errno, "stat " + path);
    return static_cast<uint64_t>(st.st_size);
  }

  bool Exists(const std::string& path) override {
    struct stat st;
    return ::stat(path.c_str(), &st) == 0;
  }

  StatusOr<bool> IsDirectory(const std::string& path) override {
    struct stat st;
    if (::lstat(path.c_str(), &st) != 0) return ErrnoToStatus(errno, "lstat " + path);
    return S_ISDIR(st.st_mode);
  }

  StatusOr<std::vector<std::string>> ListDir(const std::string& path) override {
    DIR* dir = ::opendir(path.c_str());
    if (dir == nullptr) return ErrnoToStatus(errno, "list " + path);
    std::vector<std::string> names;
    while (const dirent* e = ::readdir(dir)) {
      const std::string name = e->d_name;
      if (name != "." && name != "..") names.push_back(name);
    }
    ::closedir(dir);
    return names;
  }

  Status CreateDir(const std::string& path) override {
    if (::mkdir(path.c_str(), 0755) == 0) return Status::Ok();
    if (errno != EEXIST) return ErrnoToStatus(errno, "mkdir " + path);
    struct stat st;
    if (::stat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
      return ErrnoToStatus(ENOTDIR, "mkdir " + path + " (exists and is not a directory)");
    }
    return Status::Ok();
  }

  StatusOr<std::unique_ptr<FileLock>> LockFile(const std::string& path,
                                               const std::string& holder) override {
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return ErrnoToStatus(errno, "create " + path);
    int rc;
    do rc = ::flock(fd, LOCK_EX | LOCK_NB);
    while (rc != 0 && errno == EINTR);
    if (rc != 0) {
      const int err = errno;
      if (err != EWOULDBLOCK) {
        ::close(fd);
        return ErrnoToStatus(err, "lock " + path);
      }
      // Held: its text says by whom (written right after its holder locked
      // it, so a reader may rarely see it empty).
      char text[512];
      const ssize_t n = ::pread(fd, text, sizeof text - 1, 0);
      ::close(fd);
      std::string who(text, n > 0 ? static_cast<size_t>(n) : 0);
      while (!who.empty() && (who.back() == '\n' || who.back() == '\0')) who.pop_back();
      return UnavailableError(who.empty() ? "another process (it has not said which)" : who);
    }
    const std::string line = holder + "\n";
    if (::ftruncate(fd, 0) != 0 ||
        ::pwrite(fd, line.data(), line.size(), 0) != static_cast<ssize_t>(line.size())) {
      const int err = errno;
      ::close(fd);
      return ErrnoToStatus(err, "write " + path);
    }
    return std::unique_ptr<FileLock>(new PosixFileLock(fd));
  }

  Status Rename(const std::string& from, const std::string& to) override {
    if (::rename(from.c_str(), to.c_str()) != 0) {
      return ErrnoToStatus(errno, "rename " + from + " -> " + to);
    }
    return Status::Ok();
  }

  Status SyncDir(const std::string& path) override {
    const int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return ErrnoToStatus(errno, "open directory " + path);
    const int rc = ::fsync(fd);
    const int err = errno;
    ::close(fd);
    if (rc != 0) return ErrnoToStatus(err, "fsync directory " + path);
    return Status::Ok();
  }

  Status RemoveFile(const std::string& path) override {
    if (::unlink(path.c_str()) != 0) return ErrnoToStatus(errno, "remove " + path);
    return Status::Ok();
  }

  Status RemoveDir(const std::string& path) override {
    if (::rmdir(path.c_str()) != 0) return ErrnoToStatus(errno, "rmdir " + path);
    return Status::Ok();
  }
};

}  // namespace

Env* Env::Default() {
  static PosixEnv env;
  return &env;
}

std::string JoinPath(const std::string& dir, const std::string& name) {
  if (dir.empty()) return name;
  return dir.back() == '/' ? dir + name : dir + "/" + name;
}

std::string ParentDir(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

Status AtomicWriteFile(Env* env, const std::string& path, std::span<const char> data,
                       Durability durability) {
  const bool durable = durability == Durability::kDurable;
  const std::string tmp = path + ".tmp";
  Status s = [&]() -> Status {
    HOLDFAST_ASSIGN_OR_RETURN(std::unique_ptr<WritableFile> file, env->NewWritableFile(tmp));
    HOLDFAST_RETURN_IF_ERROR(file->Append(data));
    if (durable) HOLDFAST_RETURN_IF_ERROR(file->Sync());
    HOLDFAST_RETURN_IF_ERROR(file->Close());
    HOLDFAST_RETURN_IF_ERROR(env->Rename(tmp, path));
    // Without this the rename itself may not survive a power cut (leveldb#195).
    return durable ? env->SyncDir(ParentDir(path)) : Status::Ok();
  }();
  if (!s.ok() && env->Exists(tmp)) (void)env->RemoveFile(tmp);
  return s;
}

Status RemoveTree(Env* env, const std::string& path) {
  HOLDFAST_ASSIGN_OR_RETURN(std::vector<std::string> names, env->ListDir(path));
  for (const std::string& name : names) {
    const std::string child = JoinPath(path, name);
    HOLDFAST_ASSIGN_OR_RETURN(const bool is_directory, env->IsDirectory(child));
    if (is_directory) {
      HOLDFAST_RETURN_IF_ERROR(RemoveTree(env, child));
    } else {
      HOLDFAST_RETURN_IF_ERROR(env->RemoveFile(child));
    }
  }
  return env->RemoveDir(path);
}

}  // namespace holdfast
