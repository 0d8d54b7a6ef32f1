#include "service/request_wire.h"

#include <cstdint>

#include "absl/strings/str_cat.h"
#include "core/field_error.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/wire_format_lite.h"

namespace samplerd {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::internal::WireFormatLite;
using google::protobuf::io::CodedInputStream;

// samplerd.v1's requests nest four deep; this only keeps a schema change from recursing without end.
constexpr int kMaxDepth = 32;

struct Walk {
  int64_t max_steps = 0;
  int64_t steps = 0;
  int64_t unknown_fields = 0;
  bool group = false;
};

// The unknown fields a request of `steps` steps may carry.
int64_t MaxUnknownFields(int64_t steps) { return kMaxUnknownFields + kUnknownFieldsPerStep * steps; }

bool KnownWireType(const FieldDescriptor& field, WireFormatLite::WireType wire_type) {
  const auto expected = WireFormatLite::WireTypeForFieldType(static_cast<WireFormatLite::FieldType>(field.type()));
  if (wire_type == expected) return true;
  // A repeated scalar is read packed or not, whichever way it was written.
  return field.is_packable() && wire_type == WireFormatLite::WIRETYPE_LENGTH_DELIMITED;
}

bool SkipValue(CodedInputStream* in, WireFormatLite::WireType wire_type) {
  uint64_t varint = 0;
  uint32_t length = 0;
  switch (wire_type) {
    case WireFormatLite::WIRETYPE_VARINT:
      return in->ReadVarint64(&varint);
    case WireFormatLite::WIRETYPE_FIXED64:
      return in->Skip(8);
    case WireFormatLite::WIRETYPE_FIXED32:
      return in->Skip(4);
    case WireFormatLite::WIRETYPE_LENGTH_DELIMITED:
      return in->ReadVarint32(&length) && in->Skip(static_cast<int>(length));
    default:
      return false;
  }
}

// Walks one message of `type` up to the stream's current limit. False when the bytes stop parsing or a limit is
// passed (`walk` says which).
bool WalkMessage(const Descriptor& type, int depth, CodedInputStream* in, Walk* walk) {
  if (depth > kMaxDepth) return false;
  while (true) {
    const uint32_t tag = in->ReadTag();
    if (tag == 0) return true;  // the end of the message, or bytes the parse will refuse
    const auto wire_type = WireFormatLite::GetTagWireType(tag);
    if (wire_type == WireFormatLite::WIRETYPE_START_GROUP || wire_type == WireFormatLite::WIRETYPE_END_GROUP) {
      walk->group = true;
      return false;
    }
    const FieldDescriptor* field = type.FindFieldByNumber(WireFormatLite::GetTagFieldNumber(tag));
    if (field == nullptr || !KnownWireType(*field, wire_type)) {
      if (++walk->unknown_fields > MaxUnknownFields(walk->max_steps)) return false;
      if (!SkipValue(in, wire_type)) return false;
      continue;
    }
    if (field->type() != FieldDescriptor::TYPE_MESSAGE) {
      if (!SkipValue(in, wire_type)) return false;
      continue;
    }
    if (field->is_repeated() && !field->is_map() && ++walk->steps > walk->max_steps) return false;
    uint32_t length = 0;
    if (!in->ReadVarint32(&length) || length > static_cast<uint32_t>(INT32_MAX)) return false;
    const CodedInputStream::Limit limit = in->PushLimit(static_cast<int>(length));
    if (!WalkMessage(*field->message_type(), depth + 1, in, walk) || in->BytesUntilLimit() != 0) {
      return false;
    }
    in->PopLimit(limit);
  }
}

}  // namespace

absl::Status TooManyStepsError(int64_t max_steps, absl::string_view got) {
  return LimitFieldError(
      "steps", absl::StrCat("a request may carry at most ", max_steps, " steps (--max_steps_per_request), got ", got));
}

absl::Status CheckRequestWire(const Descriptor& type, google::protobuf::io::ZeroCopyInputStream* wire,
                              int64_t max_steps) {
  Walk walk;
  walk.max_steps = max_steps;
  {
    CodedInputStream in(wire);
    WalkMessage(type, 0, &in, &walk);
  }
  if (walk.steps > max_steps) return TooManyStepsError(max_steps, absl::StrCat("more than ", max_steps));
  if (const int64_t allowed = MaxUnknownFields(walk.steps); walk.unknown_fields > allowed) {
    return absl::ResourceExhaustedError(
        absl::StrCat("the message carries more than ", allowed, " fields that ", type.full_name(),
                     " and the messages in it do not define (or define with another wire type): ", kMaxUnknownFields,
                     " and ", kUnknownFieldsPerStep, " per step"));
  }
  if (walk.group) {
    return absl::InvalidArgumentError(
        absl::StrCat("the message uses the group wire type, which no field of ", type.full_name(), " has"));
  }
  return absl::OkStatus();
}

}  // namespace samplerd
