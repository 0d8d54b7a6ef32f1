// Pins RunStep as the service sees it: every bad input of issue 2's catalogue is rejected with the field
// and the received value; the token is a pure function of (seed, sequence_id, step) whatever the thread,
// the order of steps around it or the workspace's history; and the response fields (top logprobs, regime,
// applied params) are consistent.
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/functional/function_ref.h"
#include "core/field_error.h"
#include "core/fork_join.h"
#include "core/step_engine.h"
#include "gtest/gtest.h"

namespace samplerd {
namespace {

struct OwnedStep {
  std::string id;
  uint64_t step = 0;
  uint64_t seed = 1;
  std::vector<float> logits;
  std::vector<int64_t> logits_shape;
  std::string logits_bytes;
  int logits_dtype = 1;
  std::vector<float> attention;
  std::vector<int64_t> attention_shape;
  std::string attention_bytes;
  std::vector<int32_t> recent;
  v1::SamplingParams params;
  bool has_params = false;
  std::string profile;
  int32_t top_logprobs = 0;

  StepInput Input() {
    if (logits_bytes.empty() && !logits.empty()) {
      logits_bytes.assign(reinterpret_cast<const char*>(logits.data()), logits.size() * 4);
    }
    if (logits_shape.empty() && !logits.empty()) logits_shape = {static_cast<int64_t>(logits.size())};
    StepInput in;
    in.sequence_id = id;
    in.step = step;
    in.seed = seed;
    in.logits = RawTensor{logits_dtype, logits_shape, logits_bytes};
    if (!attention.empty() || !attention_shape.empty()) {
      attention_bytes.assign(reinterpret_cast<const char*>(attention.data()), attention.size() * 4);
      in.attention = RawTensor{1, attention_shape, attention_bytes};
    }
    in.recent_tokens = recent;
    if (has_params) in.overrides = &params;
    in.profile = profile;
    in.top_logprobs = top_logprobs;
    return in;
  }
};

OwnedStep RandomStep(uint64_t index, int vocab = 4000) {
  std::mt19937 gen(static_cast<uint32_t>(index));
  std::normal_distribution<float> normal(0.0f, 1.0f + static_cast<float>(index % 4));
  OwnedStep s;
  s.id = "seq-" + std::to_string(index % 7);
  s.step = index;
  s.seed = 1000 + index;
  s.logits.resize(static_cast<size_t>(vocab));
  for (float& x : s.logits) x = normal(gen);
  s.attention_shape = {4, 64};
  s.attention.resize(256);
  for (float& x : s.attention) x = normal(gen);
  return s;
}

absl::Status RunOwned(OwnedStep& s, StepOutput* out) {
  Workspace ws;
  StepInput in = s.Input();
  return RunStep(*ProfileRegistry::BuiltIn(), TensorLimits{}, in, &ws, out);
}

struct BadStep {
  const char* name;
  void (*mutate)(OwnedStep*);
  const char* field;
  const char* mentions;
};

class RunStepRejectsTest : public ::testing::TestWithParam<BadStep> {};

TEST_P(RunStepRejectsTest, WithInvalidArgumentNamingFieldAndValue) {
  OwnedStep s = RandomStep(3, 100);
  GetParam().mutate(&s);
  StepOutput out;
  const absl::Status status = RunOwned(s, &out);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_EQ(ErrorField(status), GetParam().field) << status;
  EXPECT_NE(status.message().find(GetParam().mentions), absl::string_view::npos) << status.message();
}

INSTANTIATE_TEST_SUITE_P(
    Catalogue, RunStepRejectsTest,
    ::testing::Values(
        BadStep{"wrong_dtype", [](OwnedStep* s) { s->logits_dtype = 5; }, "logits.dtype", "got 5"},
        BadStep{"length_mismatch", [](OwnedStep* s) { s->logits_shape = {99}; }, "logits.data", "got 400"},
        BadStep{"empty_logits",
                [](OwnedStep* s) {
                  s->logits.clear();
                  s->logits_shape = {0};
                },
                "logits.shape", "[0]"},
        BadStep{"nan_logit", [](OwnedStep* s) { s->logits[17] = NAN; }, "logits.data", "NaN at index 17"},
        BadStep{"posinf_logit", [](OwnedStep* s) { s->logits[5] = INFINITY; }, "logits.data", "+inf at index 5"},
        BadStep{"all_neginf",
                [](OwnedStep* s) {
                  for (float& x : s->logits) x = -INFINITY;
                },
                "logits.data", "all 100 logits are -inf"},
        BadStep{"attention_rank1", [](OwnedStep* s) { s->attention_shape = {256}; }, "attention.shape", "[256]"},
        BadStep{"attention_nan", [](OwnedStep* s) { s->attention[70] = NAN; }, "attention.data", "row 1, position 6"},
        BadStep{"shape_overflow",
                [](OwnedStep* s) {
                  s->attention_shape = {1LL << 31, 1LL << 31, 1LL << 31};
                },
                "attention.shape", "overflows"},
        BadStep{"top_p_above_one",
                [](OwnedStep* s) {
                  s->has_params = true;
                  s->params.set_top_p(1.5f);
                },
                "params.top_p", "got 1.5"},
        BadStep{"top_p_zero",
                [](OwnedStep* s) {
                  s->has_params = true;
                  s->params.set_top_p(0.0f);
                },
                "params.top_p", "got 0"},
        BadStep{"negative_top_k",
                [](OwnedStep* s) {
                  s->has_params = true;
                  s->params.set_top_k(-1);
                },
                "params.top_k", "got -1"},
        BadStep{"negative_temperature",
                [](OwnedStep* s) {
                  s->has_params = true;
                  s->params.set_temperature(-1);
                },
                "params.temperature", "got -1"},
        BadStep{"nan_temperature",
                [](OwnedStep* s) {
                  s->has_params = true;
                  s->params.set_temperature(NAN);
                },
                "params.temperature", "got nan"},
        BadStep{"min_p_above_one",
                [](OwnedStep* s) {
                  s->has_params = true;
                  s->params.set_min_p(2);
                },
                "params.min_p", "got 2"},
        BadStep{"too_many_samples",
                [](OwnedStep* s) {
                  s->has_params = true;
                  s->params.set_n_adaptive_samples(65);
                },
                "params.n_adaptive_samples", "got 65"},
        BadStep{"too_many_top_logprobs", [](OwnedStep* s) { s->top_logprobs = 21; }, "top_logprobs", "got 21"},
        BadStep{"negative_top_logprobs", [](OwnedStep* s) { s->top_logprobs = -1; }, "top_logprobs", "got -1"},
        BadStep{"recent_token_out_of_vocab",
                [](OwnedStep* s) {
                  s->recent = {3, 100};
                },
                "recent_tokens[1]", "got 100"},
        BadStep{"negative_recent_token", [](OwnedStep* s) { s->recent = {-2}; }, "recent_tokens[0]", "got -2"},
        BadStep{"bias_out_of_vocab",
                [](OwnedStep* s) {
                  s->has_params = true;
                  (*s->params.mutable_logit_bias())[100] = 1;
                },
                "params.logit_bias", "token id 100"},
        BadStep{"zero_repetition_penalty",
                [](OwnedStep* s) {
                  s->has_params = true;
                  s->params.set_repetition_penalty(0);
                },
                "params.repetition_penalty", "got 0"}),
    [](const ::testing::TestParamInfo<BadStep>& info) { return std::string(info.param.name); });

TEST(RunStepTest, UnknownProfileIsNotFound) {
  OwnedStep s = RandomStep(1);
  s.profile = "nope";
  StepOutput out;
  const absl::Status status = RunOwned(s, &out);
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(ErrorField(status), "profile");
}

TEST(RunStepTest, TokenIsAPureFunctionOfSeedSequenceAndStep) {
  constexpr int kSteps = 48;
  std::vector<OwnedStep> steps;
  for (int i = 0; i < kSteps; ++i) steps.push_back(RandomStep(static_cast<uint64_t>(i)));
  std::vector<int32_t> reference(kSteps);
  for (int i = 0; i < kSteps; ++i) {
    StepOutput out;
    ASSERT_TRUE(RunOwned(steps[static_cast<size_t>(i)], &out).ok());
    reference[static_cast<size_t>(i)] = out.token;
  }
  // Another batch composition: reversed order through one reused workspace (its buffers carry the
  // previous, larger steps' contents).
  {
    Workspace ws;
    StepOutput out;
    OwnedStep big = RandomStep(999, 60000);
    StepInput big_in = big.Input();
    ASSERT_TRUE(RunStep(*ProfileRegistry::BuiltIn(), TensorLimits{}, big_in, &ws, &out).ok());
    for (int i = kSteps - 1; i >= 0; --i) {
      StepInput in = steps[static_cast<size_t>(i)].Input();
      ASSERT_TRUE(RunStep(*ProfileRegistry::BuiltIn(), TensorLimits{}, in, &ws, &out).ok());
      EXPECT_EQ(out.token, reference[static_cast<size_t>(i)]) << "step " << i;
    }
  }
  // Other threads, interleaved.
  std::vector<std::vector<int32_t>> by_thread(3, std::vector<int32_t>(kSteps, -1));
  std::vector<std::thread> threads;
  for (int t = 0; t < 3; ++t) {
    threads.emplace_back([&, t] {
      Workspace ws;
      StepOutput out;
      for (int i = t; i < kSteps + t; ++i) {
        const int index = i % kSteps;
        OwnedStep copy = steps[static_cast<size_t>(index)];
        copy.logits_bytes.clear();
        StepInput in = copy.Input();
        if (RunStep(*ProfileRegistry::BuiltIn(), TensorLimits{}, in, &ws, &out).ok()) {
          by_thread[static_cast<size_t>(t)][static_cast<size_t>(index)] = out.token;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  for (const auto& tokens : by_thread) EXPECT_EQ(tokens, reference);
}

TEST(RunStepTest, TopLogprobsAreTheBestTokensUnderTheUnmodifiedLogits) {
  OwnedStep s = RandomStep(11, 1000);
  s.top_logprobs = 20;
  s.has_params = true;
  (*s.params.mutable_logit_bias())[0] = 50.0f;  // changes the draw, not the reported logprobs
  StepOutput out;
  ASSERT_TRUE(RunOwned(s, &out).ok());
  ASSERT_EQ(out.top.size(), 20u);
  double lse = 0;
  const float m = *std::max_element(s.logits.begin(), s.logits.end());
  for (float x : s.logits) lse += std::exp(static_cast<double>(x - m));
  for (size_t i = 0; i < out.top.size(); ++i) {
    const auto [id, logprob] = out.top[i];
    EXPECT_NEAR(logprob, s.logits[static_cast<size_t>(id)] - m - std::log(lse), 1e-5);
    if (i > 0) {
      EXPECT_GE(out.top[i - 1].second, logprob);
    }
  }
  EXPECT_EQ(out.token, 0) << "a +50 bias makes token 0 all but certain";
}

TEST(RunStepTest, TopListsOnlyTokensWithAFiniteLogprob) {
  OwnedStep s;
  s.id = "masked";
  const float kMasked = -std::numeric_limits<float>::infinity();
  s.logits = {kMasked, 1.0f, kMasked, 0.5f, kMasked, kMasked, 2.0f, kMasked};
  s.top_logprobs = 5;
  StepOutput out;
  ASSERT_TRUE(RunOwned(s, &out).ok());
  ASSERT_EQ(out.top.size(), 3u) << "three finite tokens, not five entries padded with masked ones";
  EXPECT_EQ(out.top[0].first, 6);
  EXPECT_EQ(out.top[1].first, 1);
  EXPECT_EQ(out.top[2].first, 3);
  for (const auto& [id, logprob] : out.top) EXPECT_TRUE(std::isfinite(logprob)) << id;
}

TEST(RunStepTest, SequenceIdOverTheCapIsInvalidArgumentNamingTheField) {
  OwnedStep s = RandomStep(3, 100);
  s.id = std::string(kMaxSequenceIdBytes, 'x');
  StepOutput out;
  EXPECT_TRUE(RunOwned(s, &out).ok());
  s.id.push_back('x');
  const absl::Status status = RunOwned(s, &out);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ErrorField(status), "sequence_id");
  EXPECT_LT(status.message().size(), 200u) << "the id is not quoted";
}

TEST(RunStepTest, UnknownProfileNameIsQuotedShort) {
  OwnedStep s = RandomStep(4, 100);
  s.profile = std::string(100000, 'p');
  StepOutput out;
  const absl::Status status = RunOwned(s, &out);
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_LT(status.message().size(), kMaxQuotedBytes + 100);
  EXPECT_NE(status.message().find("(100000 bytes)"), absl::string_view::npos) << status.message();
}

TEST(TrimWorkspace, FreesTheLargestBuffersUntilTheRestFitTheBound) {
  Workspace ws;
  ws.attention_buffer.resize(750);      // 3000 bytes
  ws.metrics.exact_probs.resize(1000);  // 8000 bytes
  ws.metrics.row_stats.resize(10);
  ws.logits_buffer.resize(10);
  TrimWorkspace(&ws, /*keep_bytes=*/4000);
  EXPECT_EQ(ws.metrics.exact_probs.capacity(), 0u) << "the largest: freed";
  EXPECT_EQ(ws.attention_buffer.capacity(), 750u) << "the rest fit in 4000 bytes: kept";
  EXPECT_EQ(ws.logits_buffer.capacity(), 10u);
  EXPECT_EQ(ws.metrics.row_stats.capacity(), 10u);
  OwnedStep s = RandomStep(5, 100);
  StepOutput out;
  StepInput in = s.Input();
  EXPECT_TRUE(RunStep(*ProfileRegistry::BuiltIn(), TensorLimits{}, in, &ws, &out).ok()) << "a trimmed workspace works";
}

// Each buffer under the bound, all of them together far over it: what stays is bounded as a whole.
TEST(TrimWorkspace, BoundsTheSumOfBuffersEachUnderTheBound) {
  Workspace ws;
  ws.logits_buffer.resize(900);
  ws.attention_buffer.resize(800);
  ws.metrics.attn_exp.resize(700);
  ws.metrics.column_means.resize(600);
  ws.chain.logits.resize(500);
  TrimWorkspace(&ws, /*keep_bytes=*/4000);  // each is at most 3600 bytes, 14000 together
  const size_t kept = ws.logits_buffer.capacity() + ws.attention_buffer.capacity() + ws.metrics.attn_exp.capacity() +
                      ws.metrics.column_means.capacity() + ws.chain.logits.capacity();
  EXPECT_LE(kept * sizeof(float), 4000u);
  EXPECT_EQ(ws.chain.logits.capacity(), 500u) << "the smallest stays";
  EXPECT_EQ(ws.logits_buffer.capacity(), 0u) << "the largest goes";
}

TEST(RunStepTest, ClarifyWithATokenOutsideTheVocabularySamplesInstead) {
  // Uniform logits over 1000 tokens: entropy ~10 bits, varentropy 0 -> CLARIFY under entropix; its
  // clarifying token 2564 does not exist in this vocabulary, so it must draw, not emit an invalid id.
  OwnedStep s;
  s.id = "tiny";
  s.logits.assign(1000, 0.0f);
  StepOutput out;
  ASSERT_TRUE(RunOwned(s, &out).ok());
  EXPECT_EQ(out.regime, v1::REGIME_CLARIFY);
  EXPECT_TRUE(out.drew);
  EXPECT_GE(out.token, 0);
  EXPECT_LT(out.token, 1000);
}

TEST(RunStepTest, AProfilesBiasOutsideTheVocabularyIsAnErrorThatNamesTheProfile) {
  absl::StatusOr<std::shared_ptr<const ProfileRegistry>> registry =
      ProfileRegistry::FromJson(R"({"profiles": [{"name": "biased", "params": {"logitBias": {"50000": 1.0}}}]})");
  ASSERT_TRUE(registry.ok()) << registry.status();
  OwnedStep s = RandomStep(3, 100);
  s.profile = "biased";
  Workspace ws;
  StepOutput out;
  StepInput in = s.Input();
  const absl::Status status = RunStep(**registry, TensorLimits{}, in, &ws, &out);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ErrorField(status), "params.logit_bias");
  EXPECT_NE(status.message().find("profile \"biased\""), absl::string_view::npos) << status;
  // The request's own bias is the request's.
  s.params.mutable_logit_bias()->insert({60000, 1.0f});
  s.has_params = true;
  in = s.Input();
  const absl::Status own = RunStep(**registry, TensorLimits{}, in, &ws, &out);
  EXPECT_EQ(ErrorField(own), "params.logit_bias");
  EXPECT_EQ(own.message().find("profile"), absl::string_view::npos) << own;
}

TEST(RunStepTest, GreedyOverrideIsArgmaxWithLowestIdOnTies) {
  OwnedStep s = RandomStep(5, 500);
  s.logits[400] = 100.0f;
  s.logits[123] = 100.0f;
  s.profile = "fixed";
  s.has_params = true;
  s.params.set_temperature(0.0f);
  StepOutput out;
  ASSERT_TRUE(RunOwned(s, &out).ok());
  EXPECT_EQ(out.token, 123);
  EXPECT_EQ(out.regime, v1::REGIME_FIXED);
  EXPECT_EQ(out.applied.temperature, 0.0f);
}

// Stands for a host rewriting its shared-memory slot while the step runs: once the metrics pass (the first Run,
// whose `mine` holds the logits pass) has read the logits, their bytes become `after`, and every later read of
// RunStep sees those instead.
class RewriteLogitsAfterMetrics final : public ForkJoin {
 public:
  RewriteLogitsAfterMetrics(std::string* bytes, std::vector<float> after) : bytes_(bytes), after_(std::move(after)) {}

  void Run(absl::FunctionRef<void()> mine, absl::FunctionRef<void()> theirs) override {
    mine();
    theirs();
    if (!rewritten_) std::memcpy(bytes_->data(), after_.data(), after_.size() * sizeof(float));
    rewritten_ = true;
  }

  bool rewritten() const { return rewritten_; }

 private:
  std::string* bytes_;
  std::vector<float> after_;
  bool rewritten_ = false;
};

// The greedy draw looks for the max where the metrics pass saw it and finds it unchanged, while the top list
// reads a logit that has become huge since: an OK answer would list a log-probability above 0, which no one
// state of the tensor gives.
TEST(RunStepTest, ATopLogprobFromLogitsRewrittenAfterTheMetricsIsAnErrorOnLogitsData) {
  OwnedStep s = RandomStep(6, 1000);
  s.logits[10] = 20.0f;                              // the max, drawn greedily
  s.attention_shape = {8, kMinSharedAttention / 8};  // large enough for the metrics pass to use the fork-join
  s.attention.resize(static_cast<size_t>(kMinSharedAttention));
  std::mt19937 gen(6);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (float& x : s.attention) x = normal(gen);
  s.profile = "fixed";
  s.has_params = true;
  s.params.set_temperature(0.0f);
  s.top_logprobs = 5;
  const std::vector<float> before = s.logits;
  StepInput in = s.Input();
  Workspace ws;
  StepOutput out;

  RewriteLogitsAfterMetrics unchanged(&s.logits_bytes, before);
  ASSERT_TRUE(RunStep(*ProfileRegistry::BuiltIn(), TensorLimits{}, in, &ws, &out, &unchanged).ok());
  ASSERT_TRUE(unchanged.rewritten()) << "the logits pass ran without the fork-join";
  EXPECT_EQ(out.token, 10);
  ASSERT_FALSE(out.top.empty());
  EXPECT_EQ(out.top[0].first, 10);

  std::vector<float> after = before;
  after[11] = 3.4e38f;  // in the max's block of kernels::kMaxBlock, which the top list's scan reads
  RewriteLogitsAfterMetrics rewritten(&s.logits_bytes, after);
  const absl::Status status = RunStep(*ProfileRegistry::BuiltIn(), TensorLimits{}, in, &ws, &out, &rewritten);
  ASSERT_TRUE(rewritten.rewritten());
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument)
      << "token " << out.token << " top[0] " << (out.top.empty() ? 0 : out.top[0].first) << " logprob "
      << (out.top.empty() ? 0.0f : out.top[0].second);
  EXPECT_EQ(ErrorField(status), "logits.data");
}

// Every logit masked after the metrics pass found a finite max: the drawn token's logit is then -inf, and its
// top list is empty, neither of which one state of the tensor gives (a drawn token is finite, and a step has a
// finite logit).
TEST(RunStepTest, ADrawnTokenMaskedByARewriteAfterTheMetricsIsAnErrorOnLogitsData) {
  OwnedStep s = RandomStep(7, 1000);
  s.attention_shape = {8, kMinSharedAttention / 8};  // large enough for the metrics pass to use the fork-join
  s.attention.assign(static_cast<size_t>(kMinSharedAttention), 0.5f);
  s.top_logprobs = 8;
  for (const float temperature : {0.0f, 1.0f}) {  // greedy, and a draw from the chain's candidates
    s.profile = "fixed";
    s.has_params = true;
    s.params.set_temperature(temperature);
    StepInput in = s.Input();
    Workspace ws;
    StepOutput out;
    RewriteLogitsAfterMetrics masked(&s.logits_bytes,
                                     std::vector<float>(s.logits.size(), -std::numeric_limits<float>::infinity()));
    const absl::Status status = RunStep(*ProfileRegistry::BuiltIn(), TensorLimits{}, in, &ws, &out, &masked);
    ASSERT_TRUE(masked.rewritten());
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument)
        << "temperature " << temperature << ": token " << out.token << " logprob " << out.logprob << ", "
        << out.top.size() << " listed";
    EXPECT_EQ(ErrorField(status), "logits.data");
    std::memcpy(s.logits_bytes.data(), s.logits.data(), s.logits.size() * sizeof(float));
  }
}

// bf16 is converted inside the metrics' first pass (not before it): the step must be exactly the f32 step of
// the same values, with masked positions, a fully masked head, array tails of every instruction set, a
// workspace that served other dtypes before, and the same error for a NaN or +inf in bf16.
TEST(StepEngineTest, Bf16StepIsExactlyTheF32StepOfItsValues) {
  const int64_t vocab = 32011, heads = 6, kv = 1031;
  std::mt19937 gen(5);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::vector<uint16_t> logits_bf16(static_cast<size_t>(vocab)), attention_bf16(static_cast<size_t>(heads * kv));
  std::vector<float> logits(logits_bf16.size()), attention(attention_bf16.size());
  for (size_t i = 0; i < logits.size(); ++i) {
    logits_bf16[i] = FloatToBFloat16(i % 97 == 5 ? -INFINITY : normal(gen));
    logits[i] = BFloat16ToFloat(logits_bf16[i]);
  }
  for (size_t i = 0; i < attention.size(); ++i) {
    const int64_t head = static_cast<int64_t>(i) / kv;
    const bool masked = head == 2 || (head == 4 && i % 3 == 0);
    attention_bf16[i] = FloatToBFloat16(masked ? -INFINITY : normal(gen));
    attention[i] = BFloat16ToFloat(attention_bf16[i]);
  }
  const std::vector<int64_t> logits_shape = {vocab}, attention_shape = {heads, kv};
  const auto bytes = [](const auto& v) {
    return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(v[0]));
  };
  const std::string f32_logits = bytes(logits), f32_attention = bytes(attention);
  std::string bf16_logits = bytes(logits_bf16), bf16_attention = bytes(attention_bf16);
  const auto input = [&](int dtype, const std::string& z, const std::string& a) {
    StepInput in;
    in.sequence_id = "bf16";
    in.step = 3;
    in.seed = 11;
    in.top_logprobs = 5;
    in.logits = RawTensor{dtype, logits_shape, z};
    in.attention = RawTensor{dtype, attention_shape, a};
    return in;
  };
  for (const char* profile : {"entropix", "entropix-frog", "fixed"}) {
    Workspace ws;
    StepOutput want, got;
    StepInput f32 = input(1, f32_logits, f32_attention), bf16 = input(3, bf16_logits, bf16_attention);
    f32.profile = bf16.profile = profile;
    ASSERT_TRUE(RunStep(*ProfileRegistry::BuiltIn(), TensorLimits{}, f32, &ws, &want).ok());
    ASSERT_TRUE(RunStep(*ProfileRegistry::BuiltIn(), TensorLimits{}, bf16, &ws, &got).ok());
    EXPECT_EQ(got.metrics.logits_entropy, want.metrics.logits_entropy) << profile;
    EXPECT_EQ(got.metrics.logits_varentropy, want.metrics.logits_varentropy) << profile;
    ASSERT_TRUE(got.metrics.attention.has_value() && want.metrics.attention.has_value());
    EXPECT_EQ(got.metrics.attention->entropy, want.metrics.attention->entropy) << profile;
    EXPECT_EQ(got.metrics.attention->varentropy, want.metrics.attention->varentropy) << profile;
    EXPECT_EQ(got.metrics.attention->agreement, want.metrics.attention->agreement) << profile;
    EXPECT_EQ(got.metrics.attention->interaction_strength, want.metrics.attention->interaction_strength);
    EXPECT_EQ(got.metrics.attention->rows_used, heads - 1);
    EXPECT_EQ(got.token, want.token) << profile;
    EXPECT_EQ(got.logprob, want.logprob) << profile;
    EXPECT_EQ(got.regime, want.regime) << profile;
    EXPECT_EQ(got.top, want.top) << profile;
  }
  for (int which = 0; which < 2; ++which) {
    for (uint16_t bad : {uint16_t{0x7fc0}, uint16_t{0x7f80}}) {  // NaN, +inf
      std::string z = bf16_logits, a = bf16_attention;
      std::string& target = which == 0 ? z : a;
      const size_t at = which == 0 ? 31999 : static_cast<size_t>(4 * kv + 1030);
      std::memcpy(&target[2 * at], &bad, 2);
      Workspace ws;
      StepOutput out;
      StepInput in = input(3, z, a);
      in.profile = "entropix";
      const absl::Status s = RunStep(*ProfileRegistry::BuiltIn(), TensorLimits{}, in, &ws, &out);
      EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
      EXPECT_NE(s.message().find(which == 0 ? "at index 31999" : "at row 4, position 1030"), std::string::npos)
          << s.message();
    }
  }
}

}  // namespace
}  // namespace samplerd
