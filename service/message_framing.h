// CheckMessageFraming(): refuses a message that arrived with gRPC's compressed flag set on a call that uses no
// compression samplerd decompresses (grpc-encoding absent, "identity", or a name it does not know).
//
//   // In a reaction, right after gRPC delivered a message of `context`'s call:
//   if (absl::Status framing = CheckMessageFraming(*context); !framing.ok()) Finish(ToGrpcStatus(framing));
//
// gRPC's protocol makes such a message an error, but gRPC 1.51 hands the still-compressed bytes to the
// application as if they were plain, so a parse could silently read a wrong request. gRPC also drops the
// grpc-encoding header it could not use before the application sees the metadata, so an absent, "identity" and
// an unknown encoding look the same here; all get INTERNAL (a protocol error: gRPC's own answer when no
// encoding was declared). gzip and deflate are disabled on the server (service/server.cc): gRPC itself refuses
// those calls with UNIMPLEMENTED before any message is read.
#ifndef SAMPLERD_SERVICE_MESSAGE_FRAMING_H_
#define SAMPLERD_SERVICE_MESSAGE_FRAMING_H_

#include "absl/status/status.h"
#include "grpcpp/server_context.h"

namespace samplerd {

// OK unless the call's last received message carries the compressed flag: then INTERNAL, which ends the call.
absl::Status CheckMessageFraming(grpc::ServerContextBase& context);

}  // namespace samplerd

#endif  // SAMPLERD_SERVICE_MESSAGE_FRAMING_H_
