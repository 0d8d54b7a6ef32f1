#include "core/step_engine.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <type_traits>

#include "absl/container/inlined_vector.h"
#include "absl/strings/str_cat.h"
#include "core/counter_rng.h"
#include "core/field_error.h"

namespace samplerd {
namespace {

// Validated tensors give finite metrics; one that changed while the metrics pass read it may not.
absl::Status CheckMetricsFinite(const MetricValues& m) {
  if (!std::isfinite(m.logits_entropy) || !std::isfinite(m.logits_varentropy)) {
    return ChangedDuringStepError("logits.data");
  }
  if (m.attention.has_value() &&
      !(std::isfinite(m.attention->entropy) && std::isfinite(m.attention->varentropy) &&
        std::isfinite(m.attention->agreement) && std::isfinite(m.attention->interaction_strength))) {
    return ChangedDuringStepError("attention.data");
  }
  return absl::OkStatus();
}

// The drawn token's log-probability and the top list read z again after the metrics pass, each entry once: z
// rewritten in between (shared memory) can give a log-probability above 0 (a logit above the max the metrics
// found), a list out of order, a token listed with another value than it was drawn with, or a list that leaves
// out a better token than its last. None holds for one state of z. At most kMaxTopLogprobs entries: no pass
// over the vocabulary.
absl::Status CheckLogprobsReadOneState(const StepOutput& out, int32_t top_logprobs) {
  // A drawn token's logit is finite (an emitted one may be masked: -inf).
  constexpr float kMasked = -std::numeric_limits<float>::infinity();
  if (std::isnan(out.logprob) || out.logprob > 0.0f || (out.drew && out.logprob == kMasked)) {
    return ChangedDuringStepError("logits.data");
  }
  // A step has a finite logit (all masked is refused before), so a list asked for is never empty.
  if (top_logprobs > 0 && out.top.empty()) return ChangedDuringStepError("logits.data");
  float previous = 0.0f;
  bool drawn_listed = false;
  for (const auto& [id, logprob] : out.top) {
    // Also NaN and +inf: only -inf (masked) entries are left out of the list.
    if (!(logprob <= previous)) return ChangedDuringStepError("logits.data");
    previous = logprob;
    if (id == out.token) {
      if (logprob != out.logprob) return ChangedDuringStepError("logits.data");
      drawn_listed = true;
    }
  }
  // A list shorter than asked holds every token with a finite log-probability; a full one, the best of them.
  if (top_logprobs > 0 && !drawn_listed && out.logprob != kMasked &&
      (static_cast<int32_t>(out.top.size()) < top_logprobs || out.logprob > out.top.back().second)) {
    return ChangedDuringStepError("logits.data");
  }
  return absl::OkStatus();
}

// Calls visit(buffer) on each scratch buffer of `ws`.
template <class Visit>
void ForEachBuffer(Workspace* ws, Visit&& visit) {
  visit(ws->logits_buffer);
  visit(ws->attention_buffer);
  MetricsScratch& m = ws->metrics;
  visit(m.block_moments);
  visit(m.logit_block_max);
  visit(m.attn_exp);
  visit(m.row_stats);
  visit(m.group_sums);
  visit(m.column_means);
  visit(m.exact_probs);
  visit(m.exact_column_means);
  ChainScratch& c = ws->chain;
  visit(c.logits);
  visit(c.ids);
  visit(c.heap);
  visit(c.recent_counts);
  visit(c.block_max);
  visit(c.block_keys);
  visit(ws->candidates.tokens);
  visit(ws->top_ids);
}

template <class Buffer>
size_t CapacityBytes(const Buffer& buffer) {
  return buffer.capacity() * sizeof(typename Buffer::value_type);
}

}  // namespace

void TrimWorkspace(Workspace* ws, size_t keep_bytes) {
  // The bound is on the sum: steps shaped to fill many buffers each just under it (one long attention row,
  // many short ones, a large vocabulary with penalties) would otherwise keep ~190 MiB per workspace.
  absl::InlinedVector<size_t, 24> sizes;
  size_t total = 0;
  ForEachBuffer(ws, [&](auto& buffer) {
    sizes.push_back(CapacityBytes(buffer));
    total += sizes.back();
  });
  if (total <= keep_bytes) return;
  std::sort(sizes.begin(), sizes.end(), std::greater<size_t>());
  size_t free_from = 0;  // buffers of at least this many bytes go, largest first
  for (const size_t bytes : sizes) {
    if (total <= keep_bytes) break;
    total -= bytes;
    free_from = bytes;
  }
  ForEachBuffer(ws, [free_from](auto& buffer) {
    using Buffer = std::remove_reference_t<decltype(buffer)>;
    if (CapacityBytes(buffer) >= free_from) Buffer().swap(buffer);
  });
}

absl::Status RunStep(const ProfileRegistry& profiles, const TensorLimits& limits, const StepInput& in, Workspace* ws,
                     StepOutput* out, ForkJoin* fork_join) {
  if (in.sequence_id.size() > kMaxSequenceIdBytes) {
    return InvalidFieldError(
        "sequence_id", absl::StrCat("must be at most ", kMaxSequenceIdBytes, " bytes, got ", in.sequence_id.size()));
  }
  const Profile* profile = profiles.Find(in.profile);
  if (profile == nullptr) {
    return FieldError(absl::StatusCode::kNotFound, "profile",
                      absl::StrCat("no profile named \"", Excerpt(in.profile), "\" (ListProfiles shows them)"));
  }
  if (in.top_logprobs < 0 || in.top_logprobs > kMaxTopLogprobs) {
    return InvalidFieldError("top_logprobs",
                             absl::StrCat("must be in [0, ", kMaxTopLogprobs, "], got ", in.top_logprobs));
  }
  if (in.overrides != nullptr) {
    if (absl::Status s = ValidateSamplingParams(*in.overrides, "params"); !s.ok()) return s;
  }

  absl::StatusOr<FloatView> logits =
      ValidateTensor(in.logits, TensorRole::kLogits, limits, "logits", &ws->logits_buffer, /*defer_bf16=*/true);
  if (!logits.ok()) return logits.status();
  const int64_t vocab = logits->cols;
  for (size_t i = 0; i < in.recent_tokens.size(); ++i) {
    const int32_t t = in.recent_tokens[i];
    if (t < 0 || t >= vocab) {
      return InvalidFieldError(absl::StrCat("recent_tokens[", i, "]"),
                               absl::StrCat("token id must be in [0, ", vocab, "), got ", t));
    }
  }
  std::optional<FloatView> attention;
  if (in.attention.has_value()) {
    absl::StatusOr<FloatView> a =
        ValidateTensor(*in.attention, TensorRole::kAttention, limits, "attention", &ws->attention_buffer,
                       /*defer_bf16=*/true);
    if (!a.ok()) return a.status();
    attention = *a;
  }

  SerialForkJoin serial;
  LogitsSummary summary;
  if (absl::Status s =
          ComputeStepMetrics(*logits, attention.has_value() ? &*attention : nullptr, &ws->metrics,
                             fork_join != nullptr ? fork_join : &serial, &summary, &out->metrics.attention);
      !s.ok()) {
    return s;
  }
  out->metrics.logits_entropy = summary.entropy;
  out->metrics.logits_varentropy = summary.varentropy;
  if (absl::Status s = CheckMetricsFinite(out->metrics); !s.ok()) return s;

  SamplingConfig base = profile->base();
  if (in.overrides != nullptr) ApplyOverrides(*in.overrides, &base);
  const Decision decision = Decide(*profile, base, out->metrics, in.recent_tokens, vocab);

  const float* z = logits->data;
  absl::StatusOr<const float*> adjusted = ApplyLogitAdjustments(z, vocab, base, in.recent_tokens, &ws->chain);
  if (!adjusted.ok()) {
    // A bias the request did not send is its profile's: say so, or the client looks for it in its own step.
    if (ErrorField(adjusted.status()) == "params.logit_bias" &&
        (in.overrides == nullptr || in.overrides->logit_bias().empty())) {
      return WithNote(adjusted.status(),
                      absl::StrCat(" (the logit_bias of profile \"", profile->name(), "\"; the request sent none)"));
    }
    return adjusted.status();
  }
  // The block maxima of whichever logits the chain reads: the metrics pass's, or the penalised copy's.
  const float* block_max = *adjusted == z ? ws->metrics.logit_block_max.data() : ws->chain.block_max.data();

  const StreamKey key{in.seed, in.sequence_id};
  out->profile = profile;
  out->regime = decision.regime;
  out->applied = decision.params;
  out->drew = decision.action != Action::kEmitToken;
  switch (decision.action) {
    case Action::kEmitToken:
      out->token = decision.emit_token;
      break;
    case Action::kGreedy:
      out->token = GreedyToken(*adjusted, vocab, block_max);
      break;
    case Action::kSample:
    case Action::kBestOfN: {
      if (absl::Status s = BuildCandidates(*adjusted, vocab, decision.params, &ws->chain, &ws->candidates, block_max);
          !s.ok()) {
        return s;
      }
      const int n = decision.action == Action::kBestOfN ? decision.params.n_adaptive_samples : 1;
      int32_t best = Draw(ws->candidates, UniformDouble(key, in.step, 0));
      // Best of n: highest log-probability under the unmodified logits, i.e. the largest raw logit; the first
      // drawn wins ties.
      for (int draw = 1; draw < n; ++draw) {
        const int32_t candidate = Draw(ws->candidates, UniformDouble(key, in.step, static_cast<uint32_t>(draw)));
        if (z[candidate] > z[best]) best = candidate;
      }
      out->token = best;
      break;
    }
  }
  out->logprob = static_cast<float>(summary.LogProb(z[out->token]));

  out->top.clear();
  if (in.top_logprobs > 0) {
    TopTokens(z, vocab, in.top_logprobs, &ws->chain, &ws->top_ids, ws->metrics.logit_block_max.data());
    // Only tokens with a finite log-probability (the contract): a masked one (-inf) is not a candidate, so top
    // has fewer than top_logprobs entries when fewer tokens are finite. Any other non-finite value is z changing
    // under the step, which the check below reports.
    for (int32_t id : ws->top_ids) {
      const float logprob = static_cast<float>(summary.LogProb(z[id]));
      if (logprob != -std::numeric_limits<float>::infinity()) out->top.emplace_back(id, logprob);
    }
  }
  return CheckLogprobsReadOneState(*out, in.top_logprobs);
}

}  // namespace samplerd
