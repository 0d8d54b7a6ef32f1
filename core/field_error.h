// Field-carrying errors for core.
//
// Every rejection of a step names the request field at fault (for example "logits.shape" or "params.top_p")
// so that the service can fill `StepResult.error.field` without parsing messages. The field travels as a
// payload of the absl::Status; the message already says what was expected and what was received.
//
//   return InvalidFieldError("params.top_p", absl::StrCat("must be in (0, 1], got ", p));
//   ...
//   std::string field = ErrorField(status);   // "params.top_p"
#ifndef SAMPLERD_CORE_FIELD_ERROR_H_
#define SAMPLERD_CORE_FIELD_ERROR_H_

#include <cstddef>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace samplerd {

// A status with `code` whose message is "<field>: <message>" and whose payload names `field`.
absl::Status FieldError(absl::StatusCode code, absl::string_view field, absl::string_view message);

// The input is malformed or out of range: INVALID_ARGUMENT.
absl::Status InvalidFieldError(absl::string_view field, absl::string_view message);

// The input is well formed but over a configured size limit: RESOURCE_EXHAUSTED.
absl::Status LimitFieldError(absl::string_view field, absl::string_view message);

// `field` changed while the step read it (INVALID_ARGUMENT): only a tensor in shared memory, rewritten by its
// client before the step's answer, can. Found where a result cannot hold for any one state of the tensor.
absl::Status ChangedDuringStepError(absl::string_view field);

// `status` with `note` after its message, the same code and field.
absl::Status WithNote(const absl::Status& status, absl::string_view note);

// The field named by a status made above; empty when the status carries none.
std::string ErrorField(const absl::Status& status);

// What an error message quotes of a received string: at most this many of its bytes, so that an error never
// grows with the input it describes.
inline constexpr size_t kMaxQuotedBytes = 256;

// `text` when it is at most `max_bytes` long; otherwise its first bytes (Utf8Prefix) followed by
// "... (<size> bytes)".
std::string Excerpt(absl::string_view text, size_t max_bytes = kMaxQuotedBytes);

// The longest prefix of `text` of at most `max_bytes` that ends at a UTF-8 character boundary, so that a cut of
// valid UTF-8 stays valid (a proto3 string that is not fails the whole message's parse).
absl::string_view Utf8Prefix(absl::string_view text, size_t max_bytes);

}  // namespace samplerd

#endif  // SAMPLERD_CORE_FIELD_ERROR_H_
