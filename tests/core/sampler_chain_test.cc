// Pins the sampler chain's contract beyond the golden cases: the mass-quickselect nucleus equals a full
// sort's, ties go to the lower id, min-p and the penalties follow their definitions, and the categorical
// draw follows the candidate probabilities (chi-square over thousands of seeds).
#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>
#include <random>
#include <vector>

#include "core/counter_rng.h"
#include "core/field_error.h"
#include "core/reduce_kernels.h"
#include "core/sampler_chain.h"
#include "core/step_engine.h"
#include "gtest/gtest.h"
#include "tests/core/nucleus_adversary.h"

namespace samplerd {
namespace {

// The chain computed the slow, obvious way: full sort, float weights, double cumulative sums.
std::vector<int32_t> ReferenceChain(const std::vector<float>& z, const SamplingConfig& c) {
  const int64_t v = static_cast<int64_t>(z.size());
  std::vector<int32_t> order(z.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return z[a] > z[b]; });
  if (c.top_k > 0 && c.top_k < v) order.resize(static_cast<size_t>(c.top_k));
  order.erase(std::remove_if(order.begin(), order.end(), [&](int32_t id) { return std::isinf(z[id]); }), order.end());
  const float m = z[order[0]];
  std::vector<float> w;
  double total = 0;
  for (int32_t id : order) {
    w.push_back(std::exp((z[id] - m) / c.temperature));
    total += w.back();
  }
  size_t cut = order.size();
  if (c.top_p < 1.0f) {
    double acc = 0;
    for (size_t i = 0; i < order.size(); ++i) {
      acc += w[i];
      if (acc >= static_cast<double>(c.top_p) * total) {
        cut = i + 1;
        break;
      }
    }
  }
  std::vector<int32_t> out;
  for (size_t i = 0; i < cut; ++i) {
    if (w[i] >= c.min_p && w[i] > 0.0f) out.push_back(order[i]);
  }
  return out;
}

std::vector<int32_t> Ids(const Candidates& c) {
  std::vector<int32_t> ids;
  for (const auto& t : c.tokens) ids.push_back(t.id);
  return ids;
}

TEST(SamplerChainTest, NucleusWithoutTopKEqualsAFullSort) {
  std::mt19937 gen(7);
  for (int trial = 0; trial < 40; ++trial) {
    const int v = 200 + trial * 131;
    std::normal_distribution<float> normal(0.0f, 0.5f + trial % 5);
    std::vector<float> z(static_cast<size_t>(v));
    for (float& x : z) x = normal(gen);
    if (trial % 4 == 0) {
      for (int i = 0; i < v; i += 7) z[static_cast<size_t>(i)] = z[0];  // blocks of exact ties
    }
    SamplingConfig c;
    c.temperature = 0.5f + 0.1f * static_cast<float>(trial % 10);
    c.top_k = 0;
    c.top_p = 0.3f + 0.0175f * static_cast<float>(trial);
    c.min_p = trial % 3 == 0 ? 0.02f : 0.0f;
    ChainScratch scratch;
    Candidates got;
    ASSERT_TRUE(BuildCandidates(z.data(), v, c, &scratch, &got).ok());
    std::vector<int32_t> want = ReferenceChain(z, c);
    std::vector<int32_t> got_ids = Ids(got);
    if (!got.sorted) std::sort(got_ids.begin(), got_ids.end()), std::sort(want.begin(), want.end());
    EXPECT_EQ(got_ids, want) << "trial " << trial << " top_p " << c.top_p;
  }
}

// A top_p just under 1 over near-uniform weights in the adversary's order: the rounds stop after 2 log2(n) and
// the rest is sorted, where a plain quickselect would go over n^2 / 4 entries (seconds of one worker for a
// 100,000-token step, minutes at --max_vocab). The nucleus is still the one of rank order.
TEST(SamplerChainTest, NucleusSelectionStaysLoglinearOnAnAdversarialOrder) {
  constexpr int64_t kN = 20000;
  const std::vector<int64_t> rank = AdversarialRanks(kN);
  std::vector<WeightedToken> tokens = TokensByRank(rank);
  double total = 0;
  for (const WeightedToken& t : tokens) total += t.weight;
  const double target = 0.99999994 * total;
  const NucleusSelection selection = SelectNucleus(absl::MakeSpan(tokens), target);

  const double log2n = std::log2(static_cast<double>(kN));
  EXPECT_LE(selection.partitioned, static_cast<int64_t>(2 * log2n) * kN) << "a quadratic number of rounds";
  EXPECT_LE(selection.sorted, kN);
  // The prefix is the `length` best tokens, and the shortest whose weight reaches the target.
  ASSERT_GT(selection.length, 0);
  ASSERT_LE(selection.length, kN);
  double mass = 0;
  float worst = std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < selection.length; ++i) {
    const WeightedToken& t = tokens[static_cast<size_t>(i)];
    EXPECT_LT(rank[static_cast<size_t>(t.id)], selection.length) << "token " << t.id << " is not among the best";
    mass += t.weight;
    worst = std::min(worst, t.weight);
  }
  EXPECT_GE(mass, target * (1 - 1e-12));
  EXPECT_LT(mass - worst, target * (1 + 1e-12));
}

