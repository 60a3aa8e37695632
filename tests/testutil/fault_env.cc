#include "tests/testutil/fault_env.h"

#include <algorithm>
#include <filesystem>
#include <limits>
#include <utility>

namespace holdfast::testing {
namespace {

constexpr uint64_t kNoLimit = std::numeric_limits<uint64_t>::max();

// "a//b/./c/" -> "a/b/c"; "" -> ".".
std::string Normalize(const std::string& path) {
  std::string p = std::filesystem::path(path).lexically_normal().string();
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  return p.empty() ? "." : p;
}

std::string ParentOf(const std::string& normalized) { return Normalize(ParentDir(normalized)); }

// Is `path` equal to `dir` or below it?
bool IsAtOrBelow(const std::string& path, const std::string& dir) {
  if (path == dir) return true;
  if (dir == "/") return path.size() > 1 && path[0] == '/';
  return path.size() > dir.size() && path.compare(0, dir.size(), dir) == 0 &&
         path[dir.size()] == '/';
}

// `path` (at or below `from`) with the `from` prefix replaced by `to`.
std::string Rebase(const std::string& path, const std::string& from, const std::string& to) {
  return to + path.substr(from.size());
}

const char* OpName(FaultInjectionEnv::Op op) {
  switch (op) {
    case FaultInjectionEnv::kNewWritableFile:
      return "NewWritableFile";
    case FaultInjectionEnv::kReadFile:
      return "ReadFile";
    case FaultInjectionEnv::kFileSize:
      return "FileSize";
    case FaultInjectionEnv::kExists:
      return "Exists";
    case FaultInjectionEnv::kListDir:
      return "ListDir";
    case FaultInjectionEnv::kCreateDir:
      return "CreateDir";
    case FaultInjectionEnv::kRename:
      return "Rename";
    case FaultInjectionEnv::kSyncDir:
      return "SyncDir";
    case FaultInjectionEnv::kRemoveFile:
      return "RemoveFile";
    case FaultInjectionEnv::kRemoveDir:
      return "RemoveDir";
    case FaultInjectionEnv::kAppend:
      return "Append";
    case FaultInjectionEnv::kSync:
      return "Sync";
    case FaultInjectionEnv::kClose:
      return "Close";
    case FaultInjectionEnv::kIsDirectory:
      return "IsDirectory";
  }
  return "?";
}

}  // namespace

// A WritableFile that reports to its Env. It keeps its FileState alive even if
// the name it was opened under is removed or replaced (then its writes no
// longer matter to PowerCut).
class FaultInjectionEnv::File final : public WritableFile {
 public:
  File(FaultInjectionEnv* env, std::string path, std::unique_ptr<WritableFile> base,
       std::shared_ptr<FileState> state, uint64_t generation)
      : env_(env),
        path_(std::move(path)),
        base_(std::move(base)),
        state_(std::move(state)),
        generation_(generation) {}

  Status Append(std::span<const char> data) override {
    std::lock_guard<std::mutex> lock(env_->mu_);
    HOLDFAST_RETURN_IF_ERROR(BeginLocked(kAppend));
    HOLDFAST_RETURN_IF_ERROR(base_->Append(data));
    state_->pos += data.size();
    return Status::Ok();
  }

  Status Sync() override {
    std::lock_guard<std::mutex> lock(env_->mu_);
    HOLDFAST_RETURN_IF_ERROR(BeginLocked(kSync));
    HOLDFAST_RETURN_IF_ERROR(base_->Sync());
    state_->synced = state_->pos;
    return Status::Ok();
  }

  Status Close() override {
    std::lock_guard<std::mutex> lock(env_->mu_);
    HOLDFAST_RETURN_IF_ERROR(BeginLocked(kClose));
    return base_->Close();
  }

 private:
  Status BeginLocked(Op op) {
    HOLDFAST_RETURN_IF_ERROR(env_->BeginLocked(op, path_));
    if (generation_ != env_->generation_) {
      return AbortedError(std::string(OpName(op)) + " " + path_ +
                          ": file was opened before a simulated power cut");
    }
    return Status::Ok();
  }

