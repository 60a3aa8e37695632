// One job per checkpoint directory: LockDirectory against a lock held by
// another open file (as another process holds it: flock locks belong to an
// open file), paths that cannot hold checkpoints, and the sharing within one
// process. The two-process case with real jobs and kill -9 is in
// tests/examples/fmnist_mlp_test.cc.
#include "checkpoint/directory_lock.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include "tests/testutil/testutil.h"

namespace holdfast {
namespace {

namespace fs = std::filesystem;

// DIR/LOCK opened and locked the way another job's process holds it.
class ForeignHolder {
 public:
  ForeignHolder(const std::string& dir, const std::string& line) {
    fs::create_directories(dir);
    fd_ = ::open((dir + "/LOCK").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    EXPECT_GE(fd_, 0) << std::strerror(errno);
    EXPECT_EQ(::flock(fd_, LOCK_EX | LOCK_NB), 0) << std::strerror(errno);
    EXPECT_EQ(::ftruncate(fd_, 0), 0);
    EXPECT_EQ(::pwrite(fd_, line.data(), line.size(), 0), static_cast<ssize_t>(line.size()));
  }
  ~ForeignHolder() { Release(); }
  void Release() {  // as the kernel does when the holder dies
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

// Whether another open file could take DIR/LOCK right now.
bool FreeForOthers(const std::string& dir) {
  const int fd = ::open((dir + "/LOCK").c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) return false;
  const bool free = ::flock(fd, LOCK_EX | LOCK_NB) == 0;
  ::close(fd);
  return free;
}

TEST(LockDirectoryTest, AnotherJobsLockIsRefusedNamingItAndTakenOverOnceItIsGone) {
  TempDir tmp;
  const std::string dir = tmp.File("run1");
  ForeignHolder other(dir, "host n1, pid 4242, SLURM job 117, since 2026-12-06T15:02:11Z\n");
  auto refused = LockDirectory(Env::Default(), dir, "host me, pid 1");
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(refused.status().message(),
            dir +
                " is in use by another job: host n1, pid 4242, SLURM job 117, since "
                "2026-12-06T15:02:11Z");

  other.Release();  // its process died (kill -9 included)
  auto taken = LockDirectory(Env::Default(), dir, "host me, pid 1");
  ASSERT_TRUE(taken.ok()) << taken.status().ToString();
  EXPECT_EQ(ReadFileToString(dir + "/LOCK"), "host me, pid 1\n");
  EXPECT_FALSE(FreeForOthers(dir));
  taken->reset();
  EXPECT_TRUE(FreeForOthers(dir));
}

TEST(LockDirectoryTest, OneProcessSharesItsLockAndReleasesItWithTheLastHolder) {
  TempDir tmp;
  const std::string dir = tmp.File("a/b/run");  // missing parents are made
  auto first = LockDirectory(Env::Default(), dir, "first");
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  EXPECT_TRUE(fs::is_directory(dir));
  auto second = LockDirectory(Env::Default(), dir + "/", "second");
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  EXPECT_EQ(first->get(), second->get());
  EXPECT_EQ(ReadFileToString(dir + "/LOCK"), "first\n");
  first->reset();
  EXPECT_FALSE(FreeForOthers(dir));
  second->reset();
  EXPECT_TRUE(FreeForOthers(dir));
}

TEST(LockDirectoryTest, AFileOrAPathUnderAFileIsRefusedAndLeftAlone) {
  TempDir tmp;
  const std::string file = tmp.File("not-a-dir");
  std::ofstream(file) << "mine";
  for (const std::string& dir : {file, file + "/ckpts"}) {
    SCOPED_TRACE(dir);
    auto r = LockDirectory(Env::Default(), dir, "me");
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(r.status().message().rfind("cannot keep checkpoints in " + dir + ": ", 0), 0u)
        << r.status().message();
  }
  EXPECT_EQ(ReadFileToString(file), "mine");
}

TEST(LockDirectoryTest, ADirectoryThatCannotBeWrittenIsRefused) {
  TempDir tmp;
  const std::string dir = tmp.File("ro");
  fs::create_directories(dir);
  // Root writes through permissions: a read-only file system refuses it too.
  bool mounted = false;
  if (::geteuid() == 0) {
    ASSERT_EQ(::mount("tmpfs", dir.c_str(), "tmpfs", MS_RDONLY, "size=64k"), 0)
        << std::strerror(errno);
    mounted = true;
  } else {
    fs::permissions(dir, fs::perms::owner_read | fs::perms::owner_exec);
  }
  auto r = LockDirectory(Env::Default(), dir, "me");
  if (mounted) ::umount2(dir.c_str(), MNT_DETACH);
  fs::permissions(dir, fs::perms::owner_all);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("cannot keep checkpoints in " + dir + ": create " + dir +
                                      "/LOCK: "),
            std::string::npos)
      << r.status().message();
}

TEST(LockDirectoryTest, TheHolderLineNamesHostPidAndTime) {
  const std::string line = ThisProcessAsHolder();
  EXPECT_NE(line.find(", pid " + std::to_string(::getpid()) + ", "), std::string::npos) << line;
  EXPECT_EQ(line.rfind("host ", 0), 0u) << line;
  EXPECT_NE(line.find(", since 20"), std::string::npos) << line;
}

}  // namespace
}  // namespace holdfast