// Logits in ascending order make every entry beat the bounded heap's worst (vocab log k work instead of about
// k log(vocab / k)): past a budget of replacements the selection over all entries takes over, and gives the same
// tokens. The selection's buffer holds every entry, the heap's only k, which shows the path taken.
TEST(SamplerChainTest, TopKOnAscendingLogitsLeavesTheHeapForTheSelection) {
  constexpr int64_t kVocab = 128256;
  std::vector<float> ascending(static_cast<size_t>(kVocab));
  for (int64_t i = 0; i < kVocab; ++i) ascending[static_cast<size_t>(i)] = static_cast<float>(i) * 1e-4f;
  std::vector<float> shuffled = ascending;
  std::shuffle(shuffled.begin(), shuffled.end(), std::mt19937(11));
  // With block maxima and a small k the floor already bounds the heap's work to k blocks; 128,256 entries are
  // fewer than 1,024 blocks, so k = 1,024 has no floor.
  const std::pair<int64_t, bool> cases[] = {{20, false}, {1024, false}, {1024, true}};
  for (const auto& [k, with_maxima] : cases) {
    for (const std::vector<float>* z : {&ascending, &shuffled}) {
      std::vector<float> block_max(static_cast<size_t>(kernels::MaxBlocks(kVocab)));
      kernels::ScanMax(z->data(), kVocab, block_max.data());
      ChainScratch scratch;
      std::vector<int32_t> got;
      TopTokens(z->data(), kVocab, k, &scratch, &got, with_maxima ? block_max.data() : nullptr);
      std::vector<int32_t> want(static_cast<size_t>(kVocab));
      std::iota(want.begin(), want.end(), 0);
      std::sort(want.begin(), want.end(),
                [&](int32_t a, int32_t b) { return (*z)[static_cast<size_t>(a)] > (*z)[static_cast<size_t>(b)]; });
      want.resize(static_cast<size_t>(k));
      EXPECT_EQ(got, want) << "k " << k;
      const bool selected = scratch.heap.capacity() >= static_cast<size_t>(kVocab);
      EXPECT_EQ(selected, z == &ascending) << "k " << k << (with_maxima ? " with" : " without") << " block maxima";
    }
  }
}

TEST(SamplerChainTest, TopKBoundaryTiesGoToTheLowerId) {
  std::vector<float> z(100, 0.0f);
  for (int id : {90, 10, 50, 30, 70}) z[static_cast<size_t>(id)] = 5.0f;  // five-way tie
  z[99] = 6.0f;
  SamplingConfig c;
  c.temperature = 1.0f;
  c.top_k = 3;
  ChainScratch scratch;
  Candidates got;
  ASSERT_TRUE(BuildCandidates(z.data(), 100, c, &scratch, &got).ok());
  EXPECT_EQ(Ids(got), (std::vector<int32_t>{99, 10, 30}));
}