  FaultInjectionEnv* const env_;
  const std::string path_;
  const std::unique_ptr<WritableFile> base_;
  const std::shared_ptr<FileState> state_;
  const uint64_t generation_;
};

FaultInjectionEnv::FaultInjectionEnv(Env* base) : base_(base) {}
FaultInjectionEnv::~FaultInjectionEnv() = default;

Status FaultInjectionEnv::BeginLocked(Op op, const std::string& what) {
  const int64_t index = ops_++;
  const std::string desc = std::string(OpName(op)) + " " + what;
  if (crashed_ || (crash_at_ >= 0 && index >= crash_at_)) {
    if (!crashed_) {
      ++faults_;
      last_fault_ = desc;
    }
    crashed_ = true;
    return AbortedError("simulated crash: " + desc);
  }
  int err = 0;
  if (index == fail_at_) {
    err = fail_at_err_;
  } else if (fail_from_ >= 0 && index >= fail_from_ && (fail_from_ops_ & op) != 0) {
    err = fail_from_err_;
  }
  if (err == 0) return Status::Ok();
  ++faults_;
  last_fault_ = desc;
  return ErrnoToStatus(err, "injected fault: " + desc);
}

StatusOr<std::unique_ptr<WritableFile>> FaultInjectionEnv::NewWritableFile(
    const std::string& path) {
  std::lock_guard<std::mutex> lock(mu_);
  HOLDFAST_RETURN_IF_ERROR(BeginLocked(kNewWritableFile, path));
  const std::string key = Normalize(path);
  const bool existed = base_->Exists(path);
  HOLDFAST_ASSIGN_OR_RETURN(std::unique_ptr<WritableFile> file, base_->NewWritableFile(path));
  if (!existed) pending_.emplace_back(DirOp::kCreatedFile, key, ParentOf(key));
  auto state = std::make_shared<FileState>();
  files_[key] = state;
  return std::unique_ptr<WritableFile>(
      new File(this, path, std::move(file), std::move(state), generation_));
}

StatusOr<std::string> FaultInjectionEnv::ReadFile(const std::string& path, uint64_t max_bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  HOLDFAST_RETURN_IF_ERROR(BeginLocked(kReadFile, path));
  StatusOr<std::string> content = base_->ReadFile(path, max_bytes);
  if (content.ok()) reads_.push_back({path, 0, content->size()});
  return content;
}

class FaultInjectionEnv::RandomAccess final : public RandomAccessFile {
 public:
  RandomAccess(FaultInjectionEnv* env, std::string path, std::unique_ptr<RandomAccessFile> file)
      : env_(env), path_(std::move(path)), file_(std::move(file)) {}

  Status Read(uint64_t offset, std::span<char> out) override {
    std::lock_guard<std::mutex> lock(env_->mu_);
    HOLDFAST_RETURN_IF_ERROR(env_->BeginLocked(kReadFile, path_));
    HOLDFAST_RETURN_IF_ERROR(file_->Read(offset, out));
    env_->reads_.push_back({path_, offset, out.size()});
    return Status::Ok();
  }

 private:
  FaultInjectionEnv* const env_;
  const std::string path_;
  const std::unique_ptr<RandomAccessFile> file_;
};

StatusOr<std::unique_ptr<RandomAccessFile>> FaultInjectionEnv::NewRandomAccessFile(
    const std::string& path) {
  std::lock_guard<std::mutex> lock(mu_);
  HOLDFAST_RETURN_IF_ERROR(BeginLocked(kReadFile, path));
  HOLDFAST_ASSIGN_OR_RETURN(std::unique_ptr<RandomAccessFile> file,
                            base_->NewRandomAccessFile(path));
  return std::unique_ptr<RandomAccessFile>(new RandomAccess(this, path, std::move(file)));
}

std::vector<FaultInjectionEnv::Read> FaultInjectionEnv::reads() const {
  std::lock_guard<std::mutex> lock(mu_);
  return reads_;
}

StatusOr<uint64_t> FaultInjectionEnv::FileSize(const std::string& path) {
  std::lock_guard<std::mutex> lock(mu_);
  HOLDFAST_RETURN_IF_ERROR(BeginLocked(kFileSize, path));
  return base_->FileSize(path);
}

bool FaultInjectionEnv::Exists(const std::string& path) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!BeginLocked(kExists, path).ok()) return false;
  return base_->Exists(path);
}

StatusOr<bool> FaultInjectionEnv::IsDirectory(const std::string& path) {
  std::lock_guard<std::mutex> lock(mu_);
  HOLDFAST_RETURN_IF_ERROR(BeginLocked(kIsDirectory, path));
  return base_->IsDirectory(path);
}

StatusOr<std::vector<std::string>> FaultInjectionEnv::ListDir(const std::string& path) {
  std::lock_guard<std::mutex> lock(mu_);
  HOLDFAST_RETURN_IF_ERROR(BeginLocked(kListDir, path));
  return base_->ListDir(path);
}

Status FaultInjectionEnv::CreateDir(const std::string& path) {
  std::lock_guard<std::mutex> lock(mu_);
  HOLDFAST_RETURN_IF_ERROR(BeginLocked(kCreateDir, path));
  const bool existed = base_->Exists(path);
  HOLDFAST_RETURN_IF_ERROR(base_->CreateDir(path));
  if (!existed) {
    const std::string key = Normalize(path);
    pending_.emplace_back(DirOp::kCreatedDir, key, ParentOf(key));
  }
  return Status::Ok();
}

