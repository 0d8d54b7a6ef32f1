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

absl::string_view Utf8Prefix(absl::string_view text, size_t max_bytes) {
  if (text.size() <= max_bytes) return text;
  size_t cut = max_bytes;
  // Back over continuation bytes (10xxxxxx) to the start of the character that does not fit.
  while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;
  return text.substr(0, cut);
}

std::string Excerpt(absl::string_view text, size_t max_bytes) {
  if (text.size() <= max_bytes) return std::string(text);
  return absl::StrCat(Utf8Prefix(text, max_bytes), "... (", text.size(), " bytes)");
}

absl::Status ChangedDuringStepError(absl::string_view field) {
  return InvalidFieldError(field,
                           "changed while the step read it (a tensor in shared memory rewritten before its answer)");
}

absl::Status WithNote(const absl::Status& status, absl::string_view note) {
  absl::Status noted(status.code(), absl::StrCat(status.message(), note));
  status.ForEachPayload([&](absl::string_view url, const absl::Cord& payload) { noted.SetPayload(url, payload); });
  return noted;
}

std::string ErrorField(const absl::Status& status) {
  auto payload = status.GetPayload(kFieldPayloadUrl);
  return payload.has_value() ? std::string(*payload) : std::string();
}

}  // namespace samplerd