TEST(SamplerChainTest, LargeTopKUsesSelectionAndAgreesWithTheHeap) {
  std::mt19937 gen(3);
  std::normal_distribution<float> normal;
  std::vector<float> z(50000);
  for (float& x : z) x = std::round(normal(gen) * 8) / 8;  // many ties
  ChainScratch scratch;
  std::vector<int32_t> big, small;
  TopTokens(z.data(), 50000, 5000, &scratch, &big);    // nth_element path
  TopTokens(z.data(), 50000, 1000, &scratch, &small);  // heap path
  ASSERT_EQ(big.size(), 5000u);
  ASSERT_EQ(small.size(), 1000u);
  EXPECT_TRUE(std::equal(small.begin(), small.end(), big.begin()));
  for (size_t i = 1; i < big.size(); ++i) {
    EXPECT_TRUE(z[big[i - 1]] > z[big[i]] || (z[big[i - 1]] == z[big[i]] && big[i - 1] < big[i])) << i;
  }
}

// With the logits' block maxima, top-k reads only the blocks that can still enter the heap and greedy looks in
// the first block holding the max: the same ids as the full scans and as a stable sort, ties (coarse values),
// masked runs, the max in the short last block and vocabularies shorter than one block included.
TEST(SamplerChainTest, BlockMaximaChangeNoSelection) {
  std::mt19937 gen(11);
  std::normal_distribution<float> normal;
  for (int64_t vocab : {1, 100, 256, 257, 1000, 4097, 32000}) {
    for (int variant = 0; variant < 4; ++variant) {
      std::vector<float> z(static_cast<size_t>(vocab));
      for (float& x : z) x = variant == 1 ? std::round(normal(gen) * 2) / 2 : normal(gen);  // variant 1: ties
      if (variant == 2) {
        for (size_t i = 0; i < z.size(); ++i) {
          if ((i / 300) % 2 == 0) z[i] = -INFINITY;  // masked runs longer than a block
        }
        z.back() = 1.0f;
      }
      if (variant == 3) z.back() = 100.0f;  // the max in the last (short) block
      std::vector<float> block_max(static_cast<size_t>(kernels::MaxBlocks(vocab)));
      kernels::ScanMax(z.data(), vocab, block_max.data());
      std::vector<int32_t> order(z.size());
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return z[a] > z[b]; });
      EXPECT_EQ(GreedyToken(z.data(), vocab, block_max.data()), order[0]) << vocab << " " << variant;
      EXPECT_EQ(GreedyToken(z.data(), vocab), order[0]) << vocab << " " << variant;
      ChainScratch scratch;
      for (int64_t k : {int64_t{1}, int64_t{3}, int64_t{40}, std::min<int64_t>(vocab, 256)}) {
        if (k > vocab) continue;
        std::vector<int32_t> with, without;
        TopTokens(z.data(), vocab, k, &scratch, &with, block_max.data());
        TopTokens(z.data(), vocab, k, &scratch, &without);
        const std::vector<int32_t> want(order.begin(), order.begin() + k);
        EXPECT_EQ(with, want) << vocab << " " << variant << " k=" << k;
        EXPECT_EQ(without, want) << vocab << " " << variant << " k=" << k;
      }
    }
  }
}

// Logits in shared memory can be rewritten by their client while the step reads them: the chain then sees block
// maxima (from the metrics pass) that no longer describe z. It must still answer with a token or an error, never
// an id past the vocabulary or a read of an empty candidate list.
TEST(SamplerChainTest, GreedyTokenIsATokenWhenTheBlockMaximaNoLongerDescribeTheLogits) {
  for (int64_t vocab : {int64_t{100}, int64_t{1000}, int64_t{4097}}) {
    std::vector<float> z(static_cast<size_t>(vocab));
    for (int64_t i = 0; i < vocab; ++i) z[static_cast<size_t>(i)] = static_cast<float>(i % 97) / 10.0f;
    std::vector<float> block_max(static_cast<size_t>(kernels::MaxBlocks(vocab)), 0.0f);
    block_max.back() = 50.0f;  // the last block's max as the metrics pass saw it; z holds no 50 any more
    const int32_t token = GreedyToken(z.data(), vocab, block_max.data());
    EXPECT_GE(token, 0) << vocab;
    EXPECT_LT(token, vocab) << vocab;
  }
}

