// Pins every instruction set's reduction kernels (whatever this CPU can run, SSE2 always) to a float64
// reference: the block-double accumulation keeps them within a few float32 ulps of the exact sums, NaN and
// +inf are found at the right index, and -inf / huge negative inputs never produce NaN.
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/reduce_kernels.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace samplerd::kernels {
namespace {

class ReduceKernelsTest : public ::testing::TestWithParam<const KernelTable*> {};

TEST_P(ReduceKernelsTest, ExpSumsMatchAFloat64Reference) {
  const KernelTable& k = *GetParam();
  std::mt19937 gen(1);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  for (int64_t n : {1, 7, 63, 64, 65, 1000, 128257}) {
    std::vector<float> x(static_cast<size_t>(n));
    for (float& v : x) v = normal(gen);
    const float m = k.ScanMax(x.data(), n, nullptr).max;
    std::vector<float> e(x.size());
    double sum_e = 0, sum_ed = 0;
    k.ExpShifted(x.data(), n, m, e.data(), &sum_e, &sum_ed, nullptr, 0, true, nullptr, nullptr);
    double ref_e = 0, ref_ed = 0;
    for (float v : x) {
      const double d = static_cast<double>(v) - m;
      ref_e += std::exp(d);
      ref_ed += std::exp(d) * d;
    }
    EXPECT_NEAR(sum_e, ref_e, 4e-7 * ref_e) << k.name << " n=" << n;
    EXPECT_NEAR(sum_ed, ref_ed, 4e-7 * std::abs(ref_ed) + 1e-9) << k.name << " n=" << n;
    const double ref_mean = ref_ed / ref_e;
    double ref_m2 = 0;
    for (float v : x) {
      const double dev = (static_cast<double>(v) - m) - ref_mean;
      ref_m2 += std::exp(static_cast<double>(v) - m) * dev * dev;
    }
    double w = 0, mean = 0, m2 = 0;
    std::vector<float> blocks(static_cast<size_t>(3 * MomentBlocks(n)));
    k.ExpMoments(x.data(), n, m, blocks.data(), &w, &mean, &m2, true);
    EXPECT_NEAR(w, ref_e, 4e-7 * ref_e) << k.name << " n=" << n;
    EXPECT_NEAR(mean, ref_mean, 4e-7 * std::abs(ref_mean) + 1e-9) << k.name << " n=" << n;
    EXPECT_NEAR(m2, ref_m2, 1e-6 * ref_m2 + 1e-12) << k.name << " n=" << n;
  }
}

// Whole blocks run their exponentials through the software pipeline (ExpStream), a row's last partial block one
// batch at a time: an entry's exponential must not depend on which path took it, nor on its place in the
// pipeline, masked entries included.
TEST_P(ReduceKernelsTest, PipelinedExponentialsEqualTheOneAtATimePath) {
  const KernelTable& k = *GetParam();
  std::mt19937 gen(23);
  std::uniform_real_distribution<float> uniform(-95.0f, 0.0f);
  const int64_t n = 4096 + 37;
  std::vector<float> x(static_cast<size_t>(n));
  for (float& v : x) v = uniform(gen);
  for (int64_t i = 0; i < n; i += 97) x[static_cast<size_t>(i)] = -std::numeric_limits<float>::infinity();
  std::vector<float> e(x.size());
  double sum_e = 0, sum_ed = 0;
  k.ExpShifted(x.data(), n, 0.0f, e.data(), &sum_e, &sum_ed, nullptr, 0, true, nullptr, nullptr);
  for (int64_t i = 0; i < n; ++i) {
    float alone = -1;
    double s = 0, sd = 0;
    k.ExpShifted(x.data() + i, 1, 0.0f, &alone, &s, &sd, nullptr, 0, true, nullptr, nullptr);
    uint32_t a = 0, b = 0;
    std::memcpy(&a, &e[static_cast<size_t>(i)], sizeof(a));
    std::memcpy(&b, &alone, sizeof(b));
    ASSERT_EQ(a, b) << k.name << " x[" << i << "] = " << x[static_cast<size_t>(i)];
  }
}

// The callers skip the clamp when the scans show every shifted value at or above kMinShifted; the kernels must
// then give the same bits as with it, exponentials included (values down to the clamp itself, lengths with
// tails). ScanMax's min is what the logits' caller decides on.
TEST_P(ReduceKernelsTest, SkippingTheClampChangesNoBitWhenNothingIsBelowIt) {
  const KernelTable& k = *GetParam();
  std::mt19937 gen(17);
  std::uniform_real_distribution<float> uniform(kMinShifted, 0.0f);
  for (int64_t n : {1, 17, 255, 256, 1000, 4099}) {
    std::vector<float> x(static_cast<size_t>(n));
    for (float& v : x) v = uniform(gen) + 3.0f;
    if (n > 1) x[static_cast<size_t>(n - 1)] = kMinShifted + 3.0f;  // exactly at the clamp
    x[0] = 3.0f;                                                    // the shift: d = 0
    const ScanResult scan = k.ScanMax(x.data(), n, nullptr);
    EXPECT_EQ(scan.min, *std::min_element(x.begin(), x.end())) << k.name << " n=" << n;
    ASSERT_GE(scan.min - scan.max, kMinShifted) << k.name << " n=" << n;
    std::vector<float> e1(x.size()), e2(x.size());
    double s1 = 0, sd1 = 0, s2 = 0, sd2 = 0;
    k.ExpShifted(x.data(), n, 3.0f, e1.data(), &s1, &sd1, nullptr, 0, true, nullptr, nullptr);
    k.ExpShifted(x.data(), n, 3.0f, e2.data(), &s2, &sd2, nullptr, 0, false, nullptr, nullptr);
    EXPECT_EQ(e1, e2) << k.name << " n=" << n;
    EXPECT_EQ(s1, s2) << k.name << " n=" << n;
    EXPECT_EQ(sd1, sd2) << k.name << " n=" << n;
    std::vector<float> blocks(static_cast<size_t>(3 * MomentBlocks(n)));
    double w1 = 0, m1 = 0, q1 = 0, w2 = 0, m2 = 0, q2 = 0;
    k.ExpMoments(x.data(), n, 3.0f, blocks.data(), &w1, &m1, &q1, true);
    k.ExpMoments(x.data(), n, 3.0f, blocks.data(), &w2, &m2, &q2, false);
    EXPECT_EQ(w1, w2) << k.name << " n=" << n;
    EXPECT_EQ(m1, m2) << k.name << " n=" << n;
    EXPECT_EQ(q1, q2) << k.name << " n=" << n;
  }
  std::vector<float> masked(300, 1.0f);
  masked[299] = -INFINITY;
  EXPECT_EQ(k.ScanMax(masked.data(), 300, nullptr).min, -INFINITY) << k.name;
  masked[299] = 1.0f;
  masked[7] = -INFINITY;  // in a full block
  EXPECT_EQ(k.ScanMax(masked.data(), 300, nullptr).min, -INFINITY) << k.name;
}

// LogitsPass (one read: exponentials against a running shift, each block's max taken beside them) gives
// ScanMax's max, argmax and block maxima exactly, and the moments within ExpMoments' tolerances of a float64
// reference; logits that rise along the array move the shift (in every block for the shorter ones, each block
// then done again), masked runs leave blocks empty, a masked first block delays the first shift.
TEST_P(ReduceKernelsTest, LogitsPassGivesTheScanAndTheMomentsOfOneRead) {
  const KernelTable& k = *GetParam();
  std::mt19937 gen(11);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  for (int64_t n : {1, 7, 255, 256, 257, 1000, 4099, 128257}) {
    for (int variant = 0; variant < 4; ++variant) {
      std::vector<float> x(static_cast<size_t>(n));
      for (size_t i = 0; i < x.size(); ++i) {
        x[i] = normal(gen);
        if (variant == 1) x[i] += 40.0f * static_cast<float>(i) / static_cast<float>(n);  // a rising max
        if (variant == 2 && i % 700 < 300) x[i] = -INFINITY;                              // masked runs
        if (variant == 3) x[i] -= 200.0f * static_cast<float>(i % 2);                     // half far below the clamp
      }
      if (variant == 2) x[static_cast<size_t>(n - 1)] = 1.0f;  // at least one finite entry
      std::vector<float> want_blocks(static_cast<size_t>(MaxBlocks(n))), got_blocks(want_blocks.size());
      const ScanResult scan = k.ScanMax(x.data(), n, want_blocks.data());
      std::vector<float> summaries(static_cast<size_t>(LogitsPassBlockFloats(n)));
      const LogitsMoments got = k.LogitsPass(x.data(), n, got_blocks.data(), summaries.data());
      const std::string label = std::string(k.name) + " n=" + std::to_string(n) + " variant " + std::to_string(variant);
      EXPECT_EQ(got.first_bad, -1) << label;
      EXPECT_EQ(got.max, scan.max) << label;
      EXPECT_EQ(got.argmax, scan.argmax) << label;
      EXPECT_EQ(got_blocks, want_blocks) << label;
      double ref_e = 0, ref_ed = 0;
      for (float v : x) {
        if (v == -INFINITY) continue;
        const double d = static_cast<double>(v) - scan.max;
        ref_e += std::exp(d);
        ref_ed += std::exp(d) * d;
      }
      const double ref_mean = ref_ed / ref_e;
      double ref_m2 = 0;
      for (float v : x) {
        if (v == -INFINITY) continue;
        const double dev = (static_cast<double>(v) - scan.max) - ref_mean;
        ref_m2 += std::exp(static_cast<double>(v) - scan.max) * dev * dev;
      }
      EXPECT_NEAR(got.sum_e, ref_e, 4e-7 * ref_e) << label;
      EXPECT_NEAR(got.mean_d, ref_mean, 4e-7 * std::abs(ref_mean) + 1e-9) << label;
      EXPECT_NEAR(got.m2, ref_m2, 1e-6 * ref_m2 + 1e-12) << label;
    }
  }
}

// NaN and +inf anywhere (in a full block, in the partial last one, in a block of nothing but -inf before any
// finite logit) are found at their index; a later bad value does not win.
TEST_P(ReduceKernelsTest, LogitsPassFindsNanAndPositiveInfinityAtTheirIndex) {
  const KernelTable& k = *GetParam();
  const int64_t n = 1000;
  std::vector<float> blocks(static_cast<size_t>(LogitsPassBlockFloats(n)));
  for (int masked_prefix = 0; masked_prefix < 2; ++masked_prefix) {
    for (int64_t pos : {0, 5, 16, 255, 256, 600, 999}) {
      for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
        std::vector<float> x(static_cast<size_t>(n));
        for (int64_t i = 0; i < n; ++i) x[static_cast<size_t>(i)] = static_cast<float>((i * 7) % 13) - 6.0f;
        if (masked_prefix == 1) std::fill(x.begin(), x.begin() + 512, -INFINITY);
        x[static_cast<size_t>(pos)] = bad;
        if (pos < 999) x[999] = std::numeric_limits<float>::infinity();
        EXPECT_EQ(k.LogitsPass(x.data(), n, nullptr, blocks.data()).first_bad, pos)
            << k.name << " pos=" << pos << " bad=" << bad << " masked prefix " << masked_prefix;
      }
    }
  }
  std::vector<float> ok(static_cast<size_t>(n), -INFINITY);
  ok[500] = std::numeric_limits<float>::max();
  ok[501] = -std::numeric_limits<float>::max();
  const LogitsMoments r = k.LogitsPass(ok.data(), n, nullptr, blocks.data());
  EXPECT_EQ(r.first_bad, -1) << k.name;
  EXPECT_EQ(r.max, std::numeric_limits<float>::max()) << k.name;
  EXPECT_EQ(r.argmax, 500) << k.name;
  EXPECT_EQ(r.sum_e, 1.0) << k.name;
  EXPECT_EQ(r.mean_d, 0.0) << k.name;
  EXPECT_EQ(r.m2, 0.0) << k.name;
  std::vector<float> masked(static_cast<size_t>(n), -INFINITY);
  const LogitsMoments all_masked = k.LogitsPass(masked.data(), n, nullptr, blocks.data());
  EXPECT_EQ(all_masked.first_bad, -1) << k.name;
  EXPECT_EQ(all_masked.max, -INFINITY) << k.name;
}

TEST_P(ReduceKernelsTest, FindsNanAndPositiveInfinityAtTheirIndex) {
  const KernelTable& k = *GetParam();
  for (int64_t pos : {0, 5, 16, 63, 64, 999}) {
    for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
      std::vector<float> x(1000, 1.0f);
      x[static_cast<size_t>(pos)] = bad;
      EXPECT_EQ(k.ScanMax(x.data(), 1000, nullptr).first_bad, pos) << k.name << " bad=" << bad;
    }
  }
  std::vector<float> ok(1000, -std::numeric_limits<float>::infinity());
  ok[500] = std::numeric_limits<float>::max();
  const ScanResult r = k.ScanMax(ok.data(), 1000, nullptr);
  EXPECT_EQ(r.first_bad, -1);
  EXPECT_EQ(r.max, std::numeric_limits<float>::max());
}