Status FaultInjectionEnv::Rename(const std::string& from, const std::string& to) {
  std::lock_guard<std::mutex> lock(mu_);
  HOLDFAST_RETURN_IF_ERROR(BeginLocked(kRename, from + " -> " + to));
  const std::string from_key = Normalize(from);
  const std::string to_key = Normalize(to);
  DirOp op(DirOp::kRenamed, from_key, ParentOf(from_key));
  op.to = to_key;
  // What `to` holds now must come back if the rename is undone.
  if (from_key != to_key && base_->Exists(to)) {
    if (base_->ListDir(to).ok()) {
      op.replaced = DirOp::kEmptyDir;  // rename(2) replaces only an empty directory
    } else {
      HOLDFAST_ASSIGN_OR_RETURN(op.content, DurableContentLocked(to_key));
      op.replaced = DirOp::kFile;
    }
  }
  HOLDFAST_RETURN_IF_ERROR(base_->Rename(from, to));
  if (from_key == to_key) return Status::Ok();
  RenameTrackedLocked(from_key, to_key);
  if (ParentOf(to_key) != ParentOf(from_key)) op.pending_dirs.push_back(ParentOf(to_key));
  pending_.push_back(std::move(op));
  return Status::Ok();
}

Status FaultInjectionEnv::SyncDir(const std::string& path) {
  std::lock_guard<std::mutex> lock(mu_);
  HOLDFAST_RETURN_IF_ERROR(BeginLocked(kSyncDir, path));
  HOLDFAST_RETURN_IF_ERROR(base_->SyncDir(path));
  const std::string key = Normalize(path);
  for (DirOp& op : pending_) std::erase(op.pending_dirs, key);
  std::erase_if(pending_, [](const DirOp& op) { return op.pending_dirs.empty(); });
  return Status::Ok();
}

Status FaultInjectionEnv::RemoveFile(const std::string& path) {
  std::lock_guard<std::mutex> lock(mu_);
  HOLDFAST_RETURN_IF_ERROR(BeginLocked(kRemoveFile, path));
  const std::string key = Normalize(path);
  // Read what may have to come back first; a file that cannot be read (missing,
  // a directory) will not be removed either, and the base call says why.
  StatusOr<std::string> content = DurableContentLocked(key);
  HOLDFAST_RETURN_IF_ERROR(base_->RemoveFile(path));
  if (!content.ok()) return content.status();  // removed, but cannot be restored: say so
  pending_.emplace_back(DirOp::kRemovedFile, key, ParentOf(key));
  pending_.back().content = std::move(content).value();
  files_.erase(key);
  return Status::Ok();
}

Status FaultInjectionEnv::RemoveDir(const std::string& path) {
  std::lock_guard<std::mutex> lock(mu_);
  HOLDFAST_RETURN_IF_ERROR(BeginLocked(kRemoveDir, path));
  HOLDFAST_RETURN_IF_ERROR(base_->RemoveDir(path));
  const std::string key = Normalize(path);
  pending_.emplace_back(DirOp::kRemovedDir, key, ParentOf(key));
  return Status::Ok();
}

int64_t FaultInjectionEnv::operations() const {
  std::lock_guard<std::mutex> lock(mu_);
  return ops_;
}

int64_t FaultInjectionEnv::faults_injected() const {
  std::lock_guard<std::mutex> lock(mu_);
  return faults_;
}

std::string FaultInjectionEnv::last_fault() const {
  std::lock_guard<std::mutex> lock(mu_);
  return last_fault_;
}

void FaultInjectionEnv::FailAt(int64_t n, int err) {
  std::lock_guard<std::mutex> lock(mu_);
  fail_at_ = ops_ + n;
  fail_at_err_ = err;
}

void FaultInjectionEnv::FailFrom(int64_t n, int err, uint32_t ops) {
  std::lock_guard<std::mutex> lock(mu_);
  fail_from_ = ops_ + n;
  fail_from_err_ = err;
  fail_from_ops_ = ops;
}

void FaultInjectionEnv::CrashAt(int64_t n) {
  std::lock_guard<std::mutex> lock(mu_);
  crash_at_ = ops_ + n;
}

bool FaultInjectionEnv::crashed() const {
  std::lock_guard<std::mutex> lock(mu_);
  return crashed_;
}

void FaultInjectionEnv::ClearFaults() {
  std::lock_guard<std::mutex> lock(mu_);
  fail_at_ = -1;
  fail_from_ = -1;
  crash_at_ = -1;
  crashed_ = false;
}

