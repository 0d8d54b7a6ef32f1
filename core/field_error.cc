#include "core/field_error.h"

#include "absl/strings/str_cat.h"

namespace samplerd {
namespace {
constexpr char kFieldPayloadUrl[] = "type.samplerd.dev/field";
}  // namespace

absl::Status FieldError(absl::StatusCode code, absl::string_view field, absl::string_view message) {
  absl::Status status(code, absl::StrCat(field, ": ", message));
  status.SetPayload(kFieldPayloadUrl, absl::Cord(field));
  return status;
}

absl::Status InvalidFieldError(absl::string_view field, absl::string_view message) {
  return FieldError(absl::StatusCode::kInvalidArgument, field, message);
}

absl::Status LimitFieldError(absl::string_view field, absl::string_view message) {
  return FieldError(absl::StatusCode::kResourceExhausted, field, message);
}

std::string ErrorField(const absl::Status& status) {
  auto payload = status.GetPayload(kFieldPayloadUrl);
  return payload.has_value() ? std::string(*payload) : std::string();
}

}  // namespace samplerd