TEST_P(ReduceKernelsTest, NegativeInfinityAndHugeGapsGiveZeroWeightNotNan) {
  const KernelTable& k = *GetParam();
  std::vector<float> x(200, -std::numeric_limits<float>::infinity());
  x[3] = std::numeric_limits<float>::max();
  x[150] = -std::numeric_limits<float>::max();
  std::vector<float> e(x.size());
  double sum_e = 0, sum_ed = 0;
  k.ExpShifted(x.data(), 200, x[3], e.data(), &sum_e, &sum_ed, nullptr, 0, true, nullptr, nullptr);
  EXPECT_EQ(sum_e, 1.0);
  EXPECT_EQ(sum_ed, 0.0);
  double w = 0, mean = 0, m2 = 0;
  std::vector<float> blocks(static_cast<size_t>(3 * MomentBlocks(200)));
  k.ExpMoments(x.data(), 200, x[3], blocks.data(), &w, &mean, &m2, true);
  EXPECT_EQ(w, 1.0);
  EXPECT_EQ(mean, 0.0);
  EXPECT_EQ(m2, 0.0);
}

TEST_P(ReduceKernelsTest, VarianceDoesNotCancelWhenTheMassSitsFarFromTheMax) {
  // One token at +5 over 128k tokens at N(0, 0.1): the mass sits near d = -5 with a tiny spread, where
  // E[d^2] - E[d]^2 would lose most digits.
  const KernelTable& k = *GetParam();
  std::mt19937 gen(9);
  std::normal_distribution<float> normal(0.0f, 0.1f);
  std::vector<float> x(128256);
  for (float& v : x) v = normal(gen);
  x[77] = 5.0f;
  double ref_e = 0, ref_ed = 0;
  for (float v : x) {
    const double d = static_cast<double>(v) - 5.0;
    ref_e += std::exp(d);
    ref_ed += std::exp(d) * d;
  }
  const double ref_mean = ref_ed / ref_e;
  double ref_m2 = 0;
  for (float v : x) {
    const double d = static_cast<double>(v) - 5.0;
    ref_m2 += std::exp(d) * (d - ref_mean) * (d - ref_mean);
  }
  double w = 0, mean = 0, m2 = 0;
  std::vector<float> blocks(static_cast<size_t>(3 * MomentBlocks(128256)));
  k.ExpMoments(x.data(), 128256, 5.0f, blocks.data(), &w, &mean, &m2, true);
  EXPECT_NEAR(m2 / w, ref_m2 / ref_e, 1e-6 * ref_m2 / ref_e) << k.name;
}