TEST(SamplerChainTest, CandidatesFromLogitsThatChangedSinceTheirBlockMaximaAreAnError) {
  const int64_t vocab = 4096;  // more blocks than top_k: the chain takes its floor from the maxima
  std::vector<float> z(static_cast<size_t>(vocab), 1.0f);
  std::vector<float> block_max(static_cast<size_t>(kernels::MaxBlocks(vocab)), 100.0f);  // above every z now
  ASSERT_GT(static_cast<int64_t>(block_max.size()), 5);
  SamplingConfig c;
  c.temperature = 1.0f;
  c.top_k = 5;
  ChainScratch scratch;
  Candidates got;
  absl::Status s = BuildCandidates(z.data(), vocab, c, &scratch, &got, block_max.data());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_EQ(ErrorField(s), "logits.data");
  // Without top-k: every logit masked by now (the metrics pass found a finite one).
  std::fill(z.begin(), z.end(), -INFINITY);
  c.top_k = 0;
  s = BuildCandidates(z.data(), vocab, c, &scratch, &got);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_EQ(ErrorField(s), "logits.data");
}

TEST(SamplerChainTest, MinPKeepsTokensAtLeastMinPTimesTheMostLikely) {
  // p proportional to 8, 4, 2, 1: min_p 0.25 keeps 8, 4, 2 (2 >= 0.25 * 8) and drops 1.
  std::vector<float> z = {std::log(8.0f), std::log(4.0f), std::log(2.0f), std::log(1.0f)};
  SamplingConfig c;
  c.temperature = 1.0f;
  c.min_p = 0.25f;
  ChainScratch scratch;
  Candidates got;
  ASSERT_TRUE(BuildCandidates(z.data(), 4, c, &scratch, &got).ok());
  EXPECT_EQ(Ids(got), (std::vector<int32_t>{0, 1, 2}));
  EXPECT_NEAR(got.tokens[0].weight / got.total, 8.0 / 14.0, 1e-6);
}

TEST(SamplerChainTest, PenaltiesFollowHfAndOpenAiDefinitions) {
  std::vector<float> z = {2.0f, -2.0f, 1.0f, 0.5f};
  SamplingConfig c;
  c.repetition_penalty = 2.0f;
  c.frequency_penalty = 0.25f;
  c.presence_penalty = 0.5f;
  google::protobuf::Map<int32_t, float> bias;
  bias[3] = 1.0f;
  c.logit_bias = &bias;
  const std::vector<int32_t> recent = {0, 1, 0};
  ChainScratch scratch;
  absl::StatusOr<const float*> x = ApplyLogitAdjustments(z.data(), 4, c, recent, &scratch);
  ASSERT_TRUE(x.ok()) << x.status();
  EXPECT_FLOAT_EQ((*x)[0], 2.0f / 2.0f - 0.25f * 2 - 0.5f);   // positive: divided
  EXPECT_FLOAT_EQ((*x)[1], -2.0f * 2.0f - 0.25f * 1 - 0.5f);  // negative: multiplied
  EXPECT_FLOAT_EQ((*x)[2], 1.0f);                             // not recent: untouched
  EXPECT_FLOAT_EQ((*x)[3], 1.5f);                             // bias only
  EXPECT_EQ(z[0], 2.0f) << "the request's logits are never written";
}

