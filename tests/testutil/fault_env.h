// FaultInjectionEnv: an Env for tests that wraps a real one and can fail or
// "crash" any single call, and simulate a power cut that throws away whatever
// was not made durable (after LevelDB's db/fault_injection_test.cc).
//
// Operations. Every call of an Env method on this object (Exists and ListDir
// included) and every Append, Sync and Close of a WritableFile it returned is
// one operation, numbered from 0 in call order across all threads. The
// destructor of a WritableFile is not an operation (it closes the real file
// quietly). Calls this class makes on the base Env for its own bookkeeping
// are not operations.
//
// Faults. FailAt / FailFrom / CrashAt take an index relative to "now"
// (operations() at the time of the call). A failing operation does nothing
// and returns ErrnoToStatus(err, "injected fault: <op> <path>"); a crashed one
// does nothing and returns Aborted "simulated crash: <op> <path>". Exists()
// answers false when it fails or after a crash.
//
// Power-cut model (PowerCut()). Strict, as on ext4 without auto_da_alloc and
// without a directory fsync; it is what a program may rely on per POSIX:
//  * File data: every file this Env opened for writing is cut to the length it
//    had at its last successful Sync() (0 if never synced). Truncating an
//    existing file with NewWritableFile and not syncing the new data leaves an
//    empty file, not the old content.
//  * Directory entries: each creation (NewWritableFile of a new name,
//    CreateDir of a new directory), Rename and removal (RemoveFile, RemoveDir)
//    stays pending until SyncDir() of the directory that holds the entry
//    succeeds (for a Rename across directories: of both directories). On
//    PowerCut the pending ones are undone, newest first: a created file or
//    directory (with everything below it) vanishes even if its data was
//    synced; a renamed entry goes back to its old name and the file or empty
//    directory it replaced comes back; a removed file comes back with its
//    durable content, a removed directory comes back empty. An undo whose
//    parent directory no longer exists is skipped (that removal was durable).
//  * Renaming a directory carries the pending state of everything below it to
//    the new name (the two-phase commit renames its prepare directory).
// Not modelled: reordering between data and metadata beyond the above (a
// synced file whose name is durable never loses synced bytes; unsynced bytes
// never partly survive, no torn sectors or garbage tails); file timestamps
// and modes; hard links and symlinks; writes through a WritableFile to a file
// whose name was removed or replaced meanwhile (they are ignored); files this
// Env did not write are taken as durable as they are. Content that a rename or
// removal may have to restore is copied into memory at the time of the call,
// so keep test files small. Paths are compared after lexical normalisation
// ("a//b/./c" == "a/b/c"); use one consistent form (all absolute, say).
//
// Thread-safe: one mutex serialises every operation, base call included, so
// in-process ranks can share one FaultInjectionEnv. The base Env must outlive
// this object; WritableFiles it returned must not outlive it.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "checkpoint/env.h"
#include "core/status.h"

namespace holdfast::testing {

class FaultInjectionEnv final : public Env {
 public:
  // Kinds of operation, as bits for FailFrom's mask.
  enum Op : uint32_t {
    kNewWritableFile = 1u << 0,
    kReadFile = 1u << 1,
    kFileSize = 1u << 2,
    kExists = 1u << 3,
    kListDir = 1u << 4,
    kCreateDir = 1u << 5,
    kRename = 1u << 6,
    kSyncDir = 1u << 7,
    kRemoveFile = 1u << 8,
    kRemoveDir = 1u << 9,
    kAppend = 1u << 10,
    kSync = 1u << 11,
    kClose = 1u << 12,
    kIsDirectory = 1u << 13,
  };
  static constexpr uint32_t kAllOps = (1u << 14) - 1;
  // What a full disk refuses; reading, listing and removing still work.
  static constexpr uint32_t kDiskFullOps =
      kNewWritableFile | kCreateDir | kRename | kAppend | kSync;

  explicit FaultInjectionEnv(Env* base = Env::Default());
  ~FaultInjectionEnv() override;
  FaultInjectionEnv(const FaultInjectionEnv&) = delete;
  FaultInjectionEnv& operator=(const FaultInjectionEnv&) = delete;

