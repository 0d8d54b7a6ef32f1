#include "core/tensor_view.h"

#include <cmath>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/field_error.h"
#include "core/reduce_kernels.h"

namespace samplerd {
namespace {

// The shape as error messages quote it: a rank far beyond any tensor's shows its first dimensions and its rank,
// so that an error about a huge shape stays short.
std::string ShapeString(absl::Span<const int64_t> shape) {
  constexpr size_t kQuotedDims = 8;
  if (shape.size() <= kQuotedDims) return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
  return absl::StrCat("[", absl::StrJoin(shape.subspan(0, kQuotedDims), ", "), ", ... (", shape.size(),
                      " dimensions)]");
}

uint32_t BitsOf(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
}

float FloatOf(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

}  // namespace

size_t ItemSize(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return 4;
    case DType::kF16:
    case DType::kBF16:
      return 2;
    default:
      return 0;
  }
}

float BFloat16ToFloat(uint16_t b) { return FloatOf(static_cast<uint32_t>(b) << 16); }

float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu;
  uint32_t mantissa = h & 0x3ffu;
  if (exponent == 0x1f) return FloatOf(sign | 0x7f800000u | (mantissa << 13));  // inf / NaN
  if (exponent != 0) return FloatOf(sign | ((exponent + 112) << 23) | (mantissa << 13));
  if (mantissa == 0) return FloatOf(sign);  // +-0
  // Subnormal half: value = mantissa * 2^-24, exact in float32 (a product by a power of two; std::ldexp gives the
  // same value several times slower).
  const float magnitude = static_cast<float>(mantissa) * 0x1p-24f;
  return sign ? -magnitude : magnitude;
}

uint16_t FloatToBFloat16(float f) {
  uint32_t u = BitsOf(f);
  if (std::isnan(f)) return static_cast<uint16_t>((u >> 16) | 0x40u);  // keep it a (quiet) NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

uint16_t FloatToHalf(float f) {
  const uint32_t u = BitsOf(f);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t abs = u & 0x7fffffffu;
  if (abs >= 0x7f800000u) return sign | 0x7c00u | (abs > 0x7f800000u ? 0x200u : 0u);
  if (abs >= 0x477ff000u) return sign | 0x7c00u;  // rounds to >= 65520: overflow to inf
  if (abs < 0x38800000u) {                        // below the smallest normal half: subnormal or zero
    const float magnitude = FloatOf(abs);
    // Scale so that one unit is 2^-24 and round to nearest even.
    return sign | static_cast<uint16_t>(std::nearbyint(std::ldexp(magnitude, 24)));
  }
  uint32_t rounded = abs + 0xfffu + ((abs >> 13) & 1u);
  return sign | static_cast<uint16_t>((rounded - (112u << 23)) >> 13);
}

absl::StatusOr<FloatView> ValidateTensor(const RawTensor& raw, TensorRole role, const TensorLimits& limits,
                                         absl::string_view field, std::vector<float>* scratch, bool defer_bf16) {
  if (raw.dtype == 0 && raw.shape.empty() && raw.data.empty()) {
    return InvalidFieldError(field,
                             "is missing: no dtype, shape or data (a step sends its logits inline or as a "
                             "shared-memory reference)");
  }
  const DType dtype = static_cast<DType>(raw.dtype);
  const size_t item = ItemSize(dtype);
  if (item == 0) {
    return InvalidFieldError(absl::StrCat(field, ".dtype"),
                             absl::StrCat("must be DTYPE_F32, DTYPE_F16 or DTYPE_BF16, got ", raw.dtype));
  }
  const size_t rank = raw.shape.size();
  if (role == TensorRole::kLogits && rank != 1) {
    return InvalidFieldError(absl::StrCat(field, ".shape"),
                             absl::StrCat("must be [vocab] (rank 1), got ", ShapeString(raw.shape)));
  }
  if (role == TensorRole::kAttention && rank != 2 && rank != 3) {
    return InvalidFieldError(
        absl::StrCat(field, ".shape"),
        absl::StrCat("must be [heads, kv_len] or [layers, heads, kv_len], got ", ShapeString(raw.shape)));
  }
  const int64_t limit = role == TensorRole::kLogits ? limits.max_vocab : limits.max_attention_elements;
  int64_t elements = 1;
  for (int64_t d : raw.shape) {
    if (d < 1) {
      return InvalidFieldError(absl::StrCat(field, ".shape"),
                               absl::StrCat("every dimension must be >= 1, got ", ShapeString(raw.shape)));
    }
    // Checked before multiplying so that a crafted shape cannot overflow int64 and pass as small.
    if (elements > std::numeric_limits<int64_t>::max() / d) {
      return InvalidFieldError(absl::StrCat(field, ".shape"),
                               absl::StrCat("element count overflows int64: ", ShapeString(raw.shape)));
    }
    elements *= d;
  }
  // docs/contract.md section 6's "oversize vocab": more tokens than int32 ids can name is malformed whatever the server
  // allows (--max_vocab is at most that); a vocab over --max_vocab is a limit (RESOURCE_EXHAUSTED, below).
  if (role == TensorRole::kLogits && elements > std::numeric_limits<int32_t>::max()) {
    return InvalidFieldError(absl::StrCat(field, ".shape"),
                             absl::StrCat("vocab must be at most ", std::numeric_limits<int32_t>::max(),
                                          " (token ids are int32), got ", elements));
  }
  if (elements > limit) {
    return LimitFieldError(absl::StrCat(field, ".shape"), absl::StrCat(ShapeString(raw.shape), " has ", elements,
                                                                       " elements, over the server limit of ", limit));
  }
  if (role == TensorRole::kAttention && elements / raw.shape.back() > limits.max_attention_rows) {
    return LimitFieldError(
        absl::StrCat(field, ".shape"),
        absl::StrCat(ShapeString(raw.shape), " has ", elements / raw.shape.back(),
                     " rows (layers x heads), over the server limit of ", limits.max_attention_rows));
  }
  if (static_cast<uint64_t>(raw.data.size()) != static_cast<uint64_t>(elements) * item) {
    return InvalidFieldError(absl::StrCat(field, ".data"),
                             absl::StrCat("length must be prod(shape) * itemsize = ", elements, " * ", item, " = ",
                                          elements * static_cast<int64_t>(item), " bytes, got ", raw.data.size()));
  }

  FloatView view;
  view.cols = raw.shape.back();
  view.rows = elements / view.cols;
  const char* bytes = raw.data.data();
  if (dtype == DType::kF32 && reinterpret_cast<uintptr_t>(bytes) % alignof(float) == 0) {
    view.data = reinterpret_cast<const float*>(bytes);
    return view;
  }
  scratch->resize(static_cast<size_t>(elements));
  float* out = scratch->data();
  if (dtype == DType::kF32) {
    std::memcpy(out, bytes, static_cast<size_t>(elements) * sizeof(float));
  } else if (dtype == DType::kBF16 && defer_bf16) {
    view.deferred_bf16 = bytes;
    view.fill = out;
  } else if (dtype == DType::kBF16) {
    kernels::ConvertBf16(bytes, elements, out);
  } else {
    for (int64_t i = 0; i < elements; ++i) {
      uint16_t h;
      std::memcpy(&h, bytes + 2 * i, sizeof(h));
      out[i] = HalfToFloat(h);
    }
  }
  view.data = out;
  return view;
}

}  // namespace samplerd
