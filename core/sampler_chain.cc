#include "core/sampler_chain.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "core/field_error.h"
#include "core/reduce_kernels.h"

namespace samplerd {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
// Above this k, top-k uses nth_element over all ids instead of a bounded heap.
constexpr int64_t kHeapTopK = 1024;

// Strict "a ranks before b": larger value first, then lower id.
inline bool Before(float za, int32_t a, float zb, int32_t b) { return za > zb || (za == zb && a < b); }

inline bool Before(const WeightedToken& a, const WeightedToken& b) { return Before(a.weight, a.id, b.weight, b.id); }

}  // namespace

NucleusSelection SelectNucleus(absl::Span<WeightedToken> t, double target) {
  NucleusSelection result;
  int64_t lo = 0, hi = static_cast<int64_t>(t.size());
  double acc = 0;
  // Introselect's bound: logits ordered against the median of three (McIlroy's adversary) make every round keep
  // all but a few entries, which would cost O(n^2); past this many rounds the rest is sorted instead.
  int rounds_left = 2 * static_cast<int>(std::log2(static_cast<double>(std::max<int64_t>(hi, 2))));
  while (hi - lo > 32 && rounds_left-- > 0) {
    result.partitioned += hi - lo;
    // Median of three as pivot, moved to hi - 1.
    const int64_t mid = lo + (hi - lo) / 2;
    if (Before(t[mid], t[lo])) std::swap(t[mid], t[lo]);
    if (Before(t[hi - 1], t[lo])) std::swap(t[hi - 1], t[lo]);
    if (Before(t[mid], t[hi - 1])) std::swap(t[mid], t[hi - 1]);
    const WeightedToken pivot = t[hi - 1];
    int64_t store = lo;
    double better_mass = 0;
    for (int64_t i = lo; i < hi - 1; ++i) {
      if (Before(t[i], pivot)) {
        better_mass += t[i].weight;
        std::swap(t[i], t[store++]);
      }
    }
    std::swap(t[store], t[hi - 1]);  // pivot at `store`
    if (acc + better_mass >= target) {
      hi = store;  // the nucleus ends among the better ones
    } else {
      acc += better_mass + pivot.weight;
      if (acc >= target) {
        result.length = store + 1;
        return result;
      }
      lo = store + 1;
    }
  }
  result.sorted = hi - lo;
  std::sort(t.begin() + lo, t.begin() + hi,
            [](const WeightedToken& a, const WeightedToken& b) { return Before(a, b); });
  result.length = hi;
  for (int64_t i = lo; i < hi; ++i) {
    acc += t[i].weight;
    if (acc >= target) {
      result.length = i + 1;
      break;
    }
  }
  return result;
}

namespace {

// `v`, computed from the finite logit `from` with finite parameters, held at the largest finite float instead of
// overflowing: in exact arithmetic the logit is finite, and an infinity would read as a banned token (-inf) or
// as an invalid logit (+inf). A logit that was -inf (banned) stays so.
float SaturatingFinite(float v, float from) {
  if (!std::isfinite(from) || std::isfinite(v)) return v;
  return std::copysign(std::numeric_limits<float>::max(), v);
}

}  // namespace

absl::StatusOr<const float*> ApplyLogitAdjustments(const float* z, int64_t vocab, const SamplingConfig& config,
                                                   absl::Span<const int32_t> recent_tokens, ChainScratch* scratch) {
  const bool bias = config.HasLogitBias();
  const bool penalties = config.HasPenalties() && !recent_tokens.empty();
  if (!bias && !penalties) return z;

  scratch->logits.assign(z, z + vocab);
  float* x = scratch->logits.data();
  if (bias) {
    // The lowest id outside the vocabulary is named: map order differs between copies of a request.
    int64_t outside = -1;
    for (const auto& [token, b] : *config.logit_bias) {
      if (token >= vocab && (outside < 0 || token < outside)) outside = token;
    }
    if (outside >= 0) {
      return InvalidFieldError("params.logit_bias",
                               absl::StrCat("token id ", outside, " is outside the vocabulary [0, ", vocab, ")"));
    }
    for (const auto& [token, b] : *config.logit_bias) {
      x[token] = b == kNegInf ? kNegInf : SaturatingFinite(x[token] + b, x[token]);
    }
  }
  if (penalties) {
    // Counted in a table over the vocabulary, all zeros between steps (each token's count is reset as it is
    // applied): linear in the recent tokens, however many the request carries.
    auto& counts = scratch->recent_counts;
    if (counts.size() < static_cast<size_t>(vocab)) counts.resize(static_cast<size_t>(vocab), 0);
    for (const int32_t token : recent_tokens) ++counts[static_cast<size_t>(token)];
    for (const int32_t token : recent_tokens) {
      const uint32_t occurrences = counts[static_cast<size_t>(token)];
      if (occurrences == 0) continue;  // applied at its first occurrence
      counts[static_cast<size_t>(token)] = 0;
      const float count = static_cast<float>(occurrences);
      const float before = x[token];
      float v = before;
      // HF RepetitionPenaltyLogitsProcessor: shrink toward "less likely" whatever the sign.
      if (config.repetition_penalty != 1.0f) {
        v = SaturatingFinite(v > 0.0f ? v / config.repetition_penalty : v * config.repetition_penalty, before);
      }
      // OpenAI: frequency per occurrence, presence once.
      x[token] = SaturatingFinite(v - (config.frequency_penalty * count + config.presence_penalty), before);
    }
  }
  scratch->block_max.resize(static_cast<size_t>(kernels::MaxBlocks(vocab)));
  const kernels::ScanResult scan = kernels::ScanMax(x, vocab, scratch->block_max.data());
  if (scan.max == kNegInf) {
    return InvalidFieldError("params.logit_bias", "after bias and penalties every logit is -inf");
  }
  if (scan.first_bad >= 0) {
    return InvalidFieldError("params", absl::StrCat("bias and penalties made logit ", scan.first_bad, " non-finite"));
  }
  return static_cast<const float*>(x);
}

