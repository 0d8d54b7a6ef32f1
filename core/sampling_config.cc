#include "core/sampling_config.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "core/field_error.h"

namespace samplerd {
namespace {

std::string Field(absl::string_view prefix, absl::string_view name) {
  return prefix.empty() ? std::string(name) : absl::StrCat(prefix, ".", name);
}

}  // namespace

absl::Status ValidateSamplingParams(const v1::SamplingParams& p, absl::string_view prefix) {
  if (p.has_temperature() && !(std::isfinite(p.temperature()) && p.temperature() >= 0.0f)) {
    return InvalidFieldError(Field(prefix, "temperature"),
                             absl::StrCat("must be finite and >= 0 (0 = greedy), got ", p.temperature()));
  }
  if (p.has_top_k() && p.top_k() < 0) {
    return InvalidFieldError(Field(prefix, "top_k"), absl::StrCat("must be >= 0 (0 = off), got ", p.top_k()));
  }
  if (p.has_top_p() && !(p.top_p() > 0.0f && p.top_p() <= 1.0f)) {
    return InvalidFieldError(Field(prefix, "top_p"), absl::StrCat("must be in (0, 1], got ", p.top_p()));
  }
  if (p.has_min_p() && !(p.min_p() >= 0.0f && p.min_p() <= 1.0f)) {
    return InvalidFieldError(Field(prefix, "min_p"), absl::StrCat("must be in [0, 1], got ", p.min_p()));
  }
  if (p.has_repetition_penalty() && !(std::isfinite(p.repetition_penalty()) && p.repetition_penalty() > 0.0f)) {
    return InvalidFieldError(Field(prefix, "repetition_penalty"),
                             absl::StrCat("must be finite and > 0 (1 = off), got ", p.repetition_penalty()));
  }
  if (p.has_frequency_penalty() && !std::isfinite(p.frequency_penalty())) {
    return InvalidFieldError(Field(prefix, "frequency_penalty"),
                             absl::StrCat("must be finite, got ", p.frequency_penalty()));
  }
  if (p.has_presence_penalty() && !std::isfinite(p.presence_penalty())) {
    return InvalidFieldError(Field(prefix, "presence_penalty"),
                             absl::StrCat("must be finite, got ", p.presence_penalty()));
  }
  // A protobuf map iterates in a different order in each copy of a request: the error names the lowest bad
  // token id, so every replica answers alike (the fuzzers' replay compares messages).
  const google::protobuf::Map<int32_t, float>::value_type* bad = nullptr;
  for (const auto& entry : p.logit_bias()) {
    const bool invalid = entry.first < 0 || std::isnan(entry.second) || entry.second == INFINITY;
    if (invalid && (bad == nullptr || entry.first < bad->first)) bad = &entry;
  }
  if (bad != nullptr) {
    const auto& [token, bias] = *bad;
    if (token < 0) {
      return InvalidFieldError(Field(prefix, "logit_bias"), absl::StrCat("token ids must be >= 0, got ", token));
    }
    return InvalidFieldError(Field(prefix, "logit_bias"),
                             absl::StrCat("values must be finite or -inf, got ", bias, " for token ", token));
  }
  if (p.has_n_adaptive_samples() && (p.n_adaptive_samples() < 1 || p.n_adaptive_samples() > kMaxAdaptiveSamples)) {
    return InvalidFieldError(Field(prefix, "n_adaptive_samples"),
                             absl::StrCat("must be in [1, ", kMaxAdaptiveSamples, "], got ", p.n_adaptive_samples()));
  }
  if (p.has_clarifying_token() && p.clarifying_token() < -1) {
    return InvalidFieldError(Field(prefix, "clarifying_token"),
                             absl::StrCat("must be a token id or -1 (never emit), got ", p.clarifying_token()));
  }
  return absl::OkStatus();
}

void ApplyOverrides(const v1::SamplingParams& p, SamplingConfig* c) {
  if (p.has_temperature()) c->temperature = p.temperature();
  if (p.has_top_k()) c->top_k = p.top_k();
  if (p.has_top_p()) c->top_p = p.top_p();
  if (p.has_min_p()) c->min_p = p.min_p();
  if (p.has_repetition_penalty()) c->repetition_penalty = p.repetition_penalty();
  if (p.has_frequency_penalty()) c->frequency_penalty = p.frequency_penalty();
  if (p.has_presence_penalty()) c->presence_penalty = p.presence_penalty();
  if (!p.logit_bias().empty()) c->logit_bias = &p.logit_bias();
  if (p.has_n_adaptive_samples()) c->n_adaptive_samples = p.n_adaptive_samples();
  if (p.has_clarifying_token()) c->clarifying_token = p.clarifying_token();
}

void ToProto(const SamplingConfig& c, v1::SamplingParams* out) {
  out->set_temperature(c.temperature);
  out->set_top_k(c.top_k);
  out->set_top_p(c.top_p);
  out->set_min_p(c.min_p);
  out->set_repetition_penalty(c.repetition_penalty);
  out->set_frequency_penalty(c.frequency_penalty);
  out->set_presence_penalty(c.presence_penalty);
  out->set_n_adaptive_samples(c.n_adaptive_samples);
  out->set_clarifying_token(c.clarifying_token);
}

}  // namespace samplerd
