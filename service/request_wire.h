// The checks a request's wire form gets before protobuf parses it.
//
// A parse turns some fields of a couple of bytes into an allocation of a hundred or more: an empty `Step`
// (2 bytes) becomes a ~130-byte message, a field the schema does not define (2 bytes) an entry of the message's
// unknown-field set. A request of nothing else parses to 35-70 times its size (a 64 MiB one to 4 GB), before any
// limit on the parsed request can look at it. CheckRequestWire walks the wire form with the message's
// descriptor, allocating nothing, and refuses such a request first.
//
//   grpc::ProtoBufferReader reader(&buffer);
//   if (absl::Status s = CheckRequestWire(*v1::SampleRequest::descriptor(), &reader, max_steps); !s.ok()) ...
//   // then parse `buffer`
#ifndef SAMPLERD_SERVICE_REQUEST_WIRE_H_
#define SAMPLERD_SERVICE_REQUEST_WIRE_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/io/zero_copy_stream.h"

namespace samplerd {

// How many fields a request may carry that its message types do not define (in all its messages together): this
// many, and kUnknownFieldsPerStep more for each step. Each one is kept by the parse; a client on a newer schema
// sends a few per step.
inline constexpr int64_t kMaxUnknownFields = 1024;
inline constexpr int64_t kUnknownFieldsPerStep = 32;

// TooManyStepsError()
//
// RESOURCE_EXHAUSTED naming `steps`: a request carries more than `max_steps` (--max_steps_per_request); `got` says
// how many ("4097", or "more than 4096" when they were not all counted).
absl::Status TooManyStepsError(int64_t max_steps, absl::string_view got);

// CheckRequestWire()
//
// Walks `wire`, a serialized message of `type`, without building it. Refuses, before a parse:
// - more than `max_steps` elements of repeated message fields, other than maps (TooManyStepsError, at the first
//   one past them): in samplerd.v1's requests the one such field is `steps`;
// - more than kMaxUnknownFields + kUnknownFieldsPerStep x steps fields that the message types do not define, or
//   define with another wire type (RESOURCE_EXHAUSTED);
// - the group wire type, which no samplerd.v1 message uses (INVALID_ARGUMENT).
// Wire bytes that do not parse are left to the parse to report: the walk stops there, and returns OK unless what
// it read before is refused. The walk may count more than the parse keeps, never less: a oneof written twice
// (`sample` then `register` then `sample`) keeps one, and the entries of a map may drop their unknown fields.
absl::Status CheckRequestWire(const google::protobuf::Descriptor& type, google::protobuf::io::ZeroCopyInputStream* wire,
                              int64_t max_steps);

}  // namespace samplerd

#endif  // SAMPLERD_SERVICE_REQUEST_WIRE_H_
