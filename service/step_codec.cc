#include "service/step_codec.h"

#include <algorithm>
#include <limits>
#include <string>

#include "core/field_error.h"
#include "core/sampling_config.h"

namespace samplerd {
namespace {

constexpr size_t kMaxErrorMessageBytes = 1024;

// A view of the wire tensor for core; core's ValidateTensor checks and converts it.
RawTensor RawTensorOf(const v1::Tensor& tensor) {
  RawTensor raw;
  raw.dtype = static_cast<int>(tensor.dtype());
  raw.shape = absl::Span<const int64_t>(tensor.shape().data(), static_cast<size_t>(tensor.shape_size()));
  raw.data = tensor.data();
  return raw;
}

uint32_t SaturatingMicros(std::chrono::steady_clock::duration d) {
  const int64_t micros = std::chrono::duration_cast<std::chrono::microseconds>(d).count();
  return static_cast<uint32_t>(std::clamp<int64_t>(micros, 0, std::numeric_limits<uint32_t>::max()));
}

}  // namespace

StepInput DecodeStep(const v1::Step& step, uint64_t seed) {
  StepInput in;
  in.sequence_id = step.sequence_id();
  in.step = step.step();
  in.seed = seed;
  in.logits = RawTensorOf(step.logits());
  if (step.has_attention()) in.attention = RawTensorOf(step.attention());
  in.recent_tokens =
      absl::Span<const int32_t>(step.recent_tokens().data(), static_cast<size_t>(step.recent_tokens_size()));
  if (step.has_params()) in.overrides = &step.params();
  in.profile = step.profile();
  in.top_logprobs = step.top_logprobs();
  return in;
}

void EncodeStepResult(const v1::Step& step, const StepOutput& out, uint64_t seed,
                      std::chrono::steady_clock::duration core_time, v1::StepResult* result) {
  result->set_sequence_id(step.sequence_id());
  result->set_step(step.step());
  result->set_token(out.token);
  result->set_logprob(out.logprob);
  result->set_regime(out.regime);
  if (out.drew) ToProto(out.applied, result->mutable_applied());

  v1::Metrics* metrics = result->mutable_metrics();
  metrics->set_logits_entropy(static_cast<float>(out.metrics.logits_entropy));
  metrics->set_logits_varentropy(static_cast<float>(out.metrics.logits_varentropy));
  if (out.metrics.attention.has_value()) {
    const AttentionMetrics& a = *out.metrics.attention;
    metrics->set_attn_entropy(static_cast<float>(a.entropy));
    metrics->set_attn_varentropy(static_cast<float>(a.varentropy));
    metrics->set_agreement(static_cast<float>(a.agreement));
    metrics->set_interaction_strength(static_cast<float>(a.interaction_strength));
  }

  result->mutable_top()->Reserve(static_cast<int>(out.top.size()));
  for (const auto& [token, logprob] : out.top) {
    v1::TokenLogprob* t = result->add_top();
    t->set_token(token);
    t->set_logprob(logprob);
  }
  result->set_server_micros(SaturatingMicros(core_time));
  result->set_seed(seed);
  if (out.profile != nullptr) result->set_profile(out.profile->name());
}

void EncodeStepError(const v1::Step& step, const absl::Status& status, v1::StepResult* result) {
  result->set_sequence_id(step.sequence_id());
  result->set_step(step.step());
  v1::Error* error = result->mutable_error();
  error->set_code(static_cast<int32_t>(status.code()));
  error->set_field(ErrorField(status));
  // Core quotes received values only in short excerpts; this cap keeps any message, whatever it quotes, from
  // growing the response (one such step could otherwise push the whole response over the message limit).
  error->set_message(Excerpt(status.message(), kMaxErrorMessageBytes));
}

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

}  // namespace samplerd
