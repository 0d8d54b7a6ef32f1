// The sampler chain of docs/contract.md section 4, without sorting the vocabulary.
//
// Order (as HF transformers' warpers): logit bias -> penalties -> temperature -> top-k -> top-p -> min-p ->
// renormalise -> draw. Ties go to the lower token id everywhere (top-k boundary, top-p order, argmax).
//
// Cost: top-k is one pass with a bounded heap (or nth_element for large k); given the logits' block maxima
// (kernels::ScanMax, which the metrics pass runs anyway) it reads only the blocks whose max can still enter
// the heap, from a floor that kernels::KthLargest finds among the maxima. Top-p then works on the k survivors. With
// top-k off, top-p finds its nucleus by a quickselect on probability mass (SelectNucleus), so a step sorts the whole
// vocabulary only when the logits are ordered against the quickselect; only a final set of at most
// kSortedCandidates is put in descending order.
//
//   ChainScratch scratch;
//   const float* z = ApplyLogitAdjustments(logits, vocab, config, recent_tokens, &scratch);
//   Candidates c;
//   BuildCandidates(z, vocab, config, &scratch, &c);
//   int32_t token = Draw(c, UniformDouble(key, step, 0));
#ifndef SAMPLERD_CORE_SAMPLER_CHAIN_H_
#define SAMPLERD_CORE_SAMPLER_CHAIN_H_

#include <cstdint>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "core/aligned_vector.h"
#include "core/sampling_config.h"

namespace samplerd {

// Final sets up to this size are sorted by descending probability (lower id first on ties).
inline constexpr int64_t kSortedCandidates = 4096;

// A token with its unnormalised weight exp((z - max) / T).
struct WeightedToken {
  float weight;
  int32_t id;
};

// What SelectNucleus did: the nucleus' length, and the work it took.
struct NucleusSelection {
  int64_t length = 0;
  int64_t partitioned = 0;  // entries its partition rounds went over, all rounds together
  int64_t sorted = 0;       // entries it sorted once the rounds ended
};

// Reorders `tokens` so that the nucleus (the shortest prefix in rank order, larger weight then lower id first,
// whose weight reaches `target`) comes first, and returns its length: a quickselect on mass, expected O(n), no
// full sort, and at most O(n log n) whatever the order of the weights.
NucleusSelection SelectNucleus(absl::Span<WeightedToken> tokens, double target);

// Reusable buffers of the chain.
struct ChainScratch {
  std::vector<float> logits;                    // penalised copy of the logits, when any adjustment applies
  std::vector<int32_t> ids;                     // top-k selection output
  std::vector<std::pair<float, int32_t>> heap;  // top-k selection
  std::vector<uint32_t> recent_counts;          // penalty counting, by token id; all zeros between steps
  std::vector<float> block_max;                 // block maxima of the penalised copy
  AlignedVector<int32_t> block_keys;            // top-k: the block maxima as ordered integers (KthLargest)
};

// The tokens that survive the chain; probability = weight / total.
struct Candidates {
  std::vector<WeightedToken> tokens;
  double total = 0;
  bool sorted = false;  // descending probability, lower id first on ties
};

// Applies logit bias, then repetition / frequency / presence penalties over `recent_tokens`. Returns `z`
// itself when nothing applies, else a penalised copy in `scratch->logits`, with its block maxima in
// `scratch->block_max`. Token ids must already be checked
// against the vocabulary. A finite logit stays finite: a sum or product past float's range is held at +-FLT_MAX.
// Errors (INVALID_ARGUMENT, field "params.logit_bias") when the result masks every token.
absl::StatusOr<const float*> ApplyLogitAdjustments(const float* z, int64_t vocab, const SamplingConfig& config,
                                                   absl::Span<const int32_t> recent_tokens, ChainScratch* scratch);

// `block_max` below, when not null: the maxima of z's blocks of kernels::kMaxBlock entries (kernels::ScanMax).

// The largest finite entry's lowest index.
int32_t GreedyToken(const float* z, int64_t vocab, const float* block_max = nullptr);

// The `n` best ids by (z descending, id ascending), best first. n <= vocab.
void TopTokens(const float* z, int64_t vocab, int64_t n, ChainScratch* scratch, std::vector<int32_t>* out,
               const float* block_max = nullptr);

// temperature (> 0) -> top-k -> top-p -> min-p over `z`; at least one finite entry is required. Errors
// (INVALID_ARGUMENT, field "logits.data") when no candidate is left with a finite positive weight, which only
// logits that change while the step reads them can cause (a shared-memory tensor rewritten in flight): the
// metrics found a finite max, and `block_max` describes z as that pass read it.
absl::Status BuildCandidates(const float* z, int64_t vocab, const SamplingConfig& config, ChainScratch* scratch,
                             Candidates* out, const float* block_max = nullptr);

// The categorical draw: the first candidate (in `c.tokens` order) whose cumulative weight exceeds u * total.
int32_t Draw(const Candidates& c, double u);

}  // namespace samplerd

#endif  // SAMPLERD_CORE_SAMPLER_CHAIN_H_