TEST_P(ReduceKernelsTest, ScanRowSumsAbsoluteValuesOverFiniteEntries) {
  const KernelTable& k = *GetParam();
  std::vector<float> x(131);
  double ref = 0;
  float max = -INFINITY;
  for (size_t i = 0; i < x.size(); ++i) {
    x[i] = i % 3 == 0 ? -INFINITY : (i % 2 ? -0.5f : 1.25f) * static_cast<float>(i);
    if (i % 3 != 0) ref += std::abs(x[i]);
    max = std::max(max, x[i]);
  }
  const RowScan r = k.ScanRow(x.data(), 131);
  EXPECT_EQ(r.finite_count, 131 - 44);
  EXPECT_NEAR(r.abs_sum, ref, 1e-9 * ref);
  EXPECT_EQ(r.max, max);
  x[100] = NAN;
  EXPECT_EQ(k.ScanRow(x.data(), 131).first_bad, 100);
}

// Rows long enough for many blocks of every instruction set: blocks of finite values take ScanRow's fast
// path, blocks holding -inf, NaN, +inf or |x| near FLT_MAX the checked one; both must agree with the reference.
TEST_P(ReduceKernelsTest, ScanRowAgreesAcrossFastAndCheckedBlocks) {
  const KernelTable& k = *GetParam();
  std::mt19937 gen(7);
  std::normal_distribution<float> normal(0.0f, 4.0f);
  const int64_t n = 5000;  // 19 AVX-512 blocks and a tail
  for (int variant = 0; variant < 4; ++variant) {
    std::vector<float> x(static_cast<size_t>(n));
    for (float& v : x) v = normal(gen);
    if (variant >= 1) {
      for (int64_t i = 1000; i < 1600; i += 3) x[static_cast<size_t>(i)] = -INFINITY;  // masked positions
    }
    if (variant >= 2) x[4100] = 3e38f, x[4101] = -3e38f;  // a block whose float sum overflows
    if (variant == 3) x[2] = -INFINITY, x[4999] = -INFINITY;
    double ref = 0;
    int64_t count = 0;
    float max = -INFINITY, lo = INFINITY;
    for (float v : x) {
      max = std::max(max, v);
      if (v == -INFINITY) continue;
      ref += std::abs(static_cast<double>(v));
      ++count;
      lo = std::min(lo, v);
    }
    RowScan r = k.ScanRow(x.data(), n);
    EXPECT_EQ(r.first_bad, -1) << k.name << " variant " << variant;
    EXPECT_EQ(r.finite_count, count) << k.name << " variant " << variant;
    EXPECT_NEAR(r.abs_sum, ref, 1e-6 * ref) << k.name << " variant " << variant;
    EXPECT_EQ(r.max, max) << k.name << " variant " << variant;
    EXPECT_EQ(r.min_finite, lo) << k.name << " variant " << variant;
    for (int64_t pos : {3, 1200, 4100, 4998}) {
      for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
        std::vector<float> y = x;
        y[static_cast<size_t>(pos)] = bad;
        y[4999] = bad;  // a later bad value must not win
        EXPECT_EQ(k.ScanRow(y.data(), n).first_bad, pos) << k.name << " variant " << variant << " pos " << pos;
      }
    }
  }
}

