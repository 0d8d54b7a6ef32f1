// Pins the six metrics to the float64 golden values within tests/golden/README.md's tolerances, for every golden
// case, sent as float32 and (for the bf16-exact case) as bfloat16.
#include <cstring>
#include <optional>
#include <string>

#include "core/metrics.h"
#include "core/tensor_view.h"
#include "gtest/gtest.h"
#include "tests/core/golden_cases.h"

namespace samplerd {
namespace {

using testing::Array;
using testing::GoldenJson;
using testing::LoadInput;
using testing::WithinTolerance;

class MetricsGoldenTest : public ::testing::Test {
 protected:
  static void ExpectMetric(const std::string& name, double got, const nlohmann::json& expected) {
    const auto& tol = GoldenJson()["conventions"]["tolerances"]["metrics"][name];
    const double want = expected[name].get<double>();
    EXPECT_TRUE(WithinTolerance(got, want, tol["abs"].get<double>(), tol["rel"].get<double>()))
        << name << ": got " << got << ", expected " << want << " (diff " << got - want << ")";
  }

  // Views `a` as the given dtype: float32 directly, bf16 through a converted byte buffer.
  static RawTensor Raw(const Array& a, DType dtype, std::string* storage) {
    if (dtype == DType::kF32) {
      *storage = a.Bytes();
    } else {
      storage->resize(a.values.size() * 2);
      for (size_t i = 0; i < a.values.size(); ++i) {
        const uint16_t h = FloatToBFloat16(a.values[i]);
        std::memcpy(storage->data() + 2 * i, &h, 2);
      }
    }
    return RawTensor{static_cast<int>(dtype), a.shape, *storage};
  }

  static void Check(const nlohmann::json& c, DType dtype) {
    const Array& logits = LoadInput(c["logits"]);
    std::string logit_bytes, attn_bytes;
    std::vector<float> scratch;
    MetricsScratch metrics_scratch;
    absl::StatusOr<FloatView> z =
        ValidateTensor(Raw(logits, dtype, &logit_bytes), TensorRole::kLogits, TensorLimits{}, "logits", &scratch);
    ASSERT_TRUE(z.ok()) << z.status();
    absl::StatusOr<LogitsSummary> s = SummarizeLogits(*z, &metrics_scratch);
    if (!c["expect_error"].is_null()) {
      ASSERT_FALSE(s.ok());
      EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
      return;
    }
    ASSERT_TRUE(s.ok()) << s.status();
    const nlohmann::json& m = c["metrics"];
    ExpectMetric("logits_entropy", s->entropy, m);
    ExpectMetric("logits_varentropy", s->varentropy, m);
    EXPECT_EQ(s->argmax, c["argmax"].get<int>());
    for (const auto& lp : c["logprob_of"]) {
      const int token = lp["token"];
      EXPECT_NEAR(s->LogProb(z->data[token]), lp["logprob"].get<double>(), 1e-4) << "token " << token;
    }

    if (c["attention"].is_null()) {
      EXPECT_TRUE(m["attn_entropy"].is_null());
      return;
    }
    const Array& attention = LoadInput(c["attention"]);
    std::vector<float> attn_scratch;
    absl::StatusOr<FloatView> a = ValidateTensor(Raw(attention, dtype, &attn_bytes), TensorRole::kAttention,
                                                 TensorLimits{}, "attention", &attn_scratch);
    ASSERT_TRUE(a.ok()) << a.status();
    absl::StatusOr<std::optional<AttentionMetrics>> am = ComputeAttentionMetrics(*a, &metrics_scratch);
    ASSERT_TRUE(am.ok()) << am.status();
    if (m["attn_entropy"].is_null()) {
      EXPECT_FALSE(am->has_value()) << "every row is masked: attention metrics must be absent";
      return;
    }
    ASSERT_TRUE(am->has_value());
    EXPECT_EQ((*am)->rows_used, c["attention_rows_used"].get<int64_t>());
    ExpectMetric("attn_entropy", (*am)->entropy, m);
    ExpectMetric("attn_varentropy", (*am)->varentropy, m);
    ExpectMetric("agreement", (*am)->agreement, m);
    ExpectMetric("interaction_strength", (*am)->interaction_strength, m);
  }
};

TEST_F(MetricsGoldenTest, EveryCaseWithinToleranceAsFloat32) {
  for (const nlohmann::json& c : testing::GoldenCases()) {
    SCOPED_TRACE(testing::CaseName(c));
    Check(c, DType::kF32);
  }
}

// Only the bf16_exact_* inputs are bfloat16-representable, so only they must give the same metrics as bf16.
TEST_F(MetricsGoldenTest, BFloat16ExactCasesGiveTheSameMetricsAsBFloat16) {
  int checked = 0;
  for (const nlohmann::json& c : testing::GoldenCases()) {
    if (c["name"].get<std::string>().rfind("bf16_exact", 0) != 0) continue;
    SCOPED_TRACE(testing::CaseName(c));
    Check(c, DType::kBF16);
    ++checked;
  }
  EXPECT_GE(checked, 1) << "no bf16_exact_* case in the golden set";
}

}  // namespace
}  // namespace samplerd