  // Env.
  StatusOr<std::unique_ptr<WritableFile>> NewWritableFile(const std::string& path) override;
  StatusOr<std::string> ReadFile(const std::string& path, uint64_t max_bytes) override;
  // Opening is a kReadFile operation; each Read is one too.
  StatusOr<std::unique_ptr<RandomAccessFile>> NewRandomAccessFile(const std::string& path) override;
  StatusOr<uint64_t> FileSize(const std::string& path) override;
  bool Exists(const std::string& path) override;
  StatusOr<bool> IsDirectory(const std::string& path) override;
  StatusOr<std::vector<std::string>> ListDir(const std::string& path) override;
  Status CreateDir(const std::string& path) override;
  Status Rename(const std::string& from, const std::string& to) override;
  Status SyncDir(const std::string& path) override;
  Status RemoveFile(const std::string& path) override;
  Status RemoveDir(const std::string& path) override;
  // Passed on, never failed or counted: the lock is not the checkpoint's
  // data, and a crashed run's lock is dropped by the kernel, not the disk.
  StatusOr<std::unique_ptr<FileLock>> LockFile(const std::string& path,
                                               const std::string& holder) override {
    return base_->LockFile(path, holder);
  }

  // Every read that succeeded: ReadFile (a whole file from 0) and
  // RandomAccessFile::Read, in call order. For counting what a restore reads.
  struct Read {
    std::string path;
    uint64_t offset = 0, bytes = 0;
  };
  std::vector<Read> reads() const;

  // Operations started so far (failed and crashed ones included).
  int64_t operations() const;
  // Operations that failed or crashed because of FailAt/FailFrom/CrashAt.
  int64_t faults_injected() const;
  // "<op> <path>" of the most recent injected fault, "" if none.
  std::string last_fault() const;

  // The operation `n` from now (0 = the next one) fails with errno `err`; the
  // one after it runs normally. Replaces an earlier FailAt.
  void FailAt(int64_t n, int err);
  // Every operation of a kind in `ops`, from `n` from now on, fails with errno
  // `err` (a disk that stays full or broken). Replaces an earlier FailFrom.
  void FailFrom(int64_t n, int err, uint32_t ops = kAllOps);
  // The process "dies" at operation `n` from now: it and every later one
  // return Aborted and do nothing, until PowerCut() or ClearFaults().
  void CrashAt(int64_t n);
  bool crashed() const;
  // Cancels pending FailAt/FailFrom/CrashAt and revives a crashed Env.
  void ClearFaults();

  // Simulates losing power now (see the model above) through the base Env,
  // then forgets all pending state and faults, so this Env starts afresh over
  // what survived. WritableFiles opened before fail (Aborted) from then on.
  // Returns the first error the base Env gave while rolling back (a test bug
  // or a broken disk); the rollback goes on past it.
  Status PowerCut();

 private:
  class File;
  class RandomAccess;
  struct FileState {
    uint64_t pos = 0;     // bytes appended since the file was opened
    uint64_t synced = 0;  // pos at the last successful Sync
  };
  // One directory change not yet made durable by SyncDir.
  struct DirOp {
    enum Kind { kCreatedFile, kCreatedDir, kRenamed, kRemovedFile, kRemovedDir };
    DirOp(Kind k, std::string p, std::string pending_dir)
        : kind(k), path(std::move(p)), pending_dirs{std::move(pending_dir)} {}
    Kind kind;
    std::string path;                       // the created or removed entry; a rename's source
    std::string to;                         // a rename's target
    std::vector<std::string> pending_dirs;  // SyncDir of each of these (current names) is needed
    enum Replaced { kNothing, kFile, kEmptyDir } replaced = kNothing;  // what `to` was before
    std::string content;  // durable content of the replaced or removed file
  };

  // Counts one operation and decides its fate; returns non-OK if it must fail.
  Status BeginLocked(Op op, const std::string& what);
  // Content of `path` that would survive a power cut now (tracked files are
  // cut at their synced length).
  StatusOr<std::string> DurableContentLocked(const std::string& path);
  void RenameTrackedLocked(const std::string& from, const std::string& to);
  Status UndoLocked(const DirOp& op);
  Status WriteWholeFileLocked(const std::string& path, const std::string& content);
  Status RemoveTreeNoFollowLocked(const std::string& path);

  Env* const base_;
  mutable std::mutex mu_;
  int64_t ops_ = 0;
  std::vector<Read> reads_;
  int64_t faults_ = 0;
  std::string last_fault_;
  int64_t fail_at_ = -1;
  int fail_at_err_ = 0;
  int64_t fail_from_ = -1;
  int fail_from_err_ = 0;
  uint32_t fail_from_ops_ = 0;
  int64_t crash_at_ = -1;
  bool crashed_ = false;
  uint64_t generation_ = 0;  // bumped by PowerCut; older files are dead
  std::map<std::string, std::shared_ptr<FileState>> files_;  // by current normalised path
  std::vector<DirOp> pending_;                               // oldest first
};

}  // namespace holdfast::testing