// The next row's scan taken inside ExpShifted is ScanRow's, field for field, over fast and checked blocks (-inf,
// NaN, +inf, a sum past FLT_MAX) and partial tails; the exponentials it runs beside keep their bits.
TEST_P(ReduceKernelsTest, ExpShiftedScansTheOtherRowAsScanRowDoes) {
  const KernelTable& k = *GetParam();
  std::mt19937 gen(11);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  for (int64_t n : {1, 63, 64, 256, 1000, 4096, 5000}) {
    std::vector<float> x(static_cast<size_t>(n)), y(static_cast<size_t>(n));
    for (float& v : x) v = normal(gen);
    for (int variant = 0; variant < 5; ++variant) {
      for (float& v : y) v = normal(gen);
      const auto at = [&](int64_t i) -> float& { return y[static_cast<size_t>(std::min(i, n - 1))]; };
      if (variant == 1) at(n / 3) = -INFINITY, at(n - 1) = -INFINITY;
      if (variant == 2) at(n / 2) = 3e38f, at(n / 2 + 1) = 3e38f;
      if (variant == 3) at(n / 4) = std::numeric_limits<float>::quiet_NaN(), at(n - 1) = INFINITY;
      if (variant == 4) std::fill(y.begin(), y.end(), -INFINITY);
      const RowScan want = k.ScanRow(y.data(), n);
      std::vector<float> e_alone(x.size()), e_beside(x.size());
      double s1 = 0, sd1 = 0, s2 = 0, sd2 = 0;
      k.ExpShifted(x.data(), n, 1.0f, e_alone.data(), &s1, &sd1, nullptr, 0, true, nullptr, nullptr);
      RowScan got;
      got.max = 12345.0f;  // overwritten
      k.ExpShifted(x.data(), n, 1.0f, e_beside.data(), &s2, &sd2, y.data(), 4 * n, true, y.data(), &got);
      const std::string where = std::string(k.name) + " n=" + std::to_string(n) + " variant " + std::to_string(variant);
      EXPECT_EQ(std::memcmp(&got.max, &want.max, sizeof(float)), 0) << where << ": " << got.max << " " << want.max;
      EXPECT_EQ(std::memcmp(&got.min_finite, &want.min_finite, sizeof(float)), 0) << where;
      EXPECT_EQ(got.first_bad, want.first_bad) << where;
      EXPECT_EQ(std::memcmp(&got.abs_sum, &want.abs_sum, sizeof(double)), 0) << where;
      EXPECT_EQ(got.finite_count, want.finite_count) << where;
      EXPECT_EQ(e_alone, e_beside) << where;
      EXPECT_EQ(s1, s2) << where;
      EXPECT_EQ(sd1, sd2) << where;
    }
  }
}

