// A real full disk: checkpoints into a 1 MiB tmpfs that a filler file has
// nearly exhausted. The save that hits ENOSPC must fail cleanly (one error,
// no prepare area left behind) and leave the previous checkpoint committed
// and restorable; once space is back, saving works again. (The fault Env
// tests cover every other error code at every call; this one checks that the
// kernel's own ENOSPC takes the same path.)
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "checkpoint/manager.h"
#include "core/fit.h"
#include "distribute/communicator.h"
#include "tests/testutil/checkpoint_helpers.h"
#include "tests/testutil/models.h"
#include "tests/testutil/testutil.h"

namespace holdfast {
namespace {

namespace fs = std::filesystem;

// A tmpfs of `bytes` mounted on a fresh directory, unmounted at the end.
class SmallFilesystem {
 public:
  explicit SmallFilesystem(size_t bytes) {
    const std::string options = "size=" + std::to_string(bytes);
    if (mount("tmpfs", dir_.path().c_str(), "tmpfs", 0, options.c_str()) != 0) {
      error_ = std::string("mount tmpfs: ") + std::strerror(errno);
    }
  }
  ~SmallFilesystem() {
    if (error_.empty()) umount2(dir_.path().c_str(), MNT_DETACH);
  }
  const std::string& error() const { return error_; }
  std::string path() const { return dir_.path(); }

 private:
  TempDir dir_;
  std::string error_;
};

// Writes `path` until the filesystem is full; returns the bytes written.
size_t FillUp(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) return 0;
  std::setvbuf(f, nullptr, _IONBF, 0);
  const std::vector<char> chunk(4096, 'x');
  size_t written = 0;
  while (std::fwrite(chunk.data(), 1, chunk.size(), f) == chunk.size()) written += chunk.size();
  std::fclose(f);
  return written;
}

TEST(FullDiskTest, ASaveThatRunsOutOfSpaceLeavesThePreviousCheckpoint) {
  if (geteuid() != 0) GTEST_SKIP() << "mounting a tmpfs needs root (CI runs as root)";
  SmallFilesystem disk(1 << 20);
  ASSERT_TRUE(disk.error().empty()) << disk.error();
  const std::string dir = disk.path() + "/ckpt";

  LocalCommunicator comm;
  // ~29k parameters and Adam's two slots: a ~350 KB checkpoint.
  Trainee t = MakeClassifier(5, /*dropout=*/false, /*adam=*/true, /*hidden=*/4096);
  Checkpoint checkpoint(t.model.get(), t.optimizer.get());
  CheckpointManager manager(&checkpoint, &comm, {.directory = dir, .max_to_keep = 2});
  const Dataset data = MakeBlobs(64, 3);
  FitOptions options;
  options.batch_size = 32;
  Fit(*t.model, *t.optimizer, SoftmaxCrossEntropy(), data, options);
  ASSERT_OK(manager.Save());
  const int64_t committed_step = checkpoint.step();
  const std::vector<float> committed = Flat(t);

  // Leave less free space than one checkpoint needs.
  const std::string filler = disk.path() + "/filler";
  ASSERT_GT(FillUp(filler), 0u);
  fs::resize_file(filler, fs::file_size(filler) - 64 * 1024);

  Fit(*t.model, *t.optimizer, SoftmaxCrossEntropy(), data, options);
  ASSERT_NE(Flat(t), committed);
  const Status full = manager.Save();
  ASSERT_FALSE(full.ok()) << "the save fit into 64 KiB?";
  EXPECT_EQ(full.code(), StatusCode::kAborted) << full.ToString();
  EXPECT_NE(full.message().find("No space left on device"), std::string::npos) << full.ToString();
  EXPECT_TRUE(PrepareAreas(dir).empty()) << "the failed save left its prepare area";
  ASSERT_EQ(manager.Checkpoints().size(), 1u);
  EXPECT_EQ(manager.Latest()->step, committed_step);

  // A fresh process restores the committed state.
  Trainee fresh = MakeClassifier(77, false, true, 4096);
  Checkpoint fresh_checkpoint(fresh.model.get(), fresh.optimizer.get());
  CheckpointManager reader(&fresh_checkpoint, &comm, {.directory = dir});
  auto restored = reader.RestoreLatest();
  ASSERT_OK(restored);
  ASSERT_TRUE(restored->has_value());
  EXPECT_EQ(**restored, committed_step);
  EXPECT_EQ(Flat(fresh), committed);

  // Space is back: the next save commits.
  fs::remove(filler);
  ASSERT_OK(manager.Save());
  EXPECT_EQ(manager.Latest()->step, checkpoint.step());
  EXPECT_EQ(manager.Checkpoints().size(), 2u);
}

}  // namespace
}  // namespace holdfast