// In exact arithmetic these logits are finite: an overflow would read as a banned token (-inf, and an error when it
// was the only one) or as an invalid logit (+inf, an error). They are held at the largest finite float instead.
// Occurrences are counted in a table over the vocabulary that each step leaves all zeros, so a scratch reused by
// the next step (another vocabulary, other tokens) counts from zero; many repeats of few tokens count exactly.
TEST(SamplerChainTest, PenaltyCountsStartFromZeroInEveryStep) {
  SamplingConfig c;
  c.frequency_penalty = 0.125f;
  c.presence_penalty = 1.0f;
  ChainScratch reused;
  std::mt19937 gen(3);
  for (const int64_t vocab : {int64_t{50}, int64_t{1000}, int64_t{20}}) {
    std::vector<int32_t> recent(30000);
    for (int32_t& t : recent) t = static_cast<int32_t>(gen() % static_cast<uint32_t>(std::min<int64_t>(vocab, 7)));
    std::vector<float> z(static_cast<size_t>(vocab), 0.0f);
    absl::StatusOr<const float*> x = ApplyLogitAdjustments(z.data(), vocab, c, recent, &reused);
    ASSERT_TRUE(x.ok()) << x.status();
    std::map<int32_t, int> occurrences;
    for (int32_t t : recent) ++occurrences[t];
    for (int64_t id = 0; id < vocab; ++id) {
      const auto it = occurrences.find(static_cast<int32_t>(id));
      const float want = it == occurrences.end() ? 0.0f : -(0.125f * static_cast<float>(it->second) + 1.0f);
      EXPECT_EQ((*x)[id], want) << "vocab " << vocab << " token " << id;
    }
    for (const uint32_t count : reused.recent_counts) ASSERT_EQ(count, 0u) << "a count left for the next step";
  }
}

TEST(SamplerChainTest, BiasAndPenaltiesPastFloatsRangeSaturateInsteadOfOverflowing) {
  constexpr float kMax = std::numeric_limits<float>::max();
  ChainScratch scratch;
  SamplingConfig repeat;
  repeat.repetition_penalty = 2.0f;
  std::vector<float> lone = {-3e38f};
  absl::StatusOr<const float*> x = ApplyLogitAdjustments(lone.data(), 1, repeat, std::vector<int32_t>{0}, &scratch);
  ASSERT_TRUE(x.ok()) << x.status();
  EXPECT_EQ((*x)[0], -kMax);

  repeat.repetition_penalty = 0.5f;
  std::vector<float> z = {3e38f, 0.0f};
  x = ApplyLogitAdjustments(z.data(), 2, repeat, std::vector<int32_t>{0}, &scratch);
  ASSERT_TRUE(x.ok()) << x.status();
  EXPECT_EQ((*x)[0], kMax);
  EXPECT_EQ(GreedyToken(*x, 2), 0);

  SamplingConfig frequency;
  frequency.frequency_penalty = 3e38f;
  x = ApplyLogitAdjustments(z.data(), 2, frequency, std::vector<int32_t>{1, 1}, &scratch);
  ASSERT_TRUE(x.ok()) << x.status();
  EXPECT_EQ((*x)[1], -kMax);

  google::protobuf::Map<int32_t, float> bias;
  bias[0] = 3e38f;
  bias[1] = -INFINITY;
  SamplingConfig biased;
  biased.logit_bias = &bias;
  x = ApplyLogitAdjustments(z.data(), 2, biased, {}, &scratch);
  ASSERT_TRUE(x.ok()) << x.status();
  EXPECT_EQ((*x)[0], kMax);
  EXPECT_EQ((*x)[1], -INFINITY) << "a -inf bias still bans its token";
}

TEST(SamplerChainTest, NoAdjustmentReturnsTheInputWithoutACopy) {
  std::vector<float> z = {1.0f, 2.0f};
  ChainScratch scratch;
  absl::StatusOr<const float*> x = ApplyLogitAdjustments(z.data(), 2, SamplingConfig{}, {}, &scratch);
  ASSERT_TRUE(x.ok());
  EXPECT_EQ(*x, z.data());
}