// The kernels' exp, element by element, against the exact value: at most 2 ulp where it matters for the
// sums (d >= -20, e >= 2e-9), at most 5 ulp further down, exactly 1 at d = 0 and exactly 0 for masked and
// clamped entries.
TEST_P(ReduceKernelsTest, ExpIsWithinAFewUlpElementwise) {
  const KernelTable& k = *GetParam();
  std::mt19937 gen(3);
  std::uniform_real_distribution<float> uniform(-87.0f, 0.0f);
  const int64_t n = 100000;
  std::vector<float> x(static_cast<size_t>(n));
  for (size_t i = 0; i < x.size(); ++i) x[i] = i % 2 ? uniform(gen) : uniform(gen) / 4.0f;
  x[0] = 0.0f;
  x[1] = -INFINITY;
  x[2] = -1e30f;
  std::vector<float> e(x.size());
  double sum_e = 0, sum_ed = 0;
  k.ExpShifted(x.data(), n, 0.0f, e.data(), &sum_e, &sum_ed, nullptr, 0, true, nullptr, nullptr);
  EXPECT_EQ(e[0], 1.0f) << k.name;
  EXPECT_EQ(e[1], 0.0f) << k.name;
  EXPECT_EQ(e[2], 0.0f) << k.name;
  double worst_near = 0, worst_far = 0;
  for (size_t i = 3; i < x.size(); ++i) {
    const double exact = std::exp(static_cast<double>(x[i]));
    const float rounded = static_cast<float>(exact);
    const double ulp = std::nextafter(rounded, INFINITY) - rounded;
    const double err = std::abs(e[i] - exact) / ulp;
    (x[i] >= -20.0f ? worst_near : worst_far) = std::max(x[i] >= -20.0f ? worst_near : worst_far, err);
  }
  EXPECT_LE(worst_near, 2.0) << k.name;
  EXPECT_LE(worst_far, 5.0) << k.name;
}

TEST_P(ReduceKernelsTest, SelectionHelpersFindTheFirstMatch) {
  const KernelTable& k = *GetParam();
  std::vector<float> x(300);
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i % 50);
  EXPECT_EQ(k.FindFirst(x.data(), 300, 49.0f), 49);
  EXPECT_EQ(k.FindFirst(x.data(), 300, 77.0f), 300);
  EXPECT_EQ(k.FindFirstGreater(x.data(), 60, 300, 48.5f), 99);
  EXPECT_EQ(k.FindFirstGreater(x.data(), 0, 300, 49.0f), 300);
}

// KthLargest against a selection, on lengths around the vector width, with duplicates, signed zeros, -inf,
// the extremes and denormals among the values, and k at both ends and in between.
TEST_P(ReduceKernelsTest, KthLargestIsTheSelectionsKthValue) {
  const KernelTable& k = *GetParam();
  std::mt19937 gen(23);
  std::normal_distribution<float> normal(0.0f, 4.0f);
  const std::vector<float> special = {-INFINITY, 0.0f, -0.0f, FLT_MAX, -FLT_MAX, FLT_MIN, -FLT_MIN, 1e-40f, -1e-40f};
  for (int64_t n : {1, 2, 15, 16, 17, 31, 32, 33, 100, 1000, 1001}) {
    for (int trial = 0; trial < 6; ++trial) {
      std::vector<float> x(static_cast<size_t>(n));
      for (float& v : x) {
        const int pick = static_cast<int>(gen() % 10);
        v = pick < 2   ? special[gen() % special.size()]
            : pick < 5 ? std::round(normal(gen))  // many ties
                       : normal(gen);
      }
      std::vector<int32_t> keys(static_cast<size_t>(KthLargestKeys(n)));
      for (int64_t rank : {int64_t{1}, n / 2 + 1, n, static_cast<int64_t>(gen() % n) + 1}) {
        std::vector<float> sorted = x;
        std::nth_element(sorted.begin(), sorted.begin() + (rank - 1), sorted.end(), std::greater<float>());
        EXPECT_EQ(k.KthLargest(x.data(), n, rank, keys.data()), sorted[static_cast<size_t>(rank - 1)])
            << k.name << " n=" << n << " k=" << rank << " trial " << trial;
      }
    }
  }
  const std::vector<float> masked(40, -INFINITY);
  std::vector<int32_t> keys(static_cast<size_t>(KthLargestKeys(40)));
  EXPECT_EQ(k.KthLargest(masked.data(), 40, 7, keys.data()), -INFINITY) << k.name;
}

