// LoadWeights: a trained model's weights into a fresh model for inference,
// from a directory (the newest that verifies) or one checkpoint, without
// the directory's lock; refusals leave the model untouched.
#include "checkpoint/load_weights.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "checkpoint/manager.h"
#include "core/loss.h"
#include "tests/testutil/checkpoint_helpers.h"
#include "tests/testutil/models.h"
#include "tests/testutil/testutil.h"

namespace holdfast {
namespace {

namespace fs = std::filesystem;

// `t`'s outputs on `data` (inference).
Matrix Predictions(Trainee& t, const Dataset& data) {
  return t.model->Forward(data.x, StepContext{});
}

// A trained model whose job saved it into a fresh directory and still holds
// it (the manager, and so DIR/LOCK, alive), as a running training job does.
struct HeldJob {
  HeldJob()
      : checkpoint(t.model.get(), t.optimizer.get()),
        manager(&checkpoint, &comm, {.directory = dir.path(), .max_to_keep = 5}) {
    EXPECT_OK(manager.Save());
  }
  TempDir dir;
  Trainee t = Trained(5, 4);
  Checkpoint checkpoint;
  LocalCommunicator comm;
  CheckpointManager manager;
};

TEST(LoadWeightsTest, AFreshModelPredictsAsTheTrainedOneWhileItsJobHoldsTheDirectory) {
  const Dataset data = MakeBlobs(64, 3);
  HeldJob job;
  Trainee& trained = job.t;

  Trainee fresh = MakeClassifier(99);  // other initial weights
  ASSERT_NE(fresh.Hash(), trained.Hash());
  StatusOr<int64_t> step = LoadWeights(*fresh.model, job.dir.path());
  ASSERT_OK(step);
  EXPECT_EQ(*step, trained.optimizer->iterations());
  EXPECT_EQ(fresh.Params(), trained.Params());
  const Matrix want = Predictions(trained, data);
  const Matrix got = Predictions(fresh, data);
  ASSERT_EQ(got.size(), want.size());
  EXPECT_EQ(std::memcmp(got.data(), want.data(), sizeof(float) * static_cast<size_t>(got.size())),
            0);
  EXPECT_EQ(fresh.optimizer->iterations(), 0);  // the optimizer is not the model's weights
}

// Another tracked model (an EMA of the weights) loads by its path.
TEST(LoadWeightsTest, ATrackedModelLoadsByItsPath) {
  TempDir dir;
  Trainee t = Trained(5, 4);
  Trainee ema = Trained(6, 4);
  {
    LocalCommunicator comm;
    Checkpoint c(t.model.get(), t.optimizer.get());
    c.Track("ema", ema.model.get());
    CheckpointManager m(&c, &comm, {.directory = dir.path()});
    ASSERT_OK(m.Save());
  }
  Trainee fresh = MakeClassifier(99);
  ASSERT_OK(LoadWeights(*fresh.model, dir.path(), "ema"));
  EXPECT_EQ(fresh.Params(), ema.Params());
  ASSERT_OK(LoadWeights(*fresh.model, dir.path()));
  EXPECT_EQ(fresh.Params(), t.Params());
  StatusOr<int64_t> none = LoadWeights(*fresh.model, dir.path(), "student");
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(none.status().message().find("has no model 'student'"), std::string::npos)
      << none.status().message();
  EXPECT_EQ(fresh.Params(), t.Params());
}

TEST(LoadWeightsTest, TheNewestThatVerifiesOrTheOneNamed) {
  HeldJob job;
  Trainee& t = job.t;
  const std::string dir = job.dir.path();
  const std::vector<float> older = t.Params();
  const int64_t older_step = t.optimizer->iterations();
  t.model->store().params()[0] += 1.0f;
  t.optimizer->set_iterations(older_step + 1);
  ASSERT_OK(job.manager.Save());
  const std::string newest = dir + "/ckpt-" + std::to_string(older_step + 1);
  {
    Trainee fresh = MakeClassifier(99);
    ASSERT_OK(LoadWeights(*fresh.model, newest));
    EXPECT_EQ(fresh.Params(), t.Params());
  }
  // Damage the newest: the directory falls back to the older one.
  FlipByte(fs::path(newest) / "shard-0-of-1.bin", 60);
  Trainee fresh = MakeClassifier(99);
  StatusOr<int64_t> step = LoadWeights(*fresh.model, dir);
  ASSERT_OK(step);
  EXPECT_EQ(*step, older_step);
  EXPECT_EQ(fresh.Params(), older);
}

TEST(LoadWeightsTest, AnotherModelOrNothingThereIsRefusedAndTheModelIsUntouched) {
  HeldJob job;
  Trainee wider = MakeClassifier(99, /*dropout=*/false, /*adam=*/true, /*hidden=*/32);
  const uint64_t before = wider.Hash();
  StatusOr<int64_t> r = LoadWeights(*wider.model, job.dir.path());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(r.status().message().find("was written for another model"), std::string::npos);
  EXPECT_NE(r.status().message().find(wider.model->Signature()), std::string::npos);
  EXPECT_EQ(wider.Hash(), before);

  TempDir empty;
  r = LoadWeights(*wider.model, empty.path());
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound) << r.status().ToString();
  r = LoadWeights(*wider.model, empty.path() + "/missing");
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound) << r.status().ToString();
  EXPECT_EQ(wider.Hash(), before);
}

}  // namespace
}  // namespace holdfast
