// ComputeStepMetrics shares a step's passes between two threads; this pins that the answer never depends on
// the sharing: the same bits (and the same error) as SummarizeLogits + ComputeAttentionMetrics on one thread,
// whether the other half ran on a real second thread, before, after or not at all. Shapes cover one row and
// many, masked rows among them, ragged last row groups and vector tails, and bf16 converted in
// the first pass.
#include <pthread.h>
#include <time.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "core/fork_join.h"
#include "core/metrics.h"
#include "gtest/gtest.h"

namespace samplerd {
namespace {

// `theirs` on a std::thread of its own, concurrently with `mine`.
class ThreadForkJoin final : public ForkJoin {
 public:
  void Run(absl::FunctionRef<void()> mine, absl::FunctionRef<void()> theirs) override {
    std::thread other([&] { theirs(); });
    mine();
    other.join();
    ++runs;
  }
  int runs = 0;
};

// `theirs` first: the other thread may finish before this one starts.
class TheirsFirstForkJoin final : public ForkJoin {
 public:
  void Run(absl::FunctionRef<void()> mine, absl::FunctionRef<void()> theirs) override {
    theirs();
    mine();
  }
};

// The first Run (the rows) on two threads that start together, so that both take row groups; later ones (the
// agreement's deviations) on two threads as well, or on this thread alone with `mine` first or `theirs` first (the
// other thread was busy by then). `split_later` tells whether a later Run came at all: the deviations were shared.
class StartTogetherForkJoin final : public ForkJoin {
 public:
  enum class Later { kThreads, kMineFirst, kTheirsFirst };
  // `head_start_ns`: the other thread's CPU time before this side starts.
  StartTogetherForkJoin(Later later, int64_t head_start_ns) : later_(later), head_start_ns_(head_start_ns) {}
  void Run(absl::FunctionRef<void()> mine, absl::FunctionRef<void()> theirs) override {
    if (runs_++ > 0) {
      split_later = true;
      if (later_ == Later::kMineFirst) {
        mine();
        theirs();
        return;
      }
      if (later_ == Later::kTheirsFirst) {
        theirs();
        mine();
        return;
      }
    }
    std::atomic<bool> started{false}, finished{false};
    std::thread other([&] {
      started.store(true);
      theirs();
      finished.store(true);
    });
    while (!started.load()) std::this_thread::yield();
    // This side starts once the other has run a little of its part (it then holds a unit), so that both take
    // units even on a busy machine, where the other thread may otherwise get a CPU only after this one took them
    // all. Its CPU clock, not the wall clock, says when it ran.
    clockid_t clock;
    if (pthread_getcpuclockid(other.native_handle(), &clock) == 0) {
      const auto cpu_ns = [&] {
        timespec t{};
        clock_gettime(clock, &t);
        return int64_t{t.tv_sec} * 1000000000 + t.tv_nsec;
      };
      const int64_t begin = cpu_ns();
      // Short sleeps, not a spin: on a loaded machine a thread that spun through its time slice is the one the
      // scheduler puts off next, and the other thread then takes every unit while it waits; one that slept
      // gets a CPU back at once when it wakes.
      while (!finished.load() && cpu_ns() - begin < head_start_ns_) {
        std::this_thread::sleep_for(std::chrono::microseconds(10));
      }
    }
    mine();
    other.join();
  }
  bool split_later = false;

