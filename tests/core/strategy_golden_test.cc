// Pins the decision tree, the regime formulas and the sampler chain to the golden cases: for every case and
// profile (entropix, entropix-frog, fixed with the golden request params) and with recent_tokens as given
// and followed by the clarifying token: the regime, the action, the applied parameters (rel 1e-4, top_k
// exact), the candidate set after the chain (boundary ids may go either way) with its probabilities, and
// that RunStep's drawn token always lies in that set.
#include <algorithm>
#include <set>
#include <string>
#include <vector>

#include "core/counter_rng.h"
#include "core/field_error.h"
#include "core/metrics.h"
#include "core/profile.h"
#include "core/sampler_chain.h"
#include "core/step_engine.h"
#include "core/strategy.h"
#include "gtest/gtest.h"
#include "tests/core/golden_cases.h"

namespace samplerd {
namespace {

using testing::Array;
using testing::GoldenJson;
using testing::LoadInput;

constexpr int32_t kClarifyingToken = 2564;

struct Variant {
  std::string profile;  // registry name
  bool after_clarify;   // recent_tokens + [2564]
  std::string Key() const { return profile + (after_clarify ? "_after_clarify" : ""); }
};

const Variant kVariants[] = {
    {"entropix", false}, {"entropix", true}, {"entropix-frog", false}, {"entropix-frog", true}, {"fixed", false}};

v1::SamplingParams FixedRequestParams() {
  const auto& p = GoldenJson()["conventions"]["fixed_request_params"];
  v1::SamplingParams params;
  params.set_temperature(p["temperature"].get<float>());
  params.set_top_k(p["top_k"].get<int>());
  params.set_top_p(p["top_p"].get<float>());
  params.set_min_p(p["min_p"].get<float>());
  return params;
}

Action ExpectedAction(const std::string& action) {
  if (action == "greedy") return Action::kGreedy;
  if (action == "emit_clarifying_token") return Action::kEmitToken;
  if (action == "best_of_n") return Action::kBestOfN;
  return Action::kSample;
}

// One golden case loaded: its inputs, metrics and recent tokens, as the tests below use them.
struct GoldenCase {
  // ASSERTs that the inputs load and the metrics compute; a caller checks HasFatalFailure() after it.
  void Load(const nlohmann::json& c) {
    json = &c;
    logits = &LoadInput(c["logits"]);
    absl::StatusOr<LogitsSummary> s = SummarizeLogits(FloatView{logits->values.data(), 1, logits->shape[0]}, &scratch);
    ASSERT_TRUE(s.ok()) << s.status();
    metrics.logits_entropy = s->entropy;
    metrics.logits_varentropy = s->varentropy;
    if (!c["attention"].is_null()) {
      attention = &LoadInput(c["attention"]);
      const int64_t cols = attention->shape.back();
      const int64_t rows = static_cast<int64_t>(attention->values.size()) / cols;
      auto a = ComputeAttentionMetrics(FloatView{attention->values.data(), rows, cols}, &scratch);
      ASSERT_TRUE(a.ok()) << a.status();
      metrics.attention = *a;
    }
    for (const auto& t : c["recent_tokens"]) recent.push_back(t.get<int32_t>());
  }

  std::vector<int32_t> Recent(const Variant& v) const {
    std::vector<int32_t> r = recent;
    if (v.after_clarify) r.push_back(kClarifyingToken);
    return r;
  }

  SamplingConfig Base(const Profile& profile, const Variant& v) const {
    SamplingConfig base = profile.base();
    if (v.profile == "fixed") ApplyOverrides(fixed_params, &base);
    return base;
  }

  StepInput Input(const Variant& v, const std::vector<int32_t>& recent_tokens, uint64_t seed) {
    StepInput in;
    in.sequence_id = (*json)["name"].get_ref<const std::string&>();
    in.step = 3;
    in.seed = seed;
    logit_bytes = logits->Bytes();
    in.logits = RawTensor{1, logits->shape, logit_bytes};
    if (attention != nullptr) {
      attn_bytes = attention->Bytes();
      in.attention = RawTensor{1, attention->shape, attn_bytes};
    }
    in.recent_tokens = recent_tokens;
    in.profile = v.profile;
    if (v.profile == "fixed") in.overrides = &fixed_params;
    return in;
  }

