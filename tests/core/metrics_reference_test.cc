// Pins the metrics to a direct float64 transcription of docs/contract.md section 3 on shapes and values the golden
// cases do not cover: wide score ranges (so the 1e-10 clip of the attention probabilities bites), masked
// entries and rows, one row, stacked layers, logits with -inf and huge offsets.
#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/metrics.h"
#include "gtest/gtest.h"

namespace samplerd {
namespace {

constexpr double kLn2 = 0.69314718055994530942;

struct Reference {
  double entropy, varentropy, agreement, interaction;
};

std::optional<Reference> AttentionReference(const std::vector<float>& s, int64_t rows, int64_t cols) {
  std::vector<std::vector<double>> a;
  std::vector<double> h;
  double abs_sum = 0;
  int64_t finite = 0;
  for (int64_t r = 0; r < rows; ++r) {
    double m = -INFINITY;
    for (int64_t k = 0; k < cols; ++k) m = std::max(m, static_cast<double>(s[r * cols + k]));
    if (m == -INFINITY) continue;
    std::vector<double> row(cols);
    double z = 0;
    for (int64_t k = 0; k < cols; ++k) {
      const double v = s[r * cols + k];
      row[k] = v == -INFINITY ? 0.0 : std::exp(v - m);
      z += row[k];
      if (v != -INFINITY) {
        abs_sum += std::abs(v);
        ++finite;
      }
    }
    double hr = 0;
    for (double& p : row) {
      p /= z;
      hr -= p * std::log2(std::clamp(p, 1e-10, 1.0));
    }
    a.push_back(row);
    h.push_back(hr);
  }
  if (a.empty()) return std::nullopt;
  const double n = static_cast<double>(a.size());
  Reference ref{};
  for (double v : h) ref.entropy += v / n;
  for (double v : h) ref.varentropy += (v - ref.entropy) * (v - ref.entropy) / n;
  for (int64_t k = 0; k < cols; ++k) {
    double mean = 0;
    for (const auto& row : a) mean += row[k] / n;
    for (const auto& row : a) ref.agreement += std::abs(row[k] - mean);
  }
  ref.agreement /= n * static_cast<double>(cols);
  ref.interaction = abs_sum / static_cast<double>(finite);
  return ref;
}

void ExpectClose(double got, double want, double abs_tol, double rel_tol, const char* what) {
  EXPECT_LE(std::abs(got - want), abs_tol + rel_tol * std::abs(want)) << what << ": got " << got << ", want " << want;
}

TEST(MetricsReferenceTest, AttentionMatchesTheContractOnRandomShapesAndMasks) {
  std::mt19937 gen(11);
  for (int trial = 0; trial < 30; ++trial) {
    const int64_t rows = 1 + trial % 9, cols = 1 + (trial * 397) % 3000;
    const float sigma = trial % 3 == 0 ? 12.0f : 1.0f + static_cast<float>(trial % 5);  // 12: clip bites
    std::normal_distribution<float> normal(0.0f, sigma);
    std::uniform_real_distribution<float> u(0, 1);
    std::vector<float> s(static_cast<size_t>(rows * cols));
    for (float& v : s) v = u(gen) < 0.1f ? -INFINITY : normal(gen);
    if (trial % 4 == 1 && rows > 1) {
      for (int64_t k = 0; k < cols; ++k) s[static_cast<size_t>(cols + k)] = -INFINITY;  // a masked row
    }
    MetricsScratch scratch;
    const FloatView view{s.data(), rows, cols};
    auto got = ComputeAttentionMetrics(view, &scratch);
    ASSERT_TRUE(got.ok()) << got.status();
    const std::optional<Reference> want = AttentionReference(s, rows, cols);
    ASSERT_EQ(got->has_value(), want.has_value()) << "trial " << trial;
    if (!want) continue;
    SCOPED_TRACE(::testing::Message() << "trial " << trial << " [" << rows << ", " << cols << "] sigma " << sigma);
    ExpectClose((*got)->entropy, want->entropy, 1e-6, 1e-6, "attn_entropy");
    ExpectClose((*got)->varentropy, want->varentropy, 1e-8, 6e-5, "attn_varentropy");
    ExpectClose((*got)->agreement, want->agreement, 1e-9, 5e-6, "agreement");
    ExpectClose((*got)->interaction_strength, want->interaction, 1e-7, 1e-6, "interaction_strength");
  }
}

// The attention's rows are scanned and exponentiated in groups of 8 (kernels::kAgreementGroup): a group's first
// row is scanned (max, min, sum |S|, masks) on its own, each other row while the one before it is exponentiated.
// Here the first row of each later group differs from its neighbours: masked entirely, scaled up (the clamp and the
// clip), partly masked, shifted down, and NaN (the error names that row), on rows whose next row's scan runs inside the
// exponentials (1000, 4096) and on longer ones: a scan used for the wrong row shows in every metric.
TEST(MetricsReferenceTest, FirstRowsOfLaterGroupsMatchTheContract) {
  for (int64_t cols : {1000, 4096, 4100}) {
    std::mt19937 gen(static_cast<uint32_t>(cols));
    std::normal_distribution<float> normal(0.0f, 2.0f);
    constexpr int64_t kRows = 33;
    std::vector<float> s(static_cast<size_t>(kRows * cols));
    for (float& v : s) v = normal(gen);
    const auto row = [&](int64_t r) { return s.begin() + r * cols; };
    std::fill(row(8), row(9), -INFINITY);
    std::transform(row(16), row(17), row(16), [](float v) { return 12.0f * v + 40.0f; });
    for (int64_t k = 0; k < cols; k += 2) row(24)[k] = -INFINITY;
    std::transform(row(32), row(33), row(32), [](float v) { return 0.1f * v - 7.0f; });
    SCOPED_TRACE(::testing::Message() << "[" << kRows << ", " << cols << "]");
    MetricsScratch scratch;
    auto got = ComputeAttentionMetrics(FloatView{s.data(), kRows, cols}, &scratch);
    ASSERT_TRUE(got.ok()) << got.status();
    ASSERT_TRUE(got->has_value());
    const std::optional<Reference> want = AttentionReference(s, kRows, cols);
    EXPECT_EQ((*got)->rows_used, kRows - 1) << "row 8 is masked";
    ExpectClose((*got)->entropy, want->entropy, 1e-6, 1e-6, "attn_entropy");
    ExpectClose((*got)->varentropy, want->varentropy, 1e-8, 6e-5, "attn_varentropy");
    ExpectClose((*got)->agreement, want->agreement, 1e-9, 5e-6, "agreement");
    ExpectClose((*got)->interaction_strength, want->interaction, 1e-7, 1e-6, "interaction_strength");

    row(16)[cols - 1] = NAN;
    auto bad = ComputeAttentionMetrics(FloatView{s.data(), kRows, cols}, &scratch);
    ASSERT_FALSE(bad.ok());
    EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(bad.status().message().find(absl::StrCat("row 16, position ", cols - 1)), std::string_view::npos)
        << bad.status();
  }
}

// Agreement near 0 is where float32 bites: the deviations are differences of nearly equal probabilities, and a
// column mean rounded to float32 alone is off by an ulp of a probability (~1e-8 for short rows), above the
// contract's 1e-9 absolute tolerance. One row must give exactly 0, identical rows 0 within it, and rows that
// differ by 1e-6 their float64 agreement, on short rows and long ones.
TEST(MetricsReferenceTest, AgreementOfIdenticalAndNearlyIdenticalRowsIsResolved) {
  std::mt19937 gen(5);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (int64_t cols : {1, 2, 3, 5, 7, 16, 33, 100, 255, 256, 1000, 4096}) {
    for (int64_t rows : {1, 2, 3, 4, 7, 9, 32}) {
      std::vector<float> base(static_cast<size_t>(cols));
      for (float& v : base) v = normal(gen);
      for (float noise : {0.0f, 1e-6f, 1e-4f}) {
        std::vector<float> s(static_cast<size_t>(rows * cols));
        for (int64_t i = 0; i < rows * cols; ++i) s[i] = base[i % cols] + noise * normal(gen);
        MetricsScratch scratch;
        auto got = ComputeAttentionMetrics(FloatView{s.data(), rows, cols}, &scratch);
        ASSERT_TRUE(got.ok()) << got.status();
        ASSERT_TRUE(got->has_value());
        const std::optional<Reference> want = AttentionReference(s, rows, cols);
        SCOPED_TRACE(::testing::Message() << "[" << rows << ", " << cols << "] noise " << noise);
        if (rows == 1) {
          EXPECT_EQ((*got)->agreement, 0.0);
        }
        ExpectClose((*got)->agreement, want->agreement, 1e-9, 5e-6, "agreement");
      }
    }
  }
}

TEST(MetricsReferenceTest, ClipOfTinyProbabilitiesIsApplied) {
  // One row: a dominant score and 200000 positions 24.2 nats down, each with a probability of about 3e-11,
  // just under the contract's clip at 1e-10: together they move the entropy by about 1e-5 bits, ten times the
  // tolerance, so an implementation without the clip fails here.
  constexpr int64_t kCols = 200001;
  std::vector<float> s(kCols, -24.2f);
  s[0] = 0.0f;
  MetricsScratch scratch;
  auto got = ComputeAttentionMetrics(FloatView{s.data(), 1, kCols}, &scratch);
  ASSERT_TRUE(got.ok());
  const std::optional<Reference> want = AttentionReference(s, 1, kCols);
  ExpectClose((*got)->entropy, want->entropy, 1e-6, 1e-6, "attn_entropy");
  const double z = 1 + (kCols - 1) * std::exp(-24.2);
  const double p = std::exp(-24.2) / z;
  const double unclipped = -(1 / z) * std::log2(1 / z) - (kCols - 1) * p * std::log2(p);
  EXPECT_GT(std::abs(unclipped - want->entropy), 5e-6) << "the case must distinguish clipped from unclipped";
}

// Entropy and varentropy (bits, bits^2) of softmax(z) in float64, as the contract writes them.
std::pair<double, double> LogitsReference(const std::vector<float>& z) {
  double m = -INFINITY;
  for (float x : z) m = std::max(m, static_cast<double>(x));
  double zsum = 0;
  for (float x : z) zsum += x == -INFINITY ? 0 : std::exp(x - m);
  double h = 0;
  for (float x : z) {
    if (x == -INFINITY) continue;
    const double p = std::exp(x - m) / zsum;
    if (p > 0) h -= p * std::log2(p);
  }
  double var = 0;
  for (float x : z) {
    if (x == -INFINITY) continue;
    const double p = std::exp(x - m) / zsum;
    if (p > 0) var += p * (std::log2(p) + h) * (std::log2(p) + h);
  }
  return {h, var};
}

TEST(MetricsReferenceTest, LogitsMatchTheContractWithNegativeInfinityAndOffsets) {
  std::mt19937 gen(5);
  for (int trial = 0; trial < 20; ++trial) {
    const int64_t v = 1 + (trial * 7919) % 200000;
    std::normal_distribution<float> normal(trial % 2 ? 1000.0f : 0.0f, 0.5f + static_cast<float>(trial % 7));
    std::vector<float> z(static_cast<size_t>(v));
    for (size_t i = 0; i < z.size(); ++i) z[i] = i % 5 == 3 ? -INFINITY : normal(gen);
    z[0] = normal(gen);
    const auto [h, var] = LogitsReference(z);
    MetricsScratch scratch;
    auto got = SummarizeLogits(FloatView{z.data(), 1, v}, &scratch);
    ASSERT_TRUE(got.ok());
    SCOPED_TRACE(::testing::Message() << "trial " << trial << " vocab " << v);
    ExpectClose(got->entropy, h, 1e-6, 1e-6, "logits_entropy");
    ExpectClose(got->varentropy, var, 1e-6, 1e-6, "logits_varentropy");
  }
}

// Vocabularies of the common models' sizes, whole and partial last blocks: the contract values on logits whose max
// rises along the array (the one pass's running shift moves again and again), with masked runs, a huge spread and a
// huge offset; and the error for NaN and +inf at the first bad index.
TEST(MetricsReferenceTest, LogitsOfEveryVocabularySizeMatchTheContract) {
  std::mt19937 gen(8);
  for (int64_t v : {int64_t{32000}, int64_t{50257}, int64_t{128256}, int64_t{196607}, int64_t{256077}}) {
    for (int variant = 0; variant < 4; ++variant) {
      std::normal_distribution<float> normal(variant == 3 ? 1000.0f : 0.0f, variant == 2 ? 1e6f : 2.0f);
      std::vector<float> z(static_cast<size_t>(v));
      for (size_t i = 0; i < z.size(); ++i) {
        z[i] = normal(gen);
        if (variant == 0) z[i] += 30.0f * static_cast<float>(i) / static_cast<float>(v);
        if (variant == 1 && i % 1000 < 400) z[i] = -INFINITY;
      }
      const auto [h, var] = LogitsReference(z);
      MetricsScratch scratch;
      auto got = SummarizeLogits(FloatView{z.data(), 1, v}, &scratch);
      ASSERT_TRUE(got.ok());
      SCOPED_TRACE(::testing::Message() << "vocab " << v << " variant " << variant);
      ExpectClose(got->entropy, h, 1e-6, 1e-6, "logits_entropy");
      ExpectClose(got->varentropy, var, 1e-6, 1e-6, "logits_varentropy");
      for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
        std::vector<float> y = z;
        y[static_cast<size_t>(v / 3)] = bad;
        y[static_cast<size_t>(v - 1)] = bad;  // a later one must not be the one named
        auto refused = SummarizeLogits(FloatView{y.data(), 1, v}, &scratch);
        ASSERT_FALSE(refused.ok());
        EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
        EXPECT_NE(refused.status().message().find(absl::StrCat("at index ", v / 3)), std::string::npos)
            << refused.status();
      }
    }
  }
}

}  // namespace
}  // namespace samplerd