// The searches test four vectors per branch, then one, then a scalar tail: a target at every position of
// lengths around those boundaries (for AVX-512: 64-float groups, 16-float vectors) must be found where a plain
// loop finds it (and so must the max scan's max and first bad index).
TEST_P(ReduceKernelsTest, ScansFindTargetsInEveryPartOfTheLoop) {
  const KernelTable& k = *GetParam();
  for (int64_t n : {1, 15, 16, 17, 63, 64, 65, 79, 130, 200}) {
    for (int64_t pos = 0; pos < n; ++pos) {
      std::vector<float> x(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) x[static_cast<size_t>(i)] = static_cast<float>((i * 7) % 13) - 20.0f;
      x[static_cast<size_t>(pos)] = 5.0f;  // the unique max
      const ScanResult scan = k.ScanMax(x.data(), n, nullptr);
      EXPECT_EQ(scan.max, 5.0f) << k.name << " n=" << n << " pos=" << pos;
      EXPECT_EQ(scan.argmax, pos) << k.name << " n=" << n << " pos=" << pos;
      EXPECT_EQ(scan.first_bad, -1) << k.name << " n=" << n << " pos=" << pos;
      EXPECT_EQ(k.FindFirst(x.data(), n, 5.0f), pos) << k.name << " n=" << n << " pos=" << pos;
      for (int64_t from : {int64_t{0}, pos / 2, pos}) {
        EXPECT_EQ(k.FindFirstGreater(x.data(), from, n, 0.0f), pos) << k.name << " n=" << n << " pos=" << pos;
      }
      EXPECT_EQ(k.FindFirstGreater(x.data(), pos + 1, n, 0.0f), n) << k.name << " n=" << n << " pos=" << pos;
      // A second copy of the max later on: the first one is still the one found.
      if (pos + 1 < n) {
        x[static_cast<size_t>(n - 1)] = 5.0f;
        EXPECT_EQ(k.FindFirst(x.data(), n, 5.0f), pos) << k.name << " n=" << n << " pos=" << pos;
      }
      // NaN here and +inf further on: the first bad index, whichever chain saw it.
      x[static_cast<size_t>(pos)] = std::numeric_limits<float>::quiet_NaN();
      if (pos + 1 < n) x[static_cast<size_t>(n - 1)] = std::numeric_limits<float>::infinity();
      EXPECT_EQ(k.ScanMax(x.data(), n, nullptr).first_bad, pos) << k.name << " n=" << n << " pos=" << pos;
    }
  }
}

// The max scan's argmax (the lowest index of the max) and its block maxima, against a plain loop: lengths
// around whole blocks of kMaxBlock, the max in a full block or in the short last one, repeated in a later block
// or in the same block, and arrays that are all -inf.
TEST_P(ReduceKernelsTest, ScanMaxGivesTheFirstArgmaxAndEveryBlockMax) {
  const KernelTable& k = *GetParam();
  std::mt19937 gen(5);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  for (int64_t n : {1, 255, 256, 257, 511, 512, 513, 1000, 4099}) {
    for (int variant = 0; variant < 6; ++variant) {
      std::vector<float> x(static_cast<size_t>(n));
      for (float& v : x) v = normal(gen);
      for (size_t i = 0; i < x.size(); i += 5) x[i] = -INFINITY;
      const int64_t pos = std::uniform_int_distribution<int64_t>(0, n - 1)(gen);
      if (variant >= 1) x[static_cast<size_t>(pos)] = 50.0f;
      if (variant == 2) x[static_cast<size_t>(n - 1)] = 50.0f;                     // again, in the last block
      if (variant == 3) x[static_cast<size_t>(std::min(n - 1, pos + 3))] = 50.0f;  // again, nearby
      if (variant == 4) x[static_cast<size_t>(pos / 2)] = 50.0f;                   // earlier: it wins
      if (variant == 5) std::fill(x.begin(), x.end(), -INFINITY);
      const int64_t want_argmax = std::max_element(x.begin(), x.end()) - x.begin();  // the first of equals
      std::vector<float> blocks(static_cast<size_t>(MaxBlocks(n)), 7.0f);
      const ScanResult scan = k.ScanMax(x.data(), n, blocks.data());
      EXPECT_EQ(scan.max, x[static_cast<size_t>(want_argmax)]) << k.name << " n=" << n << " variant=" << variant;
      EXPECT_EQ(scan.argmax, variant == 5 ? 0 : want_argmax) << k.name << " n=" << n << " variant=" << variant;
      for (int64_t b = 0; b < MaxBlocks(n); ++b) {
        const auto from = x.begin() + b * kMaxBlock, to = x.begin() + std::min(n, (b + 1) * kMaxBlock);
        EXPECT_EQ(blocks[static_cast<size_t>(b)], *std::max_element(from, to)) << k.name << " n=" << n << " b=" << b;
      }
      EXPECT_EQ(k.ScanMax(x.data(), n, nullptr).argmax, scan.argmax) << k.name << " n=" << n;
    }
  }
}