  const nlohmann::json* json = nullptr;
  const Array* logits = nullptr;
  const Array* attention = nullptr;
  MetricsScratch scratch;
  MetricValues metrics;
  std::vector<int32_t> recent;
  v1::SamplingParams fixed_params = FixedRequestParams();
  std::string logit_bytes, attn_bytes;
};

// Runs `check(case_json, loaded_case)` for every golden case that expects a result; stops at the first fatal
// failure (the trace names the case).
template <typename Check>
void ForEachResultCase(Check check) {
  for (const nlohmann::json& c : testing::GoldenCases(/*rejected=*/false)) {
    SCOPED_TRACE(testing::CaseName(c));
    GoldenCase g;
    g.Load(c);
    if (::testing::Test::HasFatalFailure()) return;
    check(c, g);
    if (::testing::Test::HasFatalFailure()) return;
  }
}

TEST(StrategyGoldenTest, RegimeActionAndParams) {
  ForEachResultCase([](const nlohmann::json& c, GoldenCase& g) {
    const auto registry = ProfileRegistry::BuiltIn();
    for (const Variant& v : kVariants) {
      SCOPED_TRACE(v.Key());
      const Profile* profile = registry->Find(v.profile);
      ASSERT_NE(profile, nullptr);
      const std::vector<int32_t> recent = g.Recent(v);
      const Decision d = Decide(*profile, g.Base(*profile, v), g.metrics, recent, g.logits->shape[0]);
      const auto& expected = c["regimes"][v.profile];
      const std::string suffix = v.after_clarify ? "_after_clarify" : "";
      EXPECT_EQ(v1::Regime_Name(d.regime), "REGIME_" + expected["regime" + suffix].get<std::string>());
      EXPECT_EQ(d.action, ExpectedAction(expected["action" + suffix]));
      const auto& params = expected["params" + suffix];
      if (params.is_null()) continue;
      const double tol = GoldenJson()["conventions"]["tolerances"]["params"]["rel"];
      EXPECT_NEAR(d.params.temperature, params["temperature"].get<double>(), tol * params["temperature"].get<double>());
      EXPECT_NEAR(d.params.top_p, params["top_p"].get<double>(), tol * params["top_p"].get<double>());
      EXPECT_NEAR(d.params.min_p, params["min_p"].get<double>(), tol * params["min_p"].get<double>());
      EXPECT_EQ(d.params.top_k, params["top_k"].get<int>());
      EXPECT_EQ(d.params.n_adaptive_samples, params["n_samples"].get<int>());
    }
  });
}

TEST(StrategyGoldenTest, CandidateSetsAfterTheChain) {
  ForEachResultCase([](const nlohmann::json& c, GoldenCase& g) {
    const auto registry = ProfileRegistry::BuiltIn();
    const auto& tol = GoldenJson()["conventions"]["tolerances"]["candidate_probs"];
    for (const Variant& v : kVariants) {
      SCOPED_TRACE(v.Key());
      const Profile* profile = registry->Find(v.profile);
      const std::vector<int32_t> recent = g.Recent(v);
      const Decision d = Decide(*profile, g.Base(*profile, v), g.metrics, recent, g.logits->shape[0]);
      const auto& expected = c["candidates"][v.Key()];
      ASSERT_FALSE(expected["truncated"].get<bool>());
      std::vector<int32_t> got_ids;
      std::vector<double> got_probs;
      if (d.action == Action::kEmitToken) {
        got_ids = {d.emit_token};
        got_probs = {1.0};
      } else if (d.action == Action::kGreedy) {
        got_ids = {GreedyToken(g.logits->values.data(), g.logits->shape[0])};
        got_probs = {1.0};
      } else {
        ChainScratch chain;
        Candidates cands;
        ASSERT_TRUE(BuildCandidates(g.logits->values.data(), g.logits->shape[0], d.params, &chain, &cands).ok());
        ASSERT_TRUE(cands.sorted);
        for (const WeightedToken& t : cands.tokens) {
          got_ids.push_back(t.id);
          got_probs.push_back(t.weight / cands.total);
        }
      }
      const std::set<int32_t> boundary(expected["boundary_ids"].begin(), expected["boundary_ids"].end());
      const std::vector<int32_t> want_ids = expected["ids"].get<std::vector<int32_t>>();
      const std::set<int32_t> want(want_ids.begin(), want_ids.end()), got(got_ids.begin(), got_ids.end());
      for (int32_t id : want) {
        EXPECT_TRUE(boundary.count(id) || got.count(id)) << "missing candidate " << id;
      }
      for (int32_t id : got) {
        EXPECT_TRUE(boundary.count(id) || want.count(id)) << "extra candidate " << id;
      }
      if (got == want) {
        // Same set: same order (descending probability, lower id first on ties) and probabilities.
        EXPECT_EQ(got_ids, want_ids);
        const std::vector<double> want_probs = expected["probs"].get<std::vector<double>>();
        for (size_t i = 0; i < want_probs.size() && i < got_probs.size(); ++i) {
          EXPECT_TRUE(testing::WithinTolerance(got_probs[i], want_probs[i], tol["abs"], tol["rel"]))
              << "id " << want_ids[i] << ": got " << got_probs[i] << ", expected " << want_probs[i];
        }
      }
    }
  });
}

TEST(StrategyGoldenTest, DrawnTokenAlwaysInTheCandidateSet) {
  ForEachResultCase([](const nlohmann::json& c, GoldenCase& g) {
    const auto registry = ProfileRegistry::BuiltIn();
    Workspace ws;
    StepOutput out;
    for (const Variant& v : kVariants) {
      SCOPED_TRACE(v.Key());
      const auto& expected = c["candidates"][v.Key()];
      std::set<int32_t> allowed(expected["ids"].begin(), expected["ids"].end());
      allowed.insert(expected["boundary_ids"].begin(), expected["boundary_ids"].end());
      const std::vector<int32_t> recent = g.Recent(v);
      const uint64_t case_seed = c["seed"].get<uint64_t>();
      for (uint64_t seed = case_seed; seed < case_seed + 40; ++seed) {
        StepInput in = g.Input(v, recent, seed);
        ASSERT_TRUE(RunStep(*registry, TensorLimits{}, in, &ws, &out).ok());
        EXPECT_TRUE(allowed.count(out.token)) << "seed " << seed << " drew " << out.token;
        EXPECT_EQ(v1::Regime_Name(out.regime),
                  "REGIME_" + c["regimes"][v.profile]["regime" + std::string(v.after_clarify ? "_after_clarify" : "")]
                                  .get<std::string>());
        // logprob under the unmodified logits (nats), abs 1e-3.
        const float z = g.logits->values[static_cast<size_t>(out.token)];
        double lse = 0;
        double m = *std::max_element(g.logits->values.begin(), g.logits->values.end());
        for (float x : g.logits->values) lse += std::exp(static_cast<double>(x) - m);
        EXPECT_NEAR(out.logprob, z - m - std::log(lse), GoldenJson()["conventions"]["tolerances"]["logprob_abs"]);
      }
    }
  });
}

TEST(StrategyGoldenTest, RejectedCasesFailRunStepWithInvalidArgumentNamingTheLogits) {
  const std::vector<nlohmann::json> rejected = testing::GoldenCases(/*rejected=*/true);
  ASSERT_FALSE(rejected.empty()) << "the golden set has a case that expects INVALID_ARGUMENT";
  for (const nlohmann::json& c : rejected) {
    SCOPED_TRACE(testing::CaseName(c));
    const Array& logits = LoadInput(c["logits"]);
    const std::string bytes = logits.Bytes();
    StepInput in;
    in.logits = RawTensor{1, logits.shape, bytes};
    Workspace ws;
    StepOutput out;
    const absl::Status s = RunStep(*ProfileRegistry::BuiltIn(), TensorLimits{}, in, &ws, &out);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_EQ(ErrorField(s), "logits.data");
  }
}

}  // namespace
}  // namespace samplerd
