// Translation between the wire messages and core's step types, and the one place where core's absl::Status
// becomes a wire error.
//
// Decoding makes no copy: the StepInput's tensors, recent tokens and overrides borrow from the v1::Step, so the
// request must outlive the core call. Nothing is validated here; core validates while it decodes the tensors,
// and its errors name the field (core/field_error.h).
//
//   StepInput in = DecodeStep(step, seed);
//   ShmHold hold;                                // keeps referenced shared-memory regions mapped
//   absl::Status s = ResolveTensorRefs(step, shm_registry, shm_session, &in, &hold);
//   if (s.ok()) s = RunStep(*registry, limits, in, &workspace, &out);
//   if (s.ok()) {
//     EncodeStepResult(step, out, seed, elapsed, result);
//   } else {
//     EncodeStepError(step, s, result);          // per-step: StepResult.error
//   }
//   ...
//   return ToGrpcStatus(stream_level_status);    // per-call: the grpc::Status that ends the call
#ifndef SAMPLERD_SERVICE_STEP_CODEC_H_
#define SAMPLERD_SERVICE_STEP_CODEC_H_

#include <chrono>
#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "core/step_engine.h"
#include "grpcpp/support/status.h"
#include "samplerd/v1/sampler.pb.h"
#include "service/shm_registry.h"

namespace samplerd {

// DecodeStep()
//
// The core view of `step` with `seed` as its seed (the caller resolves a wire seed of 0 first). `attention`
// is set only when the step has one and `overrides` only when it has `params`: an empty SamplingParams
// message and an absent one mean the same, but core skips validation for a null pointer.
StepInput DecodeStep(const v1::Step& step, uint64_t seed);

// The shared-memory regions a step's tensors point into, kept mapped until the step is answered.
struct ShmHold {
  std::shared_ptr<const ShmRegion> logits;
  std::shared_ptr<const ShmRegion> attention;
};

// ReferencedBytes()
//
// The bytes of `step`'s TensorRefs that ResolveTensorRefs would resolve, so that the limits on what a request
// carries can count referenced tensors as if they were inline. A ref it would refuse counts 0: its step is
// answered with that error on its own, and must not make the others' request too large. A ref over pages not
// yet written counts in full: whether they are is looked at only when the step runs.
uint64_t ReferencedBytes(const v1::Step& step, const ShmRegistry* shm, absl::string_view session);

// ResolveTensorRefs()
//
// Points `in`'s tensors at the region bytes of `step.logits_ref` / `step.attention_ref` (when set), looked up in
// `shm` for the call's `session` (its samplerd-shm-session metadata; `shm` is null when the server has no
// --shm_socket), and holds the regions in `hold`. The reference's own checks fail with INVALID_ARGUMENT naming
// the field: both the tensor and its ref set ("logits_ref"), no plane or no such region of this session
// ("logits_ref.region"), an element count or byte length that overflows ("logits_ref.shape"), an offset that is
// not a multiple of the item size or bytes past the region's end ("logits_ref.offset"), bytes over pages of the
// memfd never written ("logits_ref": ShmRegion::Written, looked at now, just before core reads). Everything else about
// the tensor (dtype, rank, dimensions >= 1, size limits) is core's check, as for inline bytes, under the
// tensor's own name ("logits.shape"): a ref only says where the bytes are.
absl::Status ResolveTensorRefs(const v1::Step& step, const ShmRegistry* shm, absl::string_view session, StepInput* in,
                               ShmHold* hold);

// EncodeStepResult()
//
// Fills `result` from a successful core call: the echo of `step`'s id and index, the token, its logprob, the
// regime, the applied parameters (left unset when `out.drew` is false: CLARIFY emitted its token without a
// draw, so no parameters were applied), the metrics (the attention ones only when core computed them), the top
// tokens, the seed used, the deciding profile and `core_time` as server_micros (saturating at 2^32 - 1).
void EncodeStepResult(const v1::Step& step, const StepOutput& out, uint64_t seed,
                      std::chrono::steady_clock::duration core_time, v1::StepResult* result);

// EncodeStepError()
//
// Fills `result` for a rejected step: the echo of `step`'s id and index and `error` = {code: the google.rpc.Code
// of `status` (absl and google.rpc share the numbering), field: ErrorField(status), message: the status
// message (which already names the field, what was expected and what was received)}. `status` must not be OK.
void EncodeStepError(const v1::Step& step, const absl::Status& status, v1::StepResult* result);

// ToGrpcStatus()
//
// The grpc::Status that ends a call for a stream-level problem (a request over max_steps_per_request, too many
// streams): same code, same message.
grpc::Status ToGrpcStatus(const absl::Status& status);

}  // namespace samplerd

#endif  // SAMPLERD_SERVICE_STEP_CODEC_H_