 private:
  const Later later_;
  const int64_t head_start_ns_;
  int runs_ = 0;
};

struct Shape {
  int64_t vocab, rows, cols;
};

std::vector<float> Normal(int64_t n, float scale, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = dist(rng);
  return v;
}

struct Metrics {
  absl::Status status;
  LogitsSummary summary;
  std::optional<AttentionMetrics> attention;
};

Metrics OneThread(const std::vector<float>& z, const std::vector<float>& s, const Shape& shape) {
  MetricsScratch scratch;
  Metrics m;
  absl::StatusOr<LogitsSummary> summary = SummarizeLogits(FloatView{z.data(), 1, shape.vocab}, &scratch);
  if (!summary.ok()) {
    m.status = summary.status();
    return m;
  }
  m.summary = *summary;
  absl::StatusOr<std::optional<AttentionMetrics>> a =
      ComputeAttentionMetrics(FloatView{s.data(), shape.rows, shape.cols}, &scratch);
  if (!a.ok()) {
    m.status = a.status();
    return m;
  }
  m.attention = *a;
  return m;
}

Metrics Shared(const FloatView& logits, const FloatView& attention, ForkJoin* fork_join, MetricsScratch* scratch) {
  Metrics m;
  m.status = ComputeStepMetrics(logits, &attention, scratch, fork_join, &m.summary, &m.attention);
  return m;
}

// Bit equality: the reductions combine their parts in a fixed order whatever ran where.
void ExpectSameBits(const Metrics& got, const Metrics& want, const std::string& label) {
  ASSERT_EQ(got.status, want.status) << label;
  if (!want.status.ok()) return;
  EXPECT_EQ(got.summary.max_logit, want.summary.max_logit) << label;
  EXPECT_EQ(got.summary.argmax, want.summary.argmax) << label;
  EXPECT_EQ(got.summary.log_normalizer, want.summary.log_normalizer) << label;
  EXPECT_EQ(got.summary.entropy, want.summary.entropy) << label;
  EXPECT_EQ(got.summary.varentropy, want.summary.varentropy) << label;
  ASSERT_EQ(got.attention.has_value(), want.attention.has_value()) << label;
  if (!want.attention.has_value()) return;
  EXPECT_EQ(got.attention->entropy, want.attention->entropy) << label;
  EXPECT_EQ(got.attention->varentropy, want.attention->varentropy) << label;
  EXPECT_EQ(got.attention->agreement, want.attention->agreement) << label;
  EXPECT_EQ(got.attention->interaction_strength, want.attention->interaction_strength) << label;
  EXPECT_EQ(got.attention->rows_used, want.attention->rows_used) << label;
}

void ExpectEverySharingAgrees(const std::vector<float>& z, const std::vector<float>& s, const Shape& shape,
                              const std::string& label) {
  const Metrics want = OneThread(z, s, shape);
  const FloatView logits{z.data(), 1, shape.vocab};
  const FloatView attention{s.data(), shape.rows, shape.cols};
  // One scratch across the runs, as a worker reuses it: nothing may leak from one step into the next.
  MetricsScratch scratch;
  ThreadForkJoin threads;
  TheirsFirstForkJoin theirs_first;
  SerialForkJoin serial;
  ExpectSameBits(Shared(logits, attention, &threads, &scratch), want, label + " (two threads)");
  ExpectSameBits(Shared(logits, attention, &theirs_first, &scratch), want, label + " (theirs first)");
  ExpectSameBits(Shared(logits, attention, &serial, &scratch), want, label + " (serial)");
  if (shape.rows * shape.cols >= kMinSharedAttention) {
    EXPECT_GE(threads.runs, 1) << label << ": the step was not shared at all";
  } else {
    EXPECT_EQ(threads.runs, 0) << label << ": a small step was shared";
  }
}

TEST(MetricsSplit, SharedStepHasTheBitsOfTheOneThreadStep) {
  // 1 to 4 row groups of 8 (a ragged last one), widths with vector tails; the first and the last
  // shapes are below kMinSharedAttention (kept on one thread), the others just above it.
  const Shape shapes[] = {{32000, 8, 1024},   {3000, 32, 8200},   {100, 24, 11000},
                          {500000, 4, 66000}, {40000, 1, 270000}, {7, 1, 5}};
  static_assert(int64_t{32} * 8200 >= kMinSharedAttention && int64_t{4} * 66000 >= kMinSharedAttention);
  uint32_t seed = 1;
  for (const Shape& shape : shapes) {
    const std::vector<float> z = Normal(shape.vocab, 2.0f, seed++);
    const std::vector<float> s = Normal(shape.rows * shape.cols, 3.0f, seed++);
    ExpectEverySharingAgrees(z, s, shape,
                             "vocab " + std::to_string(shape.vocab) + ", " + std::to_string(shape.rows) + " x " +
                                 std::to_string(shape.cols));
  }
}

// When both threads scanned rows, each takes the deviations of its own rows (on two threads, or one range after
// the other here, in either order): the same bits. Which groups each thread takes is a race, so a step is tried
// until its deviations were shared, with head starts of 20 to 160 us for the other thread: too short and, on a
// loaded machine, it may hold no unit yet when this side takes them all; too long and it takes them all. Under
// load whole runs of attempts miss, hence the many attempts (a quiet run shares within the first few).
TEST(MetricsSplit, SharedDeviationsHaveTheBitsOfTheOneThreadStep) {
  const Shape shape{3000, 256, 8200};  // 32 groups of about 10 us each: head starts below fall within the work
  const std::vector<float> z = Normal(shape.vocab, 2.0f, 41);
  const std::vector<float> s = Normal(shape.rows * shape.cols, 3.0f, 42);
  const Metrics want = OneThread(z, s, shape);
  const FloatView logits{z.data(), 1, shape.vocab};
  const FloatView attention{s.data(), shape.rows, shape.cols};
  using Later = StartTogetherForkJoin::Later;
  for (const Later later : {Later::kThreads, Later::kMineFirst, Later::kTheirsFirst}) {
    bool shared = false;
    for (int attempt = 0; attempt < 2000 && !shared; ++attempt) {
      MetricsScratch fresh;  // no buffer may hold what an earlier attempt left there
      StartTogetherForkJoin fork_join(later, int64_t{20000} << (attempt % 4));
      ExpectSameBits(Shared(logits, attention, &fork_join, &fresh), want,
                     "later " + std::to_string(static_cast<int>(later)) + ", attempt " + std::to_string(attempt));
      shared = fork_join.split_later;
    }
    EXPECT_TRUE(shared) << "later " << static_cast<int>(later) << ": no attempt shared the deviations";
  }
}

TEST(MetricsSplit, MaskedRowsArePackedTheSameWhicheverThreadScannedThem) {
  const Shape shape{3000, 32, 8200};
  const std::vector<float> z = Normal(shape.vocab, 2.0f, 7);
  std::vector<float> s = Normal(shape.rows * shape.cols, 8.0f, 8);  // wide: the 1e-10 clip bites
  for (int64_t r : {0, 5, 6, 15}) {
    std::fill_n(s.begin() + r * shape.cols, shape.cols, -std::numeric_limits<float>::infinity());
  }
  for (int64_t k = 0; k < shape.cols; k += 3) s[static_cast<size_t>(9 * shape.cols + k)] = -INFINITY;
  ExpectEverySharingAgrees(z, s, shape, "masked rows 0, 5, 6, 15");
  for (int64_t r : {16, 30, 31}) {
    std::fill_n(s.begin() + r * shape.cols, shape.cols, -std::numeric_limits<float>::infinity());
  }
  ExpectEverySharingAgrees(z, s, shape, "masked rows 0, 5, 6, 15, 16, 30, 31");
  std::fill(s.begin(), s.end(), -std::numeric_limits<float>::infinity());
  ExpectEverySharingAgrees(z, s, shape, "every row masked");
}

TEST(MetricsSplit, ErrorsAreTheOneThreadErrorsWhicheverSideFindsThem) {
  const Shape shape{3000, 32, 8200};
  const std::vector<float> z = Normal(shape.vocab, 2.0f, 9);
  const std::vector<float> s = Normal(shape.rows * shape.cols, 3.0f, 10);
  // A NaN in a late row and an +inf in an early row, found by either thread: the first row's error wins.
  std::vector<float> bad = s;
  bad[static_cast<size_t>(30 * shape.cols + 3)] = NAN;
  bad[static_cast<size_t>(2 * shape.cols + 7)] = INFINITY;
  const Metrics want = OneThread(z, bad, shape);
  ASSERT_FALSE(want.status.ok());
  EXPECT_NE(want.status.message().find("row 2, position 7"), std::string_view::npos) << want.status;
  ExpectEverySharingAgrees(z, bad, shape, "bad attention rows 2 and 30");
  // Bad logits and bad attention: the logits' error, as RunStep has always reported.
  std::vector<float> bad_z = z;
  bad_z[17] = NAN;
  const Metrics want_logits = OneThread(bad_z, bad, shape);
  EXPECT_NE(want_logits.status.message().find("logits"), std::string_view::npos) << want_logits.status;
  ExpectEverySharingAgrees(bad_z, bad, shape, "bad logits and attention");
}

TEST(MetricsSplit, Bf16ConvertedInTheSharedFirstPassMatchesItsFloats) {
  // Large enough to be shared, so the two threads convert the rows they take (a ragged vector tail per row).
  const Shape shape{40000, 48, 5500};
  static_assert(int64_t{48} * 5500 >= kMinSharedAttention);
  std::vector<float> z = Normal(shape.vocab, 2.0f, 11);
  std::vector<float> s = Normal(shape.rows * shape.cols, 3.0f, 12);
  std::vector<uint16_t> z16(z.size()), s16(s.size());
  // Truncate to bf16 so the float path sees exactly the bf16 values.
  auto to_bf16 = [](std::vector<float>* v, std::vector<uint16_t>* out) {
    for (size_t i = 0; i < v->size(); ++i) {
      uint32_t bits;
      std::memcpy(&bits, &(*v)[i], 4);
      (*out)[i] = static_cast<uint16_t>(bits >> 16);
      bits &= 0xffff0000u;
      std::memcpy(&(*v)[i], &bits, 4);
    }
  };
  to_bf16(&z, &z16);
  to_bf16(&s, &s16);
  const Metrics want = OneThread(z, s, shape);
  std::vector<float> z_fill(z.size()), s_fill(s.size());
  const FloatView logits{z_fill.data(), 1, shape.vocab, reinterpret_cast<const char*>(z16.data()), z_fill.data()};
  const FloatView attention{s_fill.data(), shape.rows, shape.cols, reinterpret_cast<const char*>(s16.data()),
                            s_fill.data()};
  MetricsScratch scratch;
  ThreadForkJoin threads;
  ExpectSameBits(Shared(logits, attention, &threads, &scratch), want, "bf16, two threads");
  EXPECT_GE(threads.runs, 1) << "the bf16 step was not shared";
  EXPECT_EQ(s_fill, s);
  EXPECT_EQ(z_fill, z);
}

}  // namespace
}  // namespace samplerd
