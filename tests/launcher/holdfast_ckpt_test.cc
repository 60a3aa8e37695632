// `holdfast ckpt ls|inspect|verify`, run as a user would: the real binary
// over checkpoints written by CheckpointManager.
#include <gtest/gtest.h>

#include <boost/serialization/version.hpp>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "checkpoint/manager.h"
#include "distribute/communicator.h"
#include "distribute/thread_communicator.h"
#include "launcher/ckpt_command.h"
#include "launcher/table.h"
#include "tests/testutil/models.h"
#include "tests/testutil/subprocess.h"
#include "tests/testutil/testutil.h"

namespace holdfast {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using testing::ProcessResult;
using testing::RunProcess;

testing::ProcessResult Holdfast(std::vector<std::string> args) {
  args.insert(args.begin(), HOLDFAST_BINARY);
  return RunProcess(args);
}

std::vector<std::string> Lines(const std::string& s) {
  std::vector<std::string> lines;
  std::istringstream in(s);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

// The line of `text` that starts with `prefix`, or "".
std::string LineStartingWith(const std::string& text, const std::string& prefix) {
  for (const std::string& line : Lines(text)) {
    if (line.rfind(prefix, 0) == 0) return line;
  }
  return "";
}

// Whitespace-separated words of a line.
std::vector<std::string> Words(const std::string& line) {
  std::istringstream in(line);
  std::vector<std::string> words;
  for (std::string w; in >> w;) words.push_back(w);
  return words;
}

// An error is one line on stderr in the tool's voice.
void ExpectOneLineError(const ProcessResult& r) {
  EXPECT_EQ(testing::CountLines(r.err), 1) << r.err;
  EXPECT_EQ(r.err.rfind("holdfast: ", 0), 0u) << r.err;
}

struct SaveSpec {
  int64_t step = 100;
  int world = 1;
  bool counters = true;  // holdfast/epoch = step / 100, holdfast/batch = step / 10
  bool objects = false;  // also the tracked objects of TrackObjects
};

}  // namespace

// A program's own type (class version 3 in its BOOST_CLASS_VERSION).
struct Cursor {
  int64_t position = 0;
  template <class Archive>
  void serialize(Archive& ar, unsigned /*version*/) {
    ar& position;
  }
};

}  // namespace holdfast

BOOST_CLASS_VERSION(holdfast::Cursor, 3)

namespace holdfast {
namespace {

// Tracked beside the model: "stats/steps" int64 {7, -1, 2^40}, "schedule/lr"
// float64 0.25, "cursor" a Cursor at 42; they must outlive the save.
struct TrackedObjects {
  std::vector<int64_t> steps = {7, -1, int64_t{1} << 40};
  double lr = 0.25;
  Cursor cursor{42};
  void TrackIn(Checkpoint& ckpt) {
    ckpt.Track("stats/steps", std::span<int64_t>(steps));
    ckpt.Track("schedule/lr", &lr);
    ckpt.Track("cursor", &cursor);
  }
};

// MakeClassifier(1) (2-16-3, Adam) with params[i] = i over the whole flat
// buffer (padding included), optimizer/m starting NaN, +Inf, -Inf; saved by
// CheckpointManager on `world` in-process ranks.
void Save(const std::string& dir, const SaveSpec& spec) {
  auto save_on = [&](Communicator& comm) {
    Trainee t = MakeClassifier(1);
    std::span<float> params = t.model->store().params();
    for (size_t i = 0; i < params.size(); ++i) params[i] = static_cast<float>(i);
    for (OptimizerSlot& slot : t.optimizer->slots()) {
      if (slot.name != "m") continue;
      slot.values[0] = std::numeric_limits<float>::quiet_NaN();
      slot.values[1] = std::numeric_limits<float>::infinity();
      slot.values[2] = -std::numeric_limits<float>::infinity();
    }
    t.optimizer->set_iterations(spec.step);
    Checkpoint ckpt(t.model.get(), t.optimizer.get());
    if (spec.counters) {
      ckpt.counters = {{"holdfast/epoch", spec.step / 100}, {"holdfast/batch", spec.step / 10}};
    }
    ckpt.values = {{"loss_sum", 0.1 + 0.2}};
    TrackedObjects objects;
    if (spec.objects) objects.TrackIn(ckpt);
    CheckpointManager manager(&ckpt, &comm, {.directory = dir, .max_to_keep = 100});
    ASSERT_OK(manager.Save());
  };
  if (spec.world == 1) {
    LocalCommunicator comm;
    save_on(comm);
  } else {
    RunInProcessRanks(spec.world, save_on);
  }
}

void FlipByte(const fs::path& file, uint64_t offset) {
  std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(static_cast<std::streamoff>(offset));
  char c;
  f.get(c);
  f.seekp(static_cast<std::streamoff>(offset));
  f.put(static_cast<char>(c ^ 0x20));
}

// Three checkpoints: step 100 without counters, 200 and 300 (world 2) with.
class CkptTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Save(dir_.path(), {.step = 100, .counters = false});
    Save(dir_.path(), {.step = 200});
    Save(dir_.path(), {.step = 300, .world = 2});
  }
  std::string dir() const { return dir_.path(); }
  std::string ckpt(int64_t step) const { return dir() + "/ckpt-" + std::to_string(step); }

