#include "service/step_codec.h"

#include <algorithm>
#include <limits>
#include <string>

#include "absl/strings/str_cat.h"
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

size_t ItemSize(v1::DType dtype) {
  switch (dtype) {
    case v1::DTYPE_F32:
      return 4;
    case v1::DTYPE_F16:
    case v1::DTYPE_BF16:
      return 2;
    default:
      return 0;
  }
}

// `ref` as the RawTensor core decodes, its bytes a view of the region held in `*held`. `field` is the ref's
// name ("logits_ref").
absl::Status ResolveRef(const v1::TensorRef& ref, const ShmRegistry* shm, absl::string_view session,
                        absl::string_view field, RawTensor* raw, std::shared_ptr<const ShmRegion>* held) {
  if (shm == nullptr) {
    return InvalidFieldError(absl::StrCat(field, ".region"),
                             "this server has no shared-memory plane (start it with --shm_socket); send the "
                             "tensor's bytes instead");
  }
  if (session.empty()) {
    return InvalidFieldError(absl::StrCat(field, ".region"),
                             "the call carries no samplerd-shm-session metadata (the session the control socket "
                             "returned with the region)");
  }
  absl::StatusOr<std::shared_ptr<const ShmRegion>> region = shm->Find(session, ref.region());
  if (!region.ok()) return InvalidFieldError(absl::StrCat(field, ".region"), region.status().message());
  raw->dtype = static_cast<int>(ref.dtype());
  raw->shape = absl::Span<const int64_t>(ref.shape().data(), static_cast<size_t>(ref.shape_size()));
  raw->data = absl::string_view();
  const size_t item = ItemSize(ref.dtype());
  // An unknown dtype or a dimension < 1 is left to core, which names it as it does for inline bytes (it checks
  // them before the length); the empty view then never reaches the length check.
  if (item == 0) return absl::OkStatus();
  uint64_t elements = 1;
  for (const int64_t d : ref.shape()) {
    if (d < 1) return absl::OkStatus();
    if (elements > std::numeric_limits<uint64_t>::max() / static_cast<uint64_t>(d) / item) {
      return InvalidFieldError(absl::StrCat(field, ".shape"),
                               absl::StrCat("the byte length overflows: ", ref.shape_size(),
                                            " dimensions whose "
                                            "product times the item size exceeds 2^64"));
    }
    elements *= static_cast<uint64_t>(d);
  }
  const uint64_t bytes = elements * item;
  if (ref.offset() % item != 0) {
    return InvalidFieldError(absl::StrCat(field, ".offset"),
                             absl::StrCat("must be a multiple of the item size ", item, " of ",
                                          v1::DType_Name(ref.dtype()), ", got ", ref.offset()));
  }
  const uint64_t size = (*region)->size();
  if (ref.offset() > size || bytes > size - ref.offset()) {
    return InvalidFieldError(absl::StrCat(field, ".offset"),
                             absl::StrCat("offset ", ref.offset(), " + length ", bytes,
                                          " bytes is past the end of the region (", size, " bytes)"));
  }
  raw->data = absl::string_view((*region)->data() + ref.offset(), static_cast<size_t>(bytes));
  *held = *std::move(region);
  return absl::OkStatus();
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

uint64_t ReferencedBytes(const v1::Step& step, const ShmRegistry* shm, absl::string_view session) {
  uint64_t bytes = 0;
  const auto add = [&](const v1::TensorRef& ref, absl::string_view field) {
    RawTensor raw;
    std::shared_ptr<const ShmRegion> held;
    if (ResolveRef(ref, shm, session, field, &raw, &held).ok()) bytes += raw.data.size();
  };
  if (step.has_logits_ref()) add(step.logits_ref(), "logits_ref");
  if (step.has_attention_ref()) add(step.attention_ref(), "attention_ref");
  return bytes;
}

absl::Status ResolveTensorRefs(const v1::Step& step, const ShmRegistry* shm, absl::string_view session, StepInput* in,
                               ShmHold* hold) {
  // Checked here, just before core reads, and not in ReferencedBytes: the client may write the tensor between
  // the request's admission and its step.
  const auto resolve = [&](const v1::TensorRef& ref, absl::string_view field, RawTensor* raw,
                           std::shared_ptr<const ShmRegion>* held) {
    if (absl::Status s = ResolveRef(ref, shm, session, field, raw, held); !s.ok()) return s;
    if (raw->data.empty() || (*held)->Written(ref.offset(), raw->data.size())) return absl::OkStatus();
    return InvalidFieldError(
        field, absl::StrCat("bytes ", ref.offset(), " to ", ref.offset() + raw->data.size(),
                            " of the region include pages never written (holes of the memfd); the tensor must be "
                            "written before it is referenced (reading a hole would allocate memory in the server)"));
  };
  if (step.has_logits_ref()) {
    if (step.has_logits()) return InvalidFieldError("logits_ref", "set either logits or logits_ref, not both");
    if (absl::Status s = resolve(step.logits_ref(), "logits_ref", &in->logits, &hold->logits); !s.ok()) return s;
  }
  if (step.has_attention_ref()) {
    if (step.has_attention()) {
      return InvalidFieldError("attention_ref", "set either attention or attention_ref, not both");
    }
    RawTensor attention;
    if (absl::Status s = resolve(step.attention_ref(), "attention_ref", &attention, &hold->attention); !s.ok()) {
      return s;
    }
    in->attention = attention;
  }
  return absl::OkStatus();
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
  // A longer id is itself the error: echoing all of it would let one step fill the answer (and the memory that
  // holds it) with as many bytes as the request carried.
  const absl::string_view id = Utf8Prefix(step.sequence_id(), kMaxSequenceIdBytes);
  result->set_sequence_id(id.data(), id.size());
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
