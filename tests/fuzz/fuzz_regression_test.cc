// Replays the fuzz targets (tests/fuzz/fuzz_targets.h) on every input a fuzzer ever crashed on
// (tests/fuzz/regressions/<target>/) and on the seeds cut from the golden cases: each must now pass every
// invariant. A new crash file goes into regressions/ with the fix; the named tests below spell out the
// inputs of the crashes found so far.
#include <cfloat>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include "core/profile.h"
#include "core/sampler_chain.h"
#include "core/sampling_config.h"
#include "core/strategy.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "samplerd/v1/sampler.pb.h"
#include "tests/fuzz/fuzz_targets.h"
#include "tests/fuzz/golden_seeds.h"
#include "tests/golden_dir.h"

namespace samplerd::fuzz {
namespace {

std::vector<std::filesystem::path> Files(const std::string& dir) {
  std::vector<std::filesystem::path> files;
  if (!std::filesystem::exists(dir)) return files;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.is_regular_file() && entry.path().filename().string()[0] != '.') files.push_back(entry.path());
  }
  return files;
}

std::string Read(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::string CheckRequest(const std::string& bytes) {
  return CheckRequestBytes(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
}
std::string CheckKernels(const std::string& bytes) {
  return CheckKernelBytes(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
}
std::string CheckShmControl(const std::string& bytes) {
  return CheckShmControlBytes(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
}

TEST(FuzzRegression, EveryRecordedRequestInputPasses) {
  for (const auto& path : Files(std::string(SAMPLERD_FUZZ_REGRESSIONS) + "/request")) {
    EXPECT_EQ(CheckRequest(Read(path)), "") << path;
  }
}

TEST(FuzzRegression, EveryRecordedKernelInputPasses) {
  for (const auto& path : Files(std::string(SAMPLERD_FUZZ_REGRESSIONS) + "/kernels")) {
    EXPECT_EQ(CheckKernels(Read(path)), "") << path;
  }
}

TEST(FuzzRegression, EveryRecordedShmControlInputPasses) {
  ASSERT_TRUE(std::filesystem::is_directory(std::string(SAMPLERD_FUZZ_REGRESSIONS) + "/shm_control"));
  for (const auto& path : Files(std::string(SAMPLERD_FUZZ_REGRESSIONS) + "/shm_control")) {
    EXPECT_EQ(CheckShmControl(Read(path)), "") << path;
  }
}

TEST(FuzzSeeds, ShmControlSeedsPassTheControlTarget) {
  const std::vector<std::string> seeds = ShmControlSeeds();
  ASSERT_GE(seeds.size(), 10u);
  for (size_t i = 0; i < seeds.size(); ++i) EXPECT_EQ(CheckShmControl(seeds[i]), "") << "seed " << i;
}

TEST(FuzzSeeds, GoldenRequestSeedsPassTheRequestTarget) {
  absl::StatusOr<std::vector<Seed>> seeds = GoldenSeeds(samplerd::testing::GoldenDir(), SeedKind::kRequest);
  ASSERT_TRUE(seeds.ok()) << seeds.status();
  ASSERT_GE(seeds->size(), 100u);
  for (const Seed& s : *seeds) {
    v1::SampleRequest request;
    ASSERT_TRUE(request.ParseFromString(s.bytes)) << s.name;
    ASSERT_GE(request.steps_size(), 1) << s.name;
    EXPECT_EQ(CheckRequest(s.bytes), "") << s.name;
  }
}

TEST(FuzzSeeds, GoldenKernelSeedsPassTheKernelTarget) {
  absl::StatusOr<std::vector<Seed>> seeds = GoldenSeeds(samplerd::testing::GoldenDir(), SeedKind::kKernels);
  ASSERT_TRUE(seeds.ok()) << seeds.status();
  ASSERT_GE(seeds->size(), 40u);
  for (const Seed& s : *seeds) {
    const KernelRecipe recipe = ReadKernelRecipe(reinterpret_cast<const uint8_t*>(s.bytes.data()), s.bytes.size());
    EXPECT_GT(recipe.count, 0) << s.name;
    EXPECT_EQ(CheckKernels(s.bytes), "") << s.name;
  }
}

// The checks themselves can fail: a recipe is read as documented, and a response that breaks an invariant
// would be reported (here: logits the contract rejects must be rejected, which the target verifies).
TEST(FuzzTargets, RecipeReadsCountRowsFillAndPokes) {
  std::string bytes;
  bytes.push_back(1);                   // attention
  const uint32_t count = 1000001 + 10;  // modulo 1,000,001 -> 10
  bytes.append(reinterpret_cast<const char*>(&count), 4);
  bytes.push_back(2);  // 3 rows -> count rounded down to 9
  bytes.push_back(1);  // one special value
  bytes.push_back(4);  // SpecialFloats()[4] = FLT_MAX
  bytes.push_back(1);  // one poke
  const uint32_t index = 7;
  bytes.append(reinterpret_cast<const char*>(&index), 4);
  bytes.push_back(13);  // SpecialFloats()[13] = -inf
  const KernelRecipe r = ReadKernelRecipe(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  EXPECT_TRUE(r.attention);
  EXPECT_EQ(r.rows, 3);
  EXPECT_EQ(r.count, 9);
  ASSERT_EQ(r.values.size(), 9u);
  EXPECT_EQ(r.values[0], FLT_MAX);
  EXPECT_EQ(r.values[7], -std::numeric_limits<float>::infinity());
}

TEST(FuzzTargets, NanLogitsAreAcceptedOnlyAsAnError) {
  // A NaN logit must be an INVALID_ARGUMENT naming logits.data; the target passes because core rejects it.
  std::vector<float> values = {1.0f, std::nanf(""), 2.0f};
  EXPECT_EQ(CheckKernels(EncodeKernelRecipe(false, 1, values)), "");
  v1::SampleRequest request;
  v1::Step* step = request.add_steps();
  step->mutable_logits()->set_dtype(v1::DTYPE_F32);
  step->mutable_logits()->add_shape(3);
  step->mutable_logits()->set_data(std::string(reinterpret_cast<const char*>(values.data()), 12));
  EXPECT_EQ(CheckRequest(request.SerializeAsString()), "");
}

// Crash 1 (kernels_fuzzer): attention scores near FLT_MAX summed |x| in float lanes, so interaction_strength
// came out +inf (and fed +inf into the EXPLORE / ADAPTIVE formulas). Fixed in core/reduce_kernels_impl.h
// (ScanRow redoes an overflowing block in double).
TEST(FuzzRegression, AttentionNearFltMaxHasAFiniteInteractionStrength) {
  for (int64_t cols : {256, 1000, 4096}) {
    std::vector<float> row(static_cast<size_t>(2 * cols), 3.0e38f);
    row[5] = -FLT_MAX;
    row[static_cast<size_t>(cols)] = -std::numeric_limits<float>::infinity();
    EXPECT_EQ(CheckKernels(EncodeKernelRecipe(true, 2, row)), "") << cols;
  }
}

// Crash 2 (request_fuzzer): a valid override temperature of FLT_MAX times RESAMPLE's factor (>= 2) overflowed
// float, and the step was answered with applied.temperature = +inf. Fixed in core/strategy.cc (Decide keeps
// the temperature <= FLT_MAX).
TEST(FuzzRegression, HugeValidTemperatureIsAppliedFiniteUnderEveryProfile) {
  std::vector<float> logits(256), attention(4 * 64);
  for (size_t i = 0; i < logits.size(); ++i) logits[i] = static_cast<float>((i * 37) % 11) * 0.01f;
  for (size_t i = 0; i < attention.size(); ++i) attention[i] = static_cast<float>((i * 13) % 7);
  for (const char* profile : {"entropix", "entropix-frog", "fixed"}) {
    v1::SampleRequest request;
    v1::Step* step = request.add_steps();
    step->set_sequence_id("hot");
    step->set_seed(5);
    step->set_profile(profile);
    step->mutable_params()->set_temperature(FLT_MAX);
    step->mutable_logits()->set_dtype(v1::DTYPE_F32);
    step->mutable_logits()->add_shape(static_cast<int64_t>(logits.size()));
    step->mutable_logits()->set_data(std::string(reinterpret_cast<const char*>(logits.data()), logits.size() * 4));
    step->mutable_attention()->set_dtype(v1::DTYPE_F32);
    step->mutable_attention()->add_shape(4);
    step->mutable_attention()->add_shape(64);
    step->mutable_attention()->set_data(
        std::string(reinterpret_cast<const char*>(attention.data()), attention.size() * 4));
    EXPECT_EQ(CheckRequest(request.SerializeAsString()), "") << profile;
  }
}

// Crash 3 (request_fuzzer, UBSan): EXPLORE widens top_k by up to 1.5x; a valid override of INT32_MAX became
// 3.2e9, converted to int32 (undefined; on x86 INT32_MIN, so top-k was silently switched off). Fixed in
// core/strategy.cc (capped at INT32_MAX before the conversion).
TEST(FuzzRegression, ExploreKeepsAnInt32MaxTopK) {
  const std::shared_ptr<const ProfileRegistry> profiles = ProfileRegistry::BuiltIn();
  const Profile* entropix = profiles->Find("entropix");
  ASSERT_NE(entropix, nullptr);
  SamplingConfig base = entropix->base();
  base.top_k = std::numeric_limits<int32_t>::max();
  MetricValues metrics;
  metrics.logits_entropy = 1.0;  // entropix EXPLORE: entropy < 5 and varentropy > 5
  metrics.logits_varentropy = 10.0;
  const Decision d = Decide(*entropix, base, metrics, {}, 32000);
  ASSERT_EQ(d.regime, v1::REGIME_EXPLORE);
  EXPECT_EQ(d.params.top_k, std::numeric_limits<int32_t>::max());
}

// Crash 4 (request_fuzzer, replay check): with several bad logit_bias entries the error named whichever the
// map met first, and protobuf maps iterate in a different order in each copy of a request, so the same step got
// different messages. Fixed in core/sampling_config.cc and core/sampler_chain.cc (the lowest bad id is named).
TEST(FuzzRegression, LogitBiasErrorsNameTheLowestBadTokenInEveryCopy) {
  v1::SamplingParams params;
  for (int32_t t = 1; t <= 40; ++t) (*params.mutable_logit_bias())[-t] = 1.0f;
  (*params.mutable_logit_bias())[7] = std::numeric_limits<float>::infinity();
  std::set<std::string> messages;
  for (int copy = 0; copy < 10; ++copy) {
    const v1::SamplingParams copied = params;
    const absl::Status s = ValidateSamplingParams(copied, "params");
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    messages.insert(std::string(s.message()));
  }
  EXPECT_EQ(messages, (std::set<std::string>{"params.logit_bias: token ids must be >= 0, got -40"}));

  // Ids outside the vocabulary: the lowest is named.
  v1::SamplingParams outside;
  for (int32_t t = 100; t < 140; ++t) (*outside.mutable_logit_bias())[t] = 1.0f;
  std::vector<float> logits(50, 0.0f);
  for (int copy = 0; copy < 10; ++copy) {
    const v1::SamplingParams copied = outside;
    SamplingConfig config;
    ApplyOverrides(copied, &config);
    ChainScratch scratch;
    absl::StatusOr<const float*> adjusted = ApplyLogitAdjustments(logits.data(), 50, config, {}, &scratch);
    ASSERT_FALSE(adjusted.ok());
    EXPECT_THAT(std::string(adjusted.status().message()), ::testing::HasSubstr("token id 100 is outside"));
  }
}

}  // namespace
}  // namespace samplerd::fuzz