  TempDir dir_;
};

// --- formatting -----------------------------------------------------------

TEST(HumanUnitsTest, BytesAndAges) {
  EXPECT_EQ(launcher::HumanBytes(0), "0 B");
  EXPECT_EQ(launcher::HumanBytes(1023), "1023 B");
  EXPECT_EQ(launcher::HumanBytes(1536), "1.5 KiB");
  EXPECT_EQ(launcher::HumanBytes(1024 * 1024 - 1), "1.0 MiB");  // not "1024.0 KiB"
  EXPECT_EQ(launcher::HumanBytes(uint64_t{5} << 30), "5.0 GiB");
  EXPECT_EQ(launcher::HumanAge(0.4), "0s ago");
  EXPECT_EQ(launcher::HumanAge(59), "59s ago");
  EXPECT_EQ(launcher::HumanAge(3 * 60 + 5), "3m ago");
  EXPECT_EQ(launcher::HumanAge(2 * 3600 + 59 * 60), "2h ago");
  EXPECT_EQ(launcher::HumanAge(5 * 86400 + 100), "5d ago");
  EXPECT_EQ(launcher::HumanAge(-3600), "in the future");
}

// --- help and usage -------------------------------------------------------

TEST(HoldfastHelpTest, EveryCommandHasHelp) {
  ProcessResult r = Holdfast({"--help"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("ckpt"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("Exit codes"), std::string::npos) << r.out;

  r = Holdfast({"ckpt", "--help"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  for (const char* sub : {"ls", "inspect", "verify", "get"}) {
    EXPECT_NE(r.out.find(sub), std::string::npos) << sub << " missing from\n" << r.out;
  }
  r = Holdfast({"ckpt", "ls", "--help"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.out.find("--no-verify"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("--json"), std::string::npos) << r.out;
  r = Holdfast({"ckpt", "inspect", "--help"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.out.find("--json"), std::string::npos) << r.out;
  r = Holdfast({"ckpt", "verify", "--help"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.out.find("DIR"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("--json"), std::string::npos) << r.out;
}

TEST(HoldfastHelpTest, UsageErrorsAreOneLineAndExit2) {
  for (const std::vector<std::string>& args :
       std::vector<std::vector<std::string>>{{},
                                             {"ckpt"},
                                             {"ckpt", "ls"},
                                             {"ckpt", "frobnicate", "x"},
                                             {"ckpt", "ls", "--bogus", "x"},
                                             {"ckpt", "verify"},
                                             {"nonsense"}}) {
    const ProcessResult r = Holdfast(args);
    EXPECT_EQ(r.exit_code, 2) << ::testing::PrintToString(args);
    ExpectOneLineError(r);
  }
}

// --- ls -------------------------------------------------------------------

TEST(CkptLsTest, EmptyDirectory) {
  TempDir dir;
  const ProcessResult r = Holdfast({"ckpt", "ls", dir.path()});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "no checkpoints in " + dir.path() + "\n");
  EXPECT_EQ(r.err, "");
}

TEST(CkptLsTest, MissingDirectoryOrAFileIsAUsageError) {
  TempDir dir;
  ProcessResult r = Holdfast({"ckpt", "ls", dir.path() + "/nope"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(r.out, "");
  ExpectOneLineError(r);
  EXPECT_NE(r.err.find(dir.path() + "/nope"), std::string::npos) << r.err;

  std::ofstream(dir.path() + "/file") << "x";
  r = Holdfast({"ckpt", "ls", dir.path() + "/file"});
  EXPECT_EQ(r.exit_code, 2);
  ExpectOneLineError(r);
}

TEST_F(CkptTest, LsShowsAnAlignedTableOldestFirst) {
  const ProcessResult r = Holdfast({"ckpt", "ls", dir()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err, "");
  const std::vector<std::string> lines = Lines(r.out);
  ASSERT_EQ(lines.size(), 4u) << r.out;
  EXPECT_EQ(Words(lines[0]),
            (std::vector<std::string>{"NAME", "STEP", "EPOCH/BATCH", "WORLD", "SIZE", "AGE"}));
  EXPECT_EQ(lines[1].rfind("ckpt-100 ", 0), 0u) << r.out;
  EXPECT_EQ(lines[2].rfind("ckpt-200 ", 0), 0u) << r.out;
  EXPECT_EQ(lines[3].rfind("ckpt-300 ", 0), 0u) << r.out;

  const std::vector<std::string> oldest = Words(lines[1]), middle = Words(lines[2]),
                                 newest = Words(lines[3]);
  // NAME STEP EPOCH/BATCH WORLD SIZE(2 words) AGE(2 words) [marks]
  ASSERT_GE(oldest.size(), 8u);
  EXPECT_EQ(oldest[1], "100");
  EXPECT_EQ(oldest[2], "-");  // no counters
  EXPECT_EQ(oldest[3], "1");
  EXPECT_TRUE(oldest[5] == "B" || oldest[5] == "KiB") << lines[1];
  EXPECT_EQ(oldest[7], "ago");
  EXPECT_EQ(oldest.size(), 8u) << "no marks on the oldest: " << lines[1];
  EXPECT_EQ(middle[2], "2/20");
  EXPECT_EQ(middle.size(), 8u) << lines[2];
  EXPECT_EQ(newest[1], "300");
  EXPECT_EQ(newest[2], "3/30");
  EXPECT_EQ(newest[3], "2");
  EXPECT_NE(lines[3].find("LATEST, restore"), std::string::npos) << lines[3];

  // Aligned: every column starts where its header does (numbers end there).
  const size_t epoch_col = lines[0].find("EPOCH/BATCH");
  EXPECT_EQ(lines[1].find(" - "), epoch_col - 1) << r.out;
  EXPECT_EQ(lines[2].find("2/20"), epoch_col) << r.out;
  EXPECT_EQ(lines[3].find("3/30"), epoch_col) << r.out;
  const size_t step_end = lines[0].find("STEP") + 4;
  EXPECT_EQ(lines[1].find(" 100 ") + 4, step_end) << r.out;
  const size_t age_col = lines[0].find("AGE");
  for (int i = 1; i <= 3; ++i) {
    const std::string age = lines[i].substr(age_col);
    EXPECT_TRUE(age.rfind("0s ago", 0) == 0 || age.rfind("1s ago", 0) == 0 ||
                age.rfind("2s ago", 0) == 0)
        << lines[i];
  }
}

TEST_F(CkptTest, LsMarksADamagedNewestAndRestoreMovesToThePrevious) {
  FlipByte(ckpt(300) + "/shard-1-of-2.bin", 40);
  ProcessResult r = Holdfast({"ckpt", "ls", dir()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::vector<std::string> lines = Lines(r.out);
  ASSERT_EQ(lines.size(), 4u) << r.out;
  EXPECT_NE(lines[3].find("LATEST, DAMAGED: shard-1-of-2.bin: hash mismatch"), std::string::npos)
      << r.out;
  EXPECT_EQ(lines[3].find("restore"), std::string::npos) << r.out;
  EXPECT_TRUE(lines[2].ends_with("restore")) << r.out;
  EXPECT_EQ(lines[1].find("restore"), std::string::npos) << r.out;

  // Manifests only: the damage is not seen, the newest readable one is marked.
  r = Holdfast({"ckpt", "ls", "--no-verify", dir()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(LineStartingWith(r.out, "ckpt-300").find("LATEST, restore"), std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("not verified"), std::string::npos) << r.out;

  // A damaged manifest is seen even without verifying shards.
  FlipByte(ckpt(200) + "/MANIFEST.json", 30);
  r = Holdfast({"ckpt", "ls", "--no-verify", dir()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(LineStartingWith(r.out, "ckpt-200").find("DAMAGED: MANIFEST.json"), std::string::npos)
      << r.out;
}

TEST_F(CkptTest, LsListsPrepareAreasAndUncommittedDirectories) {
  fs::create_directory(dir() + "/.ckpt-400.tmp-00c0ffee");
  std::ofstream(dir() + "/.ckpt-400.tmp-00c0ffee/shard-0-of-1.bin") << "partial";
  fs::create_directory(dir() + "/ckpt-50");  // a half-deleted one: no manifest
  const ProcessResult r = Holdfast({"ckpt", "ls", dir()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::vector<std::string> lines = Lines(r.out);
  ASSERT_EQ(lines.size(), 6u) << r.out;
  EXPECT_EQ(lines[1].rfind("ckpt-50 ", 0), 0u) << r.out;
  EXPECT_NE(lines[1].find("not committed"), std::string::npos) << r.out;
  EXPECT_EQ(lines[5].rfind(".ckpt-400.tmp-00c0ffee ", 0), 0u) << r.out;
  EXPECT_NE(lines[5].find("(incomplete save, removed on next restore)"), std::string::npos)
      << r.out;
  EXPECT_NE(lines[5].find("7 B"), std::string::npos) << r.out;
  EXPECT_NE(lines[4].find("LATEST, restore"), std::string::npos) << r.out;
}

TEST_F(CkptTest, LsJsonParses) {
  FlipByte(ckpt(300) + "/shard-1-of-2.bin", 40);
  fs::create_directory(dir() + "/.ckpt-400.tmp-00c0ffee");
  const ProcessResult r = Holdfast({"ckpt", "ls", "--json", dir()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err, "");
  const json j = json::parse(r.out);
  EXPECT_EQ(j["directory"], dir());
  EXPECT_EQ(j["latest"], "ckpt-300");
  EXPECT_EQ(j["latest_is_committed"], true);
  EXPECT_EQ(j["restore"], "ckpt-200");
  EXPECT_EQ(j["shards_verified"], true);
  const json& list = j["checkpoints"];
  ASSERT_EQ(list.size(), 4u) << r.out;
  EXPECT_EQ(list[0]["name"], "ckpt-100");
  EXPECT_TRUE(list[0]["epoch"].is_null());  // no counters
  EXPECT_EQ(list[0]["ok"], true);
  EXPECT_EQ(list[1]["epoch"], 2);
  EXPECT_EQ(list[1]["batch"], 20);
  EXPECT_EQ(list[1]["restore"], true);
  EXPECT_EQ(list[1]["latest"], false);
  EXPECT_EQ(list[2]["name"], "ckpt-300");
  EXPECT_EQ(list[2]["world_size"], 2);
  EXPECT_EQ(list[2]["latest"], true);
  EXPECT_EQ(list[2]["ok"], false);
  EXPECT_NE(list[2]["damage"].get<std::string>().find("hash mismatch"), std::string::npos);
  EXPECT_GT(list[2]["bytes_on_disk"].get<uint64_t>(), 0u);
  EXPECT_GE(list[2]["age_seconds"].get<double>(), 0);
  EXPECT_LT(list[2]["age_seconds"].get<double>(), 60);
  EXPECT_EQ(list[3]["name"], ".ckpt-400.tmp-00c0ffee");
  EXPECT_EQ(list[3]["state"], "incomplete");
  EXPECT_EQ(list[3]["ok"], false);

  TempDir empty;
  const ProcessResult none = Holdfast({"ckpt", "ls", "--json", empty.path()});
  ASSERT_EQ(none.exit_code, 0) << none.err;
  EXPECT_EQ(json::parse(none.out)["checkpoints"], json::array());
}

TEST_F(CkptTest, LsOfOneCheckpointPointsAtInspect) {
  const ProcessResult r = Holdfast({"ckpt", "ls", ckpt(200)});
  EXPECT_EQ(r.exit_code, 2);
  ExpectOneLineError(r);
  EXPECT_NE(r.err.find("inspect"), std::string::npos) << r.err;
}

// --- get ------------------------------------------------------------------

// The saved model's tensors (Save: params[i] = i), by name.
TensorSpec SavedTensor(const std::string& name) {
  Trainee t = MakeClassifier(1);
  for (const TensorSpec& spec : t.model->store().tensors()) {
    if (spec.name == name) return spec;
  }
  ADD_FAILURE() << "no tensor " << name;
  return {};
}

TEST_F(CkptTest, GetPrintsATensorRowByRowFromTheNewest) {
  const TensorSpec kernel = SavedTensor("dense_0/kernel");
  ASSERT_EQ(kernel.shape.size(), 2u);
  const ProcessResult r = Holdfast({"ckpt", "get", dir(), "model/dense_0/kernel"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::vector<std::string> lines = Lines(r.out);
  ASSERT_EQ(lines.size(), 1 + static_cast<size_t>(kernel.shape[0])) << r.out;
  EXPECT_EQ(lines[0],
            "model/dense_0/kernel float32 " + DescribeShape(kernel.shape) + " (" + ckpt(300) + ")");
  const int64_t cols = kernel.shape[1];
  for (int64_t row = 0; row < kernel.shape[0]; ++row) {
    std::string expected;
    for (int64_t c = 0; c < cols; ++c) {
      if (c > 0) expected += ' ';
      expected += std::to_string(kernel.offset + row * cols + c);
    }
    EXPECT_EQ(lines[1 + row], expected);
  }
  const ProcessResult scalar = Holdfast({"ckpt", "get", ckpt(200), "counters/holdfast/epoch"});
  ASSERT_EQ(scalar.exit_code, 0) << scalar.err;
  EXPECT_EQ(scalar.out, "counters/holdfast/epoch int64 scalar (" + ckpt(200) + ")\n2\n");
}

// What numpy.load makes of a .npy file: dtype, shape and every value, one
// per line (repr), from Debian's python3 with python3-numpy.
std::string NumpyView(const std::string& npy) {
  const ProcessResult r = RunProcess({"/usr/bin/python3", "-c",
                                      "import sys, numpy\n"
                                      "a = numpy.load(sys.argv[1])\n"
                                      "print(a.dtype, a.shape)\n"
                                      "for x in a.ravel(): print(repr(x.item()))\n",
                                      npy});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return r.out;
}

TEST_F(CkptTest, GetNpyFilesLoadWithNumpyAndHoldTheValues) {
  TempDir out;
  const TensorSpec bias = SavedTensor("dense_0/bias");
  const std::string npy = out.File("bias.npy");
  ASSERT_EQ(Holdfast({"ckpt", "get", dir(), "model/dense_0/bias", "--npy", npy}).exit_code, 0);
  std::string expected = "float32 (" + std::to_string(bias.size) + ",)\n";
  for (size_t i = 0; i < bias.size; ++i) expected += std::to_string(bias.offset + i) + ".0\n";
  EXPECT_EQ(NumpyView(npy), expected);

  const TensorSpec kernel = SavedTensor("dense_0/kernel");
  const std::string m = out.File("m.npy");  // starts NaN, +Inf, -Inf
  ASSERT_EQ(Holdfast({"ckpt", "get", dir(), "optimizer/m/dense_0/kernel", "--npy", m}).exit_code,
            0);
  const std::vector<std::string> m_lines = Lines(NumpyView(m));
  ASSERT_GE(m_lines.size(), 4u);
  EXPECT_EQ(m_lines[0], "float32 (" + std::to_string(kernel.shape[0]) + ", " +
                            std::to_string(kernel.shape[1]) + ")");
  EXPECT_EQ(m_lines[1], "nan");
  EXPECT_EQ(m_lines[2], "inf");
  EXPECT_EQ(m_lines[3], "-inf");

  const std::string scalar = out.File("loss.npy");
  ASSERT_EQ(Holdfast({"ckpt", "get", dir(), "values/loss_sum", "--npy", scalar}).exit_code, 0);
  EXPECT_EQ(NumpyView(scalar), "float64 ()\n0.30000000000000004\n");
}

TEST(CkptObjectsTest, InspectListsEveryObjectAndGetReadsEachByItsType) {
  TempDir dir;
  Save(dir.path(), {.step = 400, .world = 2, .objects = true});
  const ProcessResult r = Holdfast({"ckpt", "inspect", dir.path()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(LineStartingWith(r.out, "  model ").find("model in:2|dense_0/kernel:2x16"),
            std::string::npos)
      << r.out;
  EXPECT_EQ(Words(LineStartingWith(r.out, "  stats/steps ")),
            (std::vector<std::string>{"stats/steps", "int64[3]", "24"}));
  EXPECT_EQ(Words(LineStartingWith(r.out, "  schedule/lr ")),
            (std::vector<std::string>{"schedule/lr", "float64", "8"}));
  const std::vector<std::string> cursor = Words(LineStartingWith(r.out, "  cursor "));
  ASSERT_EQ(cursor.size(), 5u) << r.out;
  EXPECT_EQ(cursor[1], "serializable");
  EXPECT_EQ(cursor[2], "holdfast::Cursor");
  EXPECT_EQ(cursor[3], "v3");
  // Only float32 blobs have statistics.
  const std::string blobs = r.out.substr(r.out.find("\nblobs"));
  EXPECT_EQ(Words(LineStartingWith(blobs, "  stats/steps ")),
            (std::vector<std::string>{"stats/steps", "6", "-"}));

  TempDir out;
  const std::string steps = out.File("steps.npy");
  ASSERT_EQ(Holdfast({"ckpt", "get", dir.path(), "stats/steps", "--npy", steps}).exit_code, 0);
  EXPECT_EQ(NumpyView(steps), "int64 (3,)\n7\n-1\n1099511627776\n");
  EXPECT_EQ(Holdfast({"ckpt", "get", dir.path(), "schedule/lr"}).out,
            "schedule/lr float64 scalar (" + dir.path() + "/ckpt-400)\n0.25\n");
  const json archive = json::parse(Holdfast({"ckpt", "get", "--json", dir.path(), "cursor"}).out);
  EXPECT_EQ(archive["dtype"], "uint8");  // Boost's binary archive of the Cursor
  std::string bytes;
  for (const json& b : archive["values"]) bytes += static_cast<char>(b.get<int>());
  Cursor cursor_read;
  ASSERT_OK(internal::LoadArchive(bytes, "cursor", &cursor_read));
  EXPECT_EQ(cursor_read.position, 42);
}

TEST_F(CkptTest, GetListsEveryPathAndRefusesAnUnknownOne) {
  const ProcessResult list = Holdfast({"ckpt", "get", dir(), "--list"});
  ASSERT_EQ(list.exit_code, 0) << list.err;
  const std::vector<std::string> paths = Lines(list.out);
  for (const char* p : {"params", "model/dense_0/kernel", "optimizer/v/dense_0/bias",
                        "counters/holdfast/batch", "values/loss_sum"}) {
    EXPECT_NE(std::find(paths.begin(), paths.end(), p), paths.end()) << p << "\n" << list.out;
  }
  for (const std::string& p : paths) {
    SCOPED_TRACE(p);
    EXPECT_EQ(Holdfast({"ckpt", "get", dir(), p, "--json"}).exit_code, 0);
  }
  const ProcessResult unknown = Holdfast({"ckpt", "get", dir(), "model/dense_9/kernel"});
  EXPECT_EQ(unknown.exit_code, 2);
  ExpectOneLineError(unknown);
  EXPECT_NE(unknown.err.find("no variable model/dense_9/kernel in ckpt-300"), std::string::npos)
      << unknown.err;
  const ProcessResult none = Holdfast({"ckpt", "get", dir()});
  EXPECT_EQ(none.exit_code, 2);
  ExpectOneLineError(none);
}

TEST_F(CkptTest, GetOfADamagedCheckpointShowsNothingAndExits1) {
  FlipByte(fs::path(ckpt(300)) / "shard-1-of-2.bin", 100);
  const ProcessResult r = Holdfast({"ckpt", "get", ckpt(300), "model/dense_0/kernel"});
  EXPECT_EQ(r.exit_code, 1);
  ExpectOneLineError(r);
  EXPECT_EQ(r.out, "");
}

// --- inspect --------------------------------------------------------------

TEST_F(CkptTest, InspectShowsTheNewestWithStatistics) {
  const ProcessResult r = Holdfast({"ckpt", "inspect", dir()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err, "");
  EXPECT_EQ(Words(LineStartingWith(r.out, "step")), (std::vector<std::string>{"step", "300"}));
  EXPECT_EQ(Words(LineStartingWith(r.out, "world size")),
            (std::vector<std::string>{"world", "size", "2"}));
  EXPECT_NE(LineStartingWith(r.out, "status").find("ok"), std::string::npos) << r.out;
  EXPECT_NE(LineStartingWith(r.out, "created").find("s ago)"), std::string::npos) << r.out;
  EXPECT_NE(LineStartingWith(r.out, "model").find("dense_0/kernel:2x16"), std::string::npos);
  EXPECT_NE(LineStartingWith(r.out, "optimizer").find("adam("), std::string::npos);
  EXPECT_NE(r.out.find("holdfast/epoch = 3"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("holdfast/batch = 30"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("loss_sum = 0.30000000000000004"), std::string::npos) << r.out;
  EXPECT_NE(LineStartingWith(r.out, "  shard-0-of-2.bin").size(), 0u) << r.out;
  EXPECT_NE(LineStartingWith(r.out, "  shard-1-of-2.bin").size(), 0u) << r.out;

  // params[i] = i over 112 floats, of which the 99 before the padding are
  // the tensors': min 0, max 98, mean 49.
  std::vector<std::string> params = Words(LineStartingWith(r.out, "  params"));
  ASSERT_EQ(params.size(), 9u) << r.out;
  EXPECT_EQ(params[1], "112");  // FLOATS
  EXPECT_EQ(params[3], "0");    // MIN
  EXPECT_EQ(params[4], "98");   // MAX
  EXPECT_EQ(params[5], "49");   // MEAN
  EXPECT_EQ(params[7], "0");    // NAN
  EXPECT_EQ(params[8], "0");    // INF
  // dense_2/bias holds 96, 97, 98.
  std::vector<std::string> bias = Words(LineStartingWith(r.out, "    dense_2/bias"));
  ASSERT_EQ(bias.size(), 9u) << r.out;
  EXPECT_EQ(bias[1], "3");
  EXPECT_EQ(bias[2], "3");
  EXPECT_EQ(bias[5], "97");
  std::vector<std::string> m = Words(LineStartingWith(r.out, "  optimizer/m"));
  ASSERT_EQ(m.size(), 9u) << r.out;
  EXPECT_EQ(m[7], "1");  // NaN
  EXPECT_EQ(m[8], "2");  // +Inf, -Inf
}

TEST_F(CkptTest, InspectOneCheckpointByPath) {
  const ProcessResult r = Holdfast({"ckpt", "inspect", ckpt(100) + "/"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(Words(LineStartingWith(r.out, "step")), (std::vector<std::string>{"step", "100"}));
  // No counters: neither the user's nor a layout record (these checkpoints
  // are written by a manager without a replica, which records no layout).
  EXPECT_EQ(Words(LineStartingWith(r.out, "counters")),
            (std::vector<std::string>{"counters", "-"}));
}

TEST_F(CkptTest, InspectJsonParses) {
  const ProcessResult r = Holdfast({"ckpt", "inspect", "--json", dir()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json j = json::parse(r.out);  // throws, failing the test, if it does not parse
  EXPECT_EQ(j["ok"], true);
  EXPECT_EQ(j["name"], "ckpt-300");
  EXPECT_EQ(j["step"], 300);
  EXPECT_EQ(j["world_size"], 2);
  EXPECT_EQ(j["counters"]["holdfast/epoch"], 3);
  EXPECT_EQ(j["values"]["loss_sum"].get<double>(), 0.1 + 0.2);
  ASSERT_EQ(j["shards"].size(), 2u);
  EXPECT_EQ(j["shards"][1]["rank"], 1);
  EXPECT_EQ(j["shards"][1]["xxh3"].get<std::string>().size(), 16u);
  const json& params = j["blobs"][0];
  EXPECT_EQ(params["name"], "params");
  EXPECT_EQ(params["floats"], 112);
  EXPECT_EQ(params["min"], 0.0);
  EXPECT_EQ(params["max"], 98.0);
  EXPECT_DOUBLE_EQ(params["mean"].get<double>(), 49.0);
  // sqrt(sum_{i<99} i^2 / 99) = sqrt(98 * 197 / 6)
  EXPECT_NEAR(params["rms"].get<double>(), std::sqrt(98.0 * 197.0 / 6.0), 1e-9);
  ASSERT_EQ(params["tensors"].size(), 4u);
  EXPECT_EQ(params["tensors"][0]["name"], "dense_0/kernel");
  EXPECT_EQ(params["tensors"][0]["shape"], json({2, 16}));
  const json& m = j["blobs"][1];
  EXPECT_EQ(m["name"], "optimizer/m");
  EXPECT_EQ(m["nan"], 1);
  EXPECT_EQ(m["inf"], 2);
}

TEST_F(CkptTest, InspectDamagedExits1) {
  FlipByte(ckpt(300) + "/shard-0-of-2.bin", 40);
  ProcessResult r = Holdfast({"ckpt", "inspect", dir()});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(LineStartingWith(r.out, "status").find("DAMAGED: shard-0-of-2.bin: hash mismatch"),
            std::string::npos)
      << r.out;
  ExpectOneLineError(r);

  r = Holdfast({"ckpt", "inspect", "--json", dir()});
  EXPECT_EQ(r.exit_code, 1);
  const json j = json::parse(r.out);
  EXPECT_EQ(j["ok"], false);
  EXPECT_NE(j["damage"].get<std::string>().find("hash mismatch"), std::string::npos);
}

TEST(CkptInspectTest, MissingOrEmptyIsAUsageError) {
  TempDir dir;
  ProcessResult r = Holdfast({"ckpt", "inspect", dir.path() + "/nope"});
  EXPECT_EQ(r.exit_code, 2);
  ExpectOneLineError(r);
  r = Holdfast({"ckpt", "inspect", dir.path()});
  EXPECT_EQ(r.exit_code, 2);
  ExpectOneLineError(r);
}

// --- verify ---------------------------------------------------------------

TEST_F(CkptTest, VerifyAllOk) {
  const ProcessResult r = Holdfast({"ckpt", "verify", dir()});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(r.err, "");
  const std::vector<std::string> lines = Lines(r.out);
  ASSERT_EQ(lines.size(), 5u) << r.out;
  EXPECT_EQ(Words(lines[0]),
            (std::vector<std::string>{"NAME", "STEP", "WORLD", "SHARDS", "SIZE", "STATUS"}));
  for (int64_t step : {100, 200, 300}) {
    const std::string line = LineStartingWith(r.out, "ckpt-" + std::to_string(step));
    const std::vector<std::string> w = Words(line);
    // NAME STEP WORLD SHARDS SIZE(2 words) STATUS [(marks)]
    ASSERT_GE(w.size(), 7u) << r.out;
    EXPECT_EQ(w[1], std::to_string(step));
    EXPECT_EQ(w[2], step == 300 ? "2" : "1");
    EXPECT_EQ(w[3], step == 300 ? "2" : "1");
    EXPECT_TRUE(w[5] == "B" || w[5] == "KiB") << line;
    EXPECT_EQ(w[6], "ok") << r.out;
    // Aligned: the sizes end under the end of SIZE, the statuses start under STATUS.
    EXPECT_EQ(line.find(w[5]) + w[5].size(), lines[0].find("SIZE") + 4) << r.out;
    EXPECT_EQ(line.find(" ok") + 1, lines[0].find("STATUS")) << r.out;
  }
  EXPECT_TRUE(LineStartingWith(r.out, "ckpt-300").ends_with("ok (LATEST, restore)")) << r.out;
  EXPECT_TRUE(LineStartingWith(r.out, "ckpt-200").ends_with("ok")) << r.out;
  EXPECT_EQ(lines[4], "3 checkpoints verified, all ok; restore would pick ckpt-300");
}

TEST_F(CkptTest, VerifyJsonParses) {
  FlipByte(ckpt(300) + "/shard-1-of-2.bin", 40);
  const ProcessResult r = Holdfast({"ckpt", "verify", "--json", dir()});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  ExpectOneLineError(r);
  const json j = json::parse(r.out);
  EXPECT_EQ(j["ok"], false);
  EXPECT_EQ(j["checkpoints_verified"], 3);
  EXPECT_EQ(j["damaged"], 1);
  EXPECT_EQ(j["latest"], "ckpt-300");
  EXPECT_EQ(j["restore"], "ckpt-200");
  ASSERT_EQ(j["checkpoints"].size(), 3u);
  const json& newest = j["checkpoints"][2];
  EXPECT_EQ(newest["name"], "ckpt-300");
  EXPECT_EQ(newest["ok"], false);
  EXPECT_NE(newest["damage"].get<std::string>().find("hash mismatch"), std::string::npos);
  EXPECT_EQ(newest["step"], 300);  // from the manifest, which is intact
  EXPECT_EQ(newest["shards"], 2);
  EXPECT_EQ(newest["latest"], true);
  EXPECT_EQ(newest["restore"], false);
  EXPECT_EQ(j["checkpoints"][1]["restore"], true);
  EXPECT_GT(j["checkpoints"][1]["bytes_on_disk"].get<uint64_t>(), 0u);

  // One checkpoint: one object.
  const ProcessResult one = Holdfast({"ckpt", "verify", "--json", ckpt(200)});
  EXPECT_EQ(one.exit_code, 0) << one.err;
  const json o = json::parse(one.out);
  EXPECT_EQ(o["name"], "ckpt-200");
  EXPECT_EQ(o["ok"], true);
  EXPECT_EQ(o["world_size"], 1);
}

TEST_F(CkptTest, VerifyFindsEveryDamagedOne) {
  FlipByte(ckpt(100) + "/shard-0-of-1.bin", 40);
  fs::remove(ckpt(300) + "/shard-1-of-2.bin");
  const ProcessResult r = Holdfast({"ckpt", "verify", dir()});
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_NE(LineStartingWith(r.out, "ckpt-100").find("DAMAGED: "), std::string::npos) << r.out;
  EXPECT_TRUE(LineStartingWith(r.out, "ckpt-200").ends_with("ok (restore)")) << r.out;
  EXPECT_NE(LineStartingWith(r.out, "ckpt-300").find("DAMAGED: "), std::string::npos) << r.out;
  EXPECT_TRUE(LineStartingWith(r.out, "ckpt-300").ends_with("(LATEST)")) << r.out;
  EXPECT_NE(r.out.find("restore would pick ckpt-200"), std::string::npos) << r.out;
  ExpectOneLineError(r);

  // One checkpoint at a time.
  EXPECT_EQ(Holdfast({"ckpt", "verify", ckpt(200)}).exit_code, 0);
  const ProcessResult one = Holdfast({"ckpt", "verify", ckpt(100)});
  EXPECT_EQ(one.exit_code, 1);
  EXPECT_EQ(testing::CountLines(one.out), 1) << one.out;
}

TEST(CkptVerifyTest, UsageErrorsExit2) {
  TempDir dir;
  ProcessResult r = Holdfast({"ckpt", "verify", dir.path() + "/nope"});
  EXPECT_EQ(r.exit_code, 2);
  ExpectOneLineError(r);
  r = Holdfast({"ckpt", "verify", dir.path()});  // empty: nothing damaged
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.out, "no checkpoints in " + dir.path() + "\n");
}

}  // namespace
}  // namespace holdfast
