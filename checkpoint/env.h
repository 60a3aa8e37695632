// Env: every file-system call the checkpoint subsystem makes goes through
// this small seam (as LevelDB's Env), so tests can fail or "crash" any call
// and simulate a power cut that drops unsynced data (FaultInjectionEnv).
//
// Paths are plain strings; errors are Status values naming the path, with
// codes from the errno (ENOSPC -> ResourceExhausted, EACCES -> PermissionDenied,
// ENOENT -> NotFound, ...). Implementations are thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/status.h"

namespace holdfast {

// A file being written. Data is durable only after Sync() returned OK.
class WritableFile {
 public:
  virtual ~WritableFile() = default;
  virtual Status Append(std::span<const char> data) = 0;
  virtual Status Sync() = 0;   // fsync
  virtual Status Close() = 0;  // also run by the destructor, errors ignored there
};

// A file read at chosen offsets (pread), by one thread at a time.
class RandomAccessFile {
 public:
  virtual ~RandomAccessFile() = default;
  // Reads exactly out.size() bytes from `offset` on; DataLoss if the file
  // ends first.
  virtual Status Read(uint64_t offset, std::span<char> out) = 0;
};

// An exclusive lock on a file, held until it is destroyed (LevelDB's
// FileLock); the kernel also drops it when the holding process dies.
class FileLock {
 public:
  virtual ~FileLock() = default;
};

// A multiple of every logical block size: memory and file offsets aligned
// to it can be written past the page cache (Env::NewDirectWritableFile).
inline constexpr size_t kDirectIoAlignment = 4096;

class Env {
 public:
  virtual ~Env() = default;

  // Creates or truncates `path` for writing.
  virtual StatusOr<std::unique_ptr<WritableFile>> NewWritableFile(const std::string& path) = 0;
  // The same for a large file written once, front to back, by a thread that
  // shares the cores with other work: its data may bypass the page cache
  // (O_DIRECT), which costs more wall time but far less CPU. Appended memory
  // that starts at the same offset within a kDirectIoAlignment block as the
  // file's end goes to the device as it is; the rest is staged. By default
  // an ordinary NewWritableFile.
  virtual StatusOr<std::unique_ptr<WritableFile>> NewDirectWritableFile(const std::string& path) {
    return NewWritableFile(path);
  }
  // Reads a whole file; a file larger than `max_bytes` is an error (checked
  // before anything is allocated).
  virtual StatusOr<std::string> ReadFile(const std::string& path, uint64_t max_bytes) = 0;
  // Opens `path` for reads at any offset, straight into the caller's memory.
  virtual StatusOr<std::unique_ptr<RandomAccessFile>> NewRandomAccessFile(
      const std::string& path) = 0;
  virtual StatusOr<uint64_t> FileSize(const std::string& path) = 0;
  virtual bool Exists(const std::string& path) = 0;
  // True for a real directory; false for files and for symbolic links,
  // whatever they point to (lstat). NotFound if nothing is there.
  virtual StatusOr<bool> IsDirectory(const std::string& path) = 0;
  // Names in a directory (no "." or ".."), in no particular order.
  virtual StatusOr<std::vector<std::string>> ListDir(const std::string& path) = 0;
  // Creates a directory; OK if a directory exists there already (a file of
  // that name is an error). Parents must exist.
  virtual Status CreateDir(const std::string& path) = 0;
  // Atomically replaces `to` with `from` (rename(2)); not durable until the
  // parent directory is synced.
  virtual Status Rename(const std::string& from, const std::string& to) = 0;
  // fsync of a directory: makes creations, renames and removals in it durable.
  virtual Status SyncDir(const std::string& path) = 0;
  virtual Status RemoveFile(const std::string& path) = 0;
  virtual Status RemoveDir(const std::string& path) = 0;  // must be empty
  // Creates `path` if needed and takes an exclusive advisory lock on it
  // (flock; not inherited by exec'd children), then writes `holder` into it
  // so that others can say who holds it. Unavailable when another open file
  // holds the lock: the message is the file's text (its holder's line).
  virtual StatusOr<std::unique_ptr<FileLock>> LockFile(const std::string& path,
                                                       const std::string& holder) = 0;

  // The process-wide POSIX implementation (one of holdfast's two globals).
  static Env* Default();
};

// An Env that passes every call to another (LevelDB's EnvWrapper): an Env
// that changes a few calls (timing, faults, slow disks) overrides only those.
// NewDirectWritableFile is not passed on: it stays the default, this Env's
// NewWritableFile, so a wrapper that changes how files are written sees them
// all.
class EnvWrapper : public Env {
 public:
  explicit EnvWrapper(Env* base) : base_(base) {}
  StatusOr<std::unique_ptr<WritableFile>> NewWritableFile(const std::string& path) override {
    return base_->NewWritableFile(path);
  }
  StatusOr<std::string> ReadFile(const std::string& path, uint64_t max_bytes) override {
    return base_->ReadFile(path, max_bytes);
  }
  StatusOr<std::unique_ptr<RandomAccessFile>> NewRandomAccessFile(
      const std::string& path) override {
    return base_->NewRandomAccessFile(path);
  }
  StatusOr<uint64_t> FileSize(const std::string& path) override { return base_->FileSize(path); }
  bool Exists(const std::string& path) override { return base_->Exists(path); }
  StatusOr<bool> IsDirectory(const std::string& path) override { return base_->IsDirectory(path); }
  StatusOr<std::vector<std::string>> ListDir(const std::string& path) override {
    return base_->ListDir(path);
  }
  Status CreateDir(const std::string& path) override { return base_->CreateDir(path); }
  Status Rename(const std::string& from, const std::string& to) override {
    return base_->Rename(from, to);
  }
  Status SyncDir(const std::string& path) override { return base_->SyncDir(path); }
  Status RemoveFile(const std::string& path) override { return base_->RemoveFile(path); }
  Status RemoveDir(const std::string& path) override { return base_->RemoveDir(path); }
  StatusOr<std::unique_ptr<FileLock>> LockFile(const std::string& path,
                                               const std::string& holder) override {
    return base_->LockFile(path, holder);
  }

 protected:
  Env* base() const { return base_; }

 private:
  Env* const base_;
};

enum class Durability {
  kDurable,  // survives a power cut once the call returned
  // Atomic for readers, but a power cut may undo it or (on file systems
  // without ext4's auto_da_alloc) leave the file empty: for hints that are
  // checked anyway, such as LATEST, at no fsync.
  kHint,
};

// Writes `data` to `path` atomically: write `path`.tmp, (fsync,) close,
// rename onto `path`, (fsync the parent directory); the tmp file is removed
// on failure. Readers see either the old or the new content.
Status AtomicWriteFile(Env* env, const std::string& path, std::span<const char> data,
                       Durability durability = Durability::kDurable);

// Removes a directory and everything below it (files and subdirectories).
// Symbolic links are removed, never followed.
Status RemoveTree(Env* env, const std::string& path);

// "a/b" + "c" -> "a/b/c"; parent of "a/b/c" -> "a/b" ("." for "c").
std::string JoinPath(const std::string& dir, const std::string& name);
std::string ParentDir(const std::string& path);

}  // namespace holdfast
