// Float32 views over received tensor bytes.
//
// A step's logits and attention arrive as (dtype, shape, bytes). `ValidateTensor` checks the shape and the byte
// length before anything touches the data, then returns a view: directly over the bytes for float32 (no copy),
// or over a caller-owned scratch buffer that f16 / bf16 are converted into once (reused step after step, so
// steady state allocates nothing).
//
//   std::vector<float> scratch;
//   absl::StatusOr<FloatView> v = ValidateTensor(raw, TensorRole::kLogits, limits, "logits", &scratch);
//   const float* z = v->data;   // v->size() floats
#ifndef SAMPLERD_CORE_TENSOR_VIEW_H_
#define SAMPLERD_CORE_TENSOR_VIEW_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace samplerd {

// Wire values of samplerd.v1.DType. Core uses the enums of profile.proto (Regime, Metric, Op) as generated, since
// it links that proto; DType is declared in sampler.proto, which carries the gRPC service that core must not
// depend on, so core mirrors its values here (tests/core/tensor_view_test.cc pins them by the dtypes it decodes).
enum class DType : int { kUnspecified = 0, kF32 = 1, kF16 = 2, kBF16 = 3 };

// Bytes per element; 0 for an unknown dtype.
size_t ItemSize(DType dtype);

// A tensor as received: nothing is checked yet.
struct RawTensor {
  int dtype = 0;  // a samplerd.v1.DType value, possibly out of range
  absl::Span<const int64_t> shape;
  absl::string_view data;
};

// Size limits applied while decoding (docs/contract.md section 6).
struct TensorLimits {
  int64_t max_vocab = 1 << 20;                // logits elements
  int64_t max_attention_elements = 64 << 20;  // layers * heads * kv_len
  // layers * heads: each row has its own scratch (statistics, and for short rows double probabilities), so a
  // tensor of many one-element rows would cost far more than its element count says.
  int64_t max_attention_rows = 64 << 10;
};

// Which tensor of a step is decoded: decides the allowed ranks and limit.
enum class TensorRole { kLogits, kAttention };

// A read-only float32 view of a validated tensor. Attention is always seen as [rows, kv_len] with
// rows = layers * heads.
struct FloatView {
  const float* data = nullptr;
  int64_t rows = 1;  // 1 for logits
  int64_t cols = 0;  // vocab for logits, kv_len for attention
  // Set when ValidateTensor deferred a bf16 conversion: `data` is then `fill`, the caller's scratch, not yet
  // written; the metrics' first pass converts `deferred_bf16` into it (SummarizeLogits,
  // ComputeAttentionMetrics taking a FloatView), so the received bytes are read once. Read `data` only after.
  const char* deferred_bf16 = nullptr;
  float* fill = nullptr;
  int64_t size() const { return rows * cols; }
  // Row r's kv_len floats (the logits are row 0).
  const float* row(int64_t r) const { return data + r * cols; }
};

// Validates `raw` for `role` (dtype known, rank 1 for logits and 2 or 3 for attention, every dimension >= 1,
// no overflow of the element count, within `limits`, byte length equal to elements * itemsize) and returns a
// float32 view. f16 / bf16 (and float32 bytes that are not 4-byte aligned) are converted into `*scratch`.
// Errors name `field` ("logits" or "attention") and the received value; over-limit sizes are
// RESOURCE_EXHAUSTED, everything else INVALID_ARGUMENT. Values (NaN, inf) are checked by the metrics.
// With `defer_bf16`, bf16 is not converted here: the view carries the bytes for the metrics' first pass.
absl::StatusOr<FloatView> ValidateTensor(const RawTensor& raw, TensorRole role, const TensorLimits& limits,
                                         absl::string_view field, std::vector<float>* scratch, bool defer_bf16 = false);

// Exact conversions to float32 (every f16 and bf16 value is representable).
float HalfToFloat(uint16_t h);
float BFloat16ToFloat(uint16_t b);

// Round-to-nearest-even conversions from float32, used by clients and tests that build bf16/f16 payloads.
uint16_t FloatToBFloat16(float f);
uint16_t FloatToHalf(float f);

}  // namespace samplerd

#endif  // SAMPLERD_CORE_TENSOR_VIEW_H_