TEST(SamplerChainTest, BiasThatMasksEveryTokenIsRejected) {
  std::vector<float> z = {1.0f, 2.0f};
  google::protobuf::Map<int32_t, float> bias;
  bias[0] = -INFINITY;
  bias[1] = -INFINITY;
  SamplingConfig c;
  c.logit_bias = &bias;
  ChainScratch scratch;
  absl::StatusOr<const float*> x = ApplyLogitAdjustments(z.data(), 2, c, {}, &scratch);
  EXPECT_EQ(x.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ErrorField(x.status()), "params.logit_bias");
  bias.clear();
  bias[5] = 1.0f;
  x = ApplyLogitAdjustments(z.data(), 2, c, {}, &scratch);
  EXPECT_EQ(x.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(x.status().message().find("5"), absl::string_view::npos);
}

// Chi-square of `counts` against `probs` (>= 5 expected per cell is ensured by the callers).
double ChiSquare(const std::map<int32_t, int>& counts, const std::map<int32_t, double>& probs, int n) {
  double chi2 = 0;
  for (const auto& [id, p] : probs) {
    const double expected = p * n;
    const int got = counts.count(id) ? counts.at(id) : 0;
    chi2 += (got - expected) * (got - expected) / expected;
  }
  return chi2;
}

TEST(SamplerDistributionTest, DrawsFollowTheCandidateProbabilities) {
  // 12 tokens, temperature 0.8, top-k 8, top-p 0.9: the chain leaves a handful with uneven probabilities.
  std::vector<float> z = {1.0f, 0.2f, 2.5f, 1.7f, -0.5f, 2.4f, 0.0f, 1.1f, 3.0f, 0.9f, -1.0f, 1.6f};
  const std::string bytes(reinterpret_cast<const char*>(z.data()), z.size() * sizeof(float));
  const int64_t shape[] = {12};
  v1::SamplingParams params;
  params.set_temperature(0.8f);
  params.set_top_k(8);
  params.set_top_p(0.9f);
  params.set_min_p(0.0f);

  SamplingConfig c;
  c.temperature = 0.8f;
  c.top_k = 8;
  c.top_p = 0.9f;
  ChainScratch scratch;
  Candidates cands;
  ASSERT_TRUE(BuildCandidates(z.data(), 12, c, &scratch, &cands).ok());
  std::map<int32_t, double> probs;
  for (const auto& t : cands.tokens) probs[t.id] = t.weight / cands.total;
  ASSERT_GE(probs.size(), 4u);

  constexpr int kDraws = 20000;
  std::map<int32_t, int> counts;
  Workspace ws;
  StepOutput out;
  const auto registry = ProfileRegistry::BuiltIn();
  for (int seed = 1; seed <= kDraws; ++seed) {
    StepInput in;
    in.sequence_id = "chi";
    in.step = 0;
    in.seed = static_cast<uint64_t>(seed);
    in.logits = RawTensor{1, shape, bytes};
    in.profile = "fixed";
    in.overrides = &params;
    ASSERT_TRUE(RunStep(*registry, TensorLimits{}, in, &ws, &out).ok());
    ASSERT_TRUE(probs.count(out.token)) << out.token << " is outside the candidate set";
    ++counts[out.token];
  }
  // df = cells - 1; the 0.999 quantile for df <= 8 is below 26.2.
  EXPECT_LT(ChiSquare(counts, probs, kDraws), 26.2) << "cells: " << probs.size();
}

TEST(SamplerDistributionTest, BestOfNPrefersLikelierTokens) {
  // ADAPTIVE's best of n draws must pick the token with the largest logit more often than one draw would.
  std::vector<float> z(64);
  for (size_t i = 0; i < z.size(); ++i) z[i] = 0.05f * static_cast<float>(i % 16);
  SamplingConfig c;
  c.temperature = 1.0f;
  ChainScratch scratch;
  Candidates cands;
  ASSERT_TRUE(BuildCandidates(z.data(), 64, c, &scratch, &cands).ok());
  int single_top = 0, best_top = 0;
  for (uint64_t seed = 1; seed <= 4000; ++seed) {
    const int32_t one = Draw(cands, UniformDouble({seed, "b"}, 0, 0));
    int32_t best = one;
    for (uint32_t d = 1; d < 5; ++d) {
      const int32_t t = Draw(cands, UniformDouble({seed, "b"}, 0, d));
      if (z[t] > z[best]) best = t;
    }
    single_top += z[one] == z[15];
    best_top += z[best] == z[15];
  }
  EXPECT_GT(best_top, 2 * single_top);
}

}  // namespace
}  // namespace samplerd
