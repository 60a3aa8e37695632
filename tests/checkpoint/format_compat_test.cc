// Checkpoints written by an earlier build still restore: a checked-in
// checkpoint of the current format (tests/testdata/checkpoint-format-2,
// written by 2 ranks) is restored at 1, 2 and 3 ranks and must give back
// exactly the state it was made from. The state is a formula, not a
// training result, so the test does not depend on this build's arithmetic.
//
// To write the checkpoint again (only when the format changes on purpose,
// and then under a new name, keeping the old one):
//   HOLDFAST_WRITE_GOLDEN=tests/testdata/checkpoint-format-N build/tests/format_compat_test
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>

#include "checkpoint/manager.h"
#include "core/layers.h"
#include "core/optimizer.h"
#include "core/sequential.h"
#include "distribute/thread_communicator.h"
#include "tests/testutil/checkpoint_helpers.h"
#include "tests/testutil/testutil.h"

namespace holdfast {
namespace {

namespace fs = std::filesystem;

constexpr int64_t kGoldenStep = 1234;

// 3 -> Dense(4) -> ReLU -> Dense(2), Adam: the checked-in checkpoint's model.
Trainee GoldenModel() {
  Trainee t;
  t.model = std::make_unique<Sequential>(3);
  t.model->Add<Dense>(4).Add<ReLU>().Add<Dense>(2);
  t.model->Build(7);
  t.optimizer = std::make_unique<Adam>(0.001f);
  t.optimizer->Build(t.model->store().size());
  return t;
}

// Every float exactly representable and distinct per blob and position.
float GoldenValue(size_t blob, size_t i) {
  return static_cast<float>(blob) * 100.0f + static_cast<float>(i) * 0.125f - 3.0f;
}

// The golden state's blobs are all float32 (params and Adam's slots).
std::span<float> Floats(const NamedBlob& b) {
  return {reinterpret_cast<float*>(b.bytes.data()), b.bytes.size() / sizeof(float)};
}

void SetGoldenState(Trainee& t, Checkpoint& c) {
  size_t blob = 0;
  for (const NamedBlob& b : c.Blobs()) {
    for (size_t i = 0; i < Floats(b).size(); ++i) Floats(b)[i] = GoldenValue(blob, i);
    ++blob;
  }
  t.optimizer->set_iterations(kGoldenStep);
  c.counters = {{"epoch", 3}, {"batch", 7}};
  c.values = {{"loss_sum", 0.1 + 0.2}};
}

void ExpectGoldenState(Trainee& t, Checkpoint& c) {
  size_t blob = 0;
  for (const NamedBlob& b : c.Blobs()) {
    for (size_t i = 0; i < Floats(b).size(); ++i) {
      ASSERT_EQ(Floats(b)[i], GoldenValue(blob, i)) << b.name << "[" << i << "]";
    }
    ++blob;
  }
  EXPECT_GE(blob, 3u) << "params and Adam's two slots";
  EXPECT_EQ(t.optimizer->iterations(), kGoldenStep);
  EXPECT_EQ(c.counters, (std::map<std::string, int64_t>{{"epoch", 3}, {"batch", 7}}));
  EXPECT_EQ(c.values.at("loss_sum"), 0.1 + 0.2);
}

TEST(CheckpointFormatTest, ACheckedInCheckpointRestoresOnEveryWorldSize) {
  if (const char* out = std::getenv("HOLDFAST_WRITE_GOLDEN"); out != nullptr && *out) {
    RunInProcessRanks(2, [&](Communicator& comm) {
      Trainee t = GoldenModel();
      Checkpoint c(t.model.get(), t.optimizer.get());
      SetGoldenState(t, c);
      CheckpointManager m(&c, &comm, {.directory = out, .max_to_keep = 1});
      ASSERT_OK(m.SaveAndWait());
    });
    GTEST_SKIP() << "wrote " << out;
  }
  const fs::path golden = fs::path(HOLDFAST_SOURCE_DIR) / "tests/testdata/checkpoint-format-2";
  ASSERT_TRUE(fs::exists(golden / ("ckpt-" + std::to_string(kGoldenStep)) / "MANIFEST.json"))
      << golden;
  for (int world : {1, 2, 3}) {
    SCOPED_TRACE("restored by " + std::to_string(world) + " ranks");
    TempDir dir;
    const fs::path copy = fs::path(dir.path()) / "golden";
    CopyTree(golden, copy);  // restore may tidy the directory; the source stays as checked in
    RunInProcessRanks(world, [&](Communicator& comm) {
      Trainee t = GoldenModel();
      Checkpoint c(t.model.get(), t.optimizer.get());
      CheckpointManager m(&c, &comm, {.directory = copy.string()});
      auto restored = m.RestoreLatest();
      ASSERT_OK(restored);
      ASSERT_TRUE(restored->has_value());
      EXPECT_EQ(**restored, kGoldenStep);
      ExpectGoldenState(t, c);
    });
  }
}

}  // namespace
}  // namespace holdfast