// The agreement's three kernels (column sums per 8-row group, their means, each row's deviations) against a
// float64 transcription, on widths that exercise the vector loops and the scalar tails, with a ragged last
// group and rows sitting at a stride wider than the columns read.
TEST_P(ReduceKernelsTest, AgreementKernelsMatchAFloat64Reference) {
  const KernelTable& k = *GetParam();
  std::mt19937 gen(5);
  std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
  for (int64_t rows : {1, 8, 13, 32}) {
    for (int64_t cols : {1, 17, 200, 1024, 1300}) {
      const int64_t stride = cols + 9;
      std::vector<float> e(static_cast<size_t>(rows * stride));
      for (float& v : e) v = uniform(gen);
      std::vector<float> inv(static_cast<size_t>(rows));
      for (int64_t r = 0; r < rows; ++r) {
        double z = 0;
        for (int64_t c = 0; c < cols; ++c) z += e[static_cast<size_t>(r * stride + c)];
        inv[static_cast<size_t>(r)] = static_cast<float>(1.0 / z);
      }
      const int64_t groups = (rows + kAgreementGroup - 1) / kAgreementGroup;
      std::vector<float> sums(static_cast<size_t>(groups * cols)), means(static_cast<size_t>(cols));
      for (int64_t g = 0; g < groups; ++g) {
        const float* ptrs[kAgreementGroup];
        int64_t n = 0;
        for (int64_t r = g * kAgreementGroup; r < std::min(rows, (g + 1) * kAgreementGroup); ++r) {
          ptrs[n++] = e.data() + r * stride;
        }
        k.GroupColumnSums(ptrs, inv.data() + g * kAgreementGroup, n, cols, sums.data() + g * cols);
      }
      k.GroupMeans(sums.data(), groups, cols, cols, 1.0f / static_cast<float>(rows), means.data());
      double got = 0, want = 0;
      for (int64_t r = 0; r < rows; ++r) got += k.RowDeviation(e.data() + r * stride, inv[r], means.data(), cols);
      for (int64_t c = 0; c < cols; ++c) {
        double mean = 0;
        for (int64_t r = 0; r < rows; ++r) mean += static_cast<double>(e[r * stride + c]) * inv[r];
        mean /= static_cast<double>(rows);
        EXPECT_NEAR(means[c], mean, 1e-6 * mean) << k.name << " rows=" << rows << " cols=" << cols << " c=" << c;
        for (int64_t r = 0; r < rows; ++r) want += std::abs(static_cast<double>(e[r * stride + c]) * inv[r] - mean);
      }
      // Relative, plus float32 rounding of the probabilities themselves (each row's sum to 1 is exact only in
      // float64; with one column every deviation is such a rounding).
      EXPECT_NEAR(got, want, 1e-5 * want + 4e-7 * static_cast<double>(rows))
          << k.name << " rows=" << rows << " cols=" << cols;
    }
  }
}

// The agreement of short rows rests on ExpDouble: double exponentials within 1e-14 of std::exp (relative; the
// agreement needs 1e-10), exactly 0 for -inf (a masked position), gaps beyond -708 (exp < 3e-308) 0 without NaN,
// every tail length.
TEST_P(ReduceKernelsTest, ExpDoubleMatchesStdExpInDouble) {
  const KernelTable& k = *GetParam();
  std::mt19937 gen(23);
  std::normal_distribution<float> normal(0.0f, 4.0f);
  for (int64_t n : {2, 3, 7, 8, 9, 17, 255}) {
    std::vector<float> x(static_cast<size_t>(n));
    for (float& v : x) v = normal(gen);
    x[0] = -std::numeric_limits<float>::infinity();  // the row's max stays finite: a used row
    if (n > 2) x[2] = -3e38f;
    if (n > 3) x[3] = x[1] - 720.0f;  // between -745 and -708 below the max (x[1] may be the max itself)
    const float shift = *std::max_element(x.begin(), x.end());
    std::vector<double> out(x.size(), -1.0);
    const double total = k.ExpDouble(x.data(), n, shift, out.data());
    double want_total = 0;
    for (int64_t i = 0; i < n; ++i) {
      const double want = std::exp(static_cast<double>(x[i]) - shift);
      want_total += want;
      EXPECT_NEAR(out[i], want, 1e-14 * want + 1e-300) << k.name << " n=" << n << " i=" << i;
    }
    EXPECT_EQ(out[0], 0.0) << k.name;
    EXPECT_NEAR(total, want_total, 1e-14 * want_total) << k.name << " n=" << n;
  }
}

TEST_P(ReduceKernelsTest, ConvertsEveryBFloat16Exactly) {
  const KernelTable& k = *GetParam();
  std::vector<uint16_t> all(65536 + 7);
  for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<uint16_t>(i * 40503u);
  std::vector<float> out(all.size());
  k.ConvertBf16(reinterpret_cast<const char*>(all.data()), static_cast<int64_t>(all.size()), out.data());
  for (size_t i = 0; i < all.size(); ++i) {
    uint32_t bits;
    std::memcpy(&bits, &out[i], 4);
    ASSERT_EQ(bits, static_cast<uint32_t>(all[i]) << 16) << k.name << " at " << i;
  }
}

