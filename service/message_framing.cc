#include "service/message_framing.h"

#include <cstdint>

#include "grpc/grpc.h"

// Defined and exported by libgrpc (src/core/lib/surface/call_test_only.h, not among the installed headers): the
// flags of the call's last received message. Its prototype is stable across gRPC releases; a libgrpc without it
// fails at link time, not at run time.
uint32_t grpc_call_test_only_get_message_flags(grpc_call* call);

namespace samplerd {
namespace {

// GRPC_WRITE_INTERNAL_COMPRESS (src/core/lib/surface/call.h): the message's compressed-flag byte was 1 and no
// filter decompressed it.
constexpr uint32_t kCompressedFlag = 0x80000000u;

}  // namespace

absl::Status CheckMessageFraming(grpc::ServerContextBase& context) {
  grpc_call* call = context.c_call();
  if (call == nullptr || (grpc_call_test_only_get_message_flags(call) & kCompressedFlag) == 0) {
    return absl::OkStatus();
  }
  return absl::InternalError(
      "a message has the compressed flag set, but the call declares no compression samplerd decompresses "
      "(grpc-encoding absent, identity or unknown); send messages uncompressed");
}

}  // namespace samplerd