namespace {

// Replaces the top of a std heap (ordered by `less`) with `v` and sifts it down: one pass, where
// pop_heap + push_heap take two.
template <typename T, typename Less>
void ReplaceTop(std::vector<T>* heap, const T& v, Less less) {
  std::vector<T>& h = *heap;
  const size_t n = h.size();
  size_t i = 0;
  for (;;) {
    size_t child = 2 * i + 1;
    if (child >= n) break;
    if (child + 1 < n && less(h[child], h[child + 1])) ++child;
    if (!less(v, h[child])) break;
    h[i] = h[child];
    i = child;
  }
  h[i] = v;
}

}  // namespace

int32_t GreedyToken(const float* z, int64_t vocab, const float* block_max) {
  if (block_max == nullptr) return static_cast<int32_t>(kernels::ScanMax(z, vocab, nullptr).argmax);
  // The first block holding the max, then the max's first place in it.
  const int64_t block = kernels::ScanMax(block_max, kernels::MaxBlocks(vocab), nullptr).argmax;
  const int64_t from = block * kernels::kMaxBlock;
  const int64_t len = std::min(vocab - from, kernels::kMaxBlock);
  const int64_t at = kernels::FindFirst(z + from, len, block_max[block]);
  // Not there: z is no longer what the maxima were taken from (a shared-memory tensor rewritten in flight). Any
  // answer is then as good as another, but it must be a token.
  if (at >= len) return static_cast<int32_t>(kernels::ScanMax(z, vocab, nullptr).argmax);
  return static_cast<int32_t>(from + at);
}

namespace {

// TopTokens by selection over every entry: O(vocab) expected, O(vocab log vocab) at most (introselect).
void SelectTopTokens(const float* z, int64_t vocab, int64_t n, ChainScratch* scratch, std::vector<int32_t>* out) {
  // On (value, id) pairs read once: std::nth_element's unguarded loops rely on a consistent order, which
  // comparisons that read z again would not give if z changed under the step (shared memory rewritten in flight).
  out->clear();
  auto& all = scratch->heap;
  all.resize(static_cast<size_t>(vocab));
  for (int64_t i = 0; i < vocab; ++i) all[static_cast<size_t>(i)] = {z[i], static_cast<int32_t>(i)};
  auto before = [](const std::pair<float, int32_t>& a, const std::pair<float, int32_t>& b) {
    return Before(a.first, a.second, b.first, b.second);
  };
  std::nth_element(all.begin(), all.begin() + (n - 1), all.end(), before);
  all.resize(static_cast<size_t>(n));
  std::sort(all.begin(), all.end(), before);
  for (const auto& [value, id] : all) out->push_back(id);
}

}  // namespace