// The fused bf16 scans convert exactly what ConvertBf16 converts and return what the float32 scans return
// on the converted values (tails, -inf, NaN and +inf included).
TEST_P(ReduceKernelsTest, Bf16ScansConvertAndScanLikeTheFloat32Path) {
  const KernelTable& k = *GetParam();
  std::mt19937 gen(9);
  std::normal_distribution<float> normal(0.0f, 5.0f);
  for (int64_t n : {1, 15, 17, 255, 257, 4099}) {
    for (int variant = 0; variant < 3; ++variant) {
      std::vector<uint16_t> src(static_cast<size_t>(n));
      for (size_t i = 0; i < src.size(); ++i) {
        const uint32_t bits = static_cast<uint32_t>(i % 7 == 3 ? 0xff800000u : 0u);  // -inf
        float v = normal(gen);
        if (bits != 0) std::memcpy(&v, &bits, 4);
        uint32_t u;
        std::memcpy(&u, &v, 4);
        src[i] = static_cast<uint16_t>(u >> 16);
      }
      if (variant == 1) src[static_cast<size_t>(n - 1)] = 0x7fc0;  // NaN last
      if (variant == 2) src[static_cast<size_t>(n / 2)] = 0x7f80;  // +inf in the middle
      const char* bytes = reinterpret_cast<const char*>(src.data());
      std::vector<float> want(src.size()), got(src.size(), -1.0f), got_row(src.size(), -1.0f);
      k.ConvertBf16(bytes, n, want.data());
      const ScanResult a = k.ScanMax(want.data(), n, nullptr), b = k.ScanMaxBf16(bytes, n, got.data(), nullptr);
      EXPECT_EQ(std::memcmp(got.data(), want.data(), want.size() * 4), 0) << k.name << " n=" << n;
      EXPECT_EQ(b.first_bad, a.first_bad) << k.name << " n=" << n;
      if (a.first_bad < 0) {
        EXPECT_EQ(b.max, a.max) << k.name << " n=" << n;
        EXPECT_EQ(b.argmax, a.argmax) << k.name << " n=" << n;
        std::vector<float> blocks_a(static_cast<size_t>(MaxBlocks(n))), blocks_b(blocks_a.size());
        k.ScanMax(want.data(), n, blocks_a.data());
        k.ScanMaxBf16(bytes, n, got.data(), blocks_b.data());
        EXPECT_EQ(blocks_b, blocks_a) << k.name << " n=" << n;
      }
      std::vector<float> got_pass(src.size(), -1.0f), summaries(static_cast<size_t>(LogitsPassBlockFloats(n)));
      const LogitsMoments e = k.LogitsPass(want.data(), n, nullptr, summaries.data()),
                          f = k.LogitsPassBf16(bytes, n, got_pass.data(), nullptr, summaries.data());
      EXPECT_EQ(std::memcmp(got_pass.data(), want.data(), want.size() * 4), 0) << k.name << " n=" << n;
      EXPECT_EQ(f.first_bad, e.first_bad) << k.name << " n=" << n;
      if (e.first_bad < 0) {
        EXPECT_EQ(f.max, e.max) << k.name << " n=" << n;
        EXPECT_EQ(f.argmax, e.argmax) << k.name << " n=" << n;
        EXPECT_EQ(f.sum_e, e.sum_e) << k.name << " n=" << n;
        EXPECT_EQ(f.mean_d, e.mean_d) << k.name << " n=" << n;
        EXPECT_EQ(f.m2, e.m2) << k.name << " n=" << n;
      }
      const RowScan c = k.ScanRow(want.data(), n), d = k.ScanRowBf16(bytes, n, got_row.data());
      EXPECT_EQ(std::memcmp(got_row.data(), want.data(), want.size() * 4), 0) << k.name << " n=" << n;
      EXPECT_EQ(d.first_bad, c.first_bad) << k.name << " n=" << n;
      if (c.first_bad < 0) {
        EXPECT_EQ(d.max, c.max);
        EXPECT_EQ(d.min_finite, c.min_finite);
        EXPECT_EQ(d.abs_sum, c.abs_sum);
        EXPECT_EQ(d.finite_count, c.finite_count);
      }
    }
  }
}

TEST(ActiveKernelsTest, IsTheWidestAvailableUnlessPinned) {
  const auto tables = AvailableKernels();
  ASSERT_FALSE(tables.empty());
  EXPECT_STREQ(tables.front()->name, "sse2");
  const char* pinned = std::getenv("SAMPLERD_SIMD");
  if (pinned == nullptr) {
    EXPECT_EQ(&ActiveKernels(), tables.back());
  }
}

// A pin is checked against what this CPU runs: a name it cannot run (or no such name) is an error naming the
// value and the tables available, never a silent fall back to other kernels.
TEST(ActiveKernelsTest, APinThisCpuCannotRunIsAnErrorNamingWhatItRuns) {
  const char* before = std::getenv("SAMPLERD_SIMD");
  const std::string saved = before != nullptr ? before : "";
  for (const KernelTable* t : AvailableKernels()) {
    setenv("SAMPLERD_SIMD", t->name, 1);
    EXPECT_TRUE(CheckKernelPin().ok()) << t->name;
  }
  for (const char* bad : {"avx1024", "SSE2", "sse2 ", ""}) {
    setenv("SAMPLERD_SIMD", bad, 1);
    const absl::Status status = CheckKernelPin();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << '"' << bad << '"';
    EXPECT_THAT(std::string(status.message()), ::testing::HasSubstr(absl::StrCat("SAMPLERD_SIMD=\"", bad, "\"")));
    EXPECT_THAT(std::string(status.message()), ::testing::HasSubstr("sse2"));
  }
  if (AvailableKernels().size() < 3) {  // no AVX-512 here: pinning it must not quietly run AVX2
    setenv("SAMPLERD_SIMD", "avx512", 1);
    EXPECT_FALSE(CheckKernelPin().ok());
  }
  unsetenv("SAMPLERD_SIMD");
  EXPECT_TRUE(CheckKernelPin().ok());
  if (before != nullptr) setenv("SAMPLERD_SIMD", saved.c_str(), 1);
}

INSTANTIATE_TEST_SUITE_P(AllInstructionSets, ReduceKernelsTest, ::testing::ValuesIn(AvailableKernels()),
                         [](const ::testing::TestParamInfo<const KernelTable*>& info) {
                           return std::string(info.param->name);
                         });

}  // namespace
}  // namespace samplerd::kernels