StatusOr<std::string> FaultInjectionEnv::DurableContentLocked(const std::string& path) {
  HOLDFAST_ASSIGN_OR_RETURN(std::string content, base_->ReadFile(path, kNoLimit));
  const auto it = files_.find(path);
  if (it != files_.end() && it->second->synced < content.size()) {
    content.resize(it->second->synced);
  }
  return content;
}

void FaultInjectionEnv::RenameTrackedLocked(const std::string& from, const std::string& to) {
  files_.erase(to);  // a replaced file's writes no longer matter
  // `from` may be a directory: everything tracked below it moves along.
  std::map<std::string, std::shared_ptr<FileState>> moved;
  for (auto it = files_.begin(); it != files_.end();) {
    if (IsAtOrBelow(it->first, from)) {
      moved[Rebase(it->first, from, to)] = std::move(it->second);
      it = files_.erase(it);
    } else {
      ++it;
    }
  }
  for (auto& [path, state] : moved) files_[path] = std::move(state);
  for (DirOp& op : pending_) {
    for (std::string& dir : op.pending_dirs) {
      if (IsAtOrBelow(dir, from)) dir = Rebase(dir, from, to);
    }
  }
}

Status FaultInjectionEnv::WriteWholeFileLocked(const std::string& path,
                                               const std::string& content) {
  HOLDFAST_ASSIGN_OR_RETURN(std::unique_ptr<WritableFile> file, base_->NewWritableFile(path));
  HOLDFAST_RETURN_IF_ERROR(file->Append(content));
  HOLDFAST_RETURN_IF_ERROR(file->Sync());
  return file->Close();
}

// Not checkpoint's RemoveTree: this one never follows a symlink (unlink
// removes the link; only a real directory refuses unlink and is descended).
Status FaultInjectionEnv::RemoveTreeNoFollowLocked(const std::string& path) {
  if (base_->RemoveFile(path).ok()) return Status::Ok();
  HOLDFAST_ASSIGN_OR_RETURN(std::vector<std::string> names, base_->ListDir(path));
  for (const std::string& name : names) {
    HOLDFAST_RETURN_IF_ERROR(RemoveTreeNoFollowLocked(JoinPath(path, name)));
  }
  return base_->RemoveDir(path);
}

Status FaultInjectionEnv::UndoLocked(const DirOp& op) {
  // The directory that would hold the restored entry is gone for good.
  const std::string parent = ParentOf(op.path);
  switch (op.kind) {
    case DirOp::kCreatedFile:
      if (!base_->Exists(op.path)) return Status::Ok();
      return base_->RemoveFile(op.path);
    case DirOp::kCreatedDir:
      if (!base_->Exists(op.path)) return Status::Ok();
      return RemoveTreeNoFollowLocked(op.path);
    case DirOp::kRenamed:
      if (!base_->Exists(parent) || !base_->Exists(op.to)) return Status::Ok();
      HOLDFAST_RETURN_IF_ERROR(base_->Rename(op.to, op.path));
      if (op.replaced == DirOp::kFile) return WriteWholeFileLocked(op.to, op.content);
      if (op.replaced == DirOp::kEmptyDir) return base_->CreateDir(op.to);
      return Status::Ok();
    case DirOp::kRemovedFile:
      if (!base_->Exists(parent)) return Status::Ok();
      return WriteWholeFileLocked(op.path, op.content);
    case DirOp::kRemovedDir:
      if (!base_->Exists(parent)) return Status::Ok();
      return base_->CreateDir(op.path);
  }
  return Status::Ok();
}

Status FaultInjectionEnv::PowerCut() {
  std::lock_guard<std::mutex> lock(mu_);
  Status first_error;
  auto note = [&first_error](const Status& s, const std::string& context) {
    if (!s.ok() && first_error.ok()) first_error = s.WithContext("PowerCut: " + context);
  };
  // Data first, under the names files have now; then names, newest first.
  for (const auto& [path, state] : files_) {
    StatusOr<uint64_t> size = base_->FileSize(path);
    if (!size.ok() || *size <= state->synced) continue;
    StatusOr<std::string> content = base_->ReadFile(path, kNoLimit);
    note(content.status(), "read " + path);
    if (!content.ok()) continue;
    content->resize(state->synced);
    note(WriteWholeFileLocked(path, *content), "truncate " + path);
  }
  for (auto it = pending_.rbegin(); it != pending_.rend(); ++it) {
    note(UndoLocked(*it), "undo change of " + it->path);
  }
  files_.clear();
  pending_.clear();
  ++generation_;
  fail_at_ = -1;
  fail_from_ = -1;
  crash_at_ = -1;
  crashed_ = false;
  return first_error;
}

}  // namespace holdfast::testing