void TopTokens(const float* z, int64_t vocab, int64_t n, ChainScratch* scratch, std::vector<int32_t>* out,
               const float* block_max) {
  out->clear();
  n = std::min(n, vocab);
  if (n <= 0) return;
  if (n > kHeapTopK) {
    SelectTopTokens(z, vocab, n, scratch, out);
    return;
  }
  // Bounded heap with the worst kept token on top. Ids arrive in increasing order, so an equal value never
  // displaces a kept one (lower id wins ties); most entries are skipped by a SIMD threshold test.
  auto& heap = scratch->heap;
  heap.clear();
  auto worse_on_top = [](const std::pair<float, int32_t>& a, const std::pair<float, int32_t>& b) {
    return Before(a.first, a.second, b.first, b.second);
  };
  const int64_t blocks = kernels::MaxBlocks(vocab);
  // With the block maxima: the n-th largest of them is a floor, since n entries (those maxima) reach it, so
  // the n best are all >= floor and nothing below it is ever looked at, not even while the heap fills up.
  float below = -std::numeric_limits<float>::infinity();  // entries must be > below until the heap is full
  if (block_max != nullptr && blocks >= n) {
    scratch->block_keys.resize(static_cast<size_t>(kernels::KthLargestKeys(blocks)));
    below = std::nextafter(kernels::KthLargest(block_max, blocks, n, scratch->block_keys.data()),
                           -std::numeric_limits<float>::infinity());
  }
  // In random order the heap takes about n ln(vocab / n) replacements; logits in ascending order make every entry
  // one (vocab log n), past what the selection over all entries costs, which then takes over.
  int64_t replacements_left = 4 * n + vocab / 8;
  int64_t i = 0;
  if (below == -std::numeric_limits<float>::infinity()) {
    // No floor (or it is -inf): the first n entries, whatever they are, fill the heap.
    for (; i < vocab && static_cast<int64_t>(heap.size()) < n; ++i) {
      heap.emplace_back(z[i], static_cast<int32_t>(i));
      std::push_heap(heap.begin(), heap.end(), worse_on_top);
    }
  }
  while (i < vocab) {
    const bool full = static_cast<int64_t>(heap.size()) == n;
    const float threshold = full ? heap.front().first : below;
    int64_t end = vocab;
    if (block_max != nullptr) {
      // Skip to the next block whose max is above the threshold, and search within that block.
      int64_t block = i / kernels::kMaxBlock;
      if (!(block_max[block] > threshold)) {
        block = kernels::FindFirstGreater(block_max, block + 1, blocks, threshold);
        if (block >= blocks) break;
        i = block * kernels::kMaxBlock;
      }
      end = std::min(vocab, (block + 1) * kernels::kMaxBlock);
    }
    i = kernels::FindFirstGreater(z, i, end, threshold);
    if (i >= end) continue;
    const std::pair<float, int32_t> entry{z[i], static_cast<int32_t>(i)};
    if (full) {
      if (replacements_left-- == 0) {
        SelectTopTokens(z, vocab, n, scratch, out);
        return;
      }
      ReplaceTop(&heap, entry, worse_on_top);
    } else {
      heap.push_back(entry);
      std::push_heap(heap.begin(), heap.end(), worse_on_top);
    }
    ++i;
  }
  std::sort_heap(heap.begin(), heap.end(), worse_on_top);  // best first
  for (const auto& [value, id] : heap) out->push_back(id);
}

absl::Status BuildCandidates(const float* z, int64_t vocab, const SamplingConfig& config, ChainScratch* scratch,
                             Candidates* out, const float* block_max) {
  auto& tokens = out->tokens;
  tokens.clear();
  const float temperature = config.temperature;
  const bool use_top_k = config.top_k > 0 && config.top_k < vocab;
  float max_z;
  if (use_top_k) {
    TopTokens(z, vocab, config.top_k, scratch, &scratch->ids, block_max);
    if (scratch->ids.empty()) return ChangedDuringStepError("logits.data");
    max_z = z[scratch->ids.front()];
    for (int32_t id : scratch->ids) {
      if (z[id] == kNegInf) break;  // masked tokens never survive
      tokens.push_back({(z[id] - max_z) / temperature, id});
    }
    out->sorted = true;
  } else {
    max_z = kernels::ScanMax(z, vocab, nullptr).max;
    for (int64_t i = 0; i < vocab; ++i) {
      if (z[i] != kNegInf) tokens.push_back({(z[i] - max_z) / temperature, static_cast<int32_t>(i)});
    }
    out->sorted = false;
  }
  double total = 0;
  for (WeightedToken& t : tokens) {
    t.weight = std::exp(t.weight);
    total += t.weight;
  }
  // Tokens whose weight underflowed to 0 can never be drawn; keeping them would only cost time.
  if (config.top_p < 1.0f) {
    const double target = static_cast<double>(config.top_p) * total;
    size_t cut = tokens.size();
    if (out->sorted) {
      double acc = 0;
      for (size_t i = 0; i < tokens.size(); ++i) {
        acc += tokens[i].weight;
        if (acc >= target) {
          cut = i + 1;
          break;
        }
      }
    } else {
      cut = static_cast<size_t>(SelectNucleus(absl::MakeSpan(tokens), target).length);
    }
    tokens.resize(cut);
  }
  if (config.min_p > 0.0f) {
    // The most likely token survives every filter and has weight exp(0) = 1.
    const float threshold = config.min_p;
    tokens.erase(std::remove_if(tokens.begin(), tokens.end(),
                                [threshold](const WeightedToken& t) { return t.weight < threshold; }),
                 tokens.end());
  }
  tokens.erase(std::remove_if(tokens.begin(), tokens.end(), [](const WeightedToken& t) { return t.weight == 0.0f; }),
               tokens.end());
  if (!out->sorted && static_cast<int64_t>(tokens.size()) <= kSortedCandidates) {
    std::sort(tokens.begin(), tokens.end(),
              [](const WeightedToken& a, const WeightedToken& b) { return Before(a, b); });
    out->sorted = true;
  }
  total = 0;
  for (const WeightedToken& t : tokens) total += t.weight;
  out->total = total;
  if (tokens.empty() || !(total > 0.0) || !std::isfinite(total)) return ChangedDuringStepError("logits.data");
  return absl::OkStatus();
}

int32_t Draw(const Candidates& c, double u) {
  const double target = u * c.total;
  double acc = 0;
  for (const WeightedToken& t : c.tokens) {
    acc += t.weight;
    if (acc > target) return t.id;
  }
  return c.tokens.back().id;
}

}  // namespace samplerd
