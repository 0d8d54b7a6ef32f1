// A bound on concurrent grpc.health.v1.Health/Watch streams.
//
// Health calls need no token (probes carry none) and are not Sample streams, so neither --auth_token_file nor
// --max_streams limits them, and each open Watch holds memory in gRPC's health service. This server interceptor
// counts the open Watch streams and refuses one past `max_watches` with RESOURCE_EXHAUSTED before the health
// service sees it; Check calls are not counted.
//
//   creators.push_back(MakeHealthWatchLimitFactory(config.max_health_watches));
#ifndef SAMPLERD_SERVICE_HEALTH_WATCH_LIMIT_H_
#define SAMPLERD_SERVICE_HEALTH_WATCH_LIMIT_H_

#include <memory>

#include "grpcpp/support/server_interceptor.h"

namespace samplerd {

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> MakeHealthWatchLimitFactory(int max_watches);

}  // namespace samplerd

#endif  // SAMPLERD_SERVICE_HEALTH_WATCH_LIMIT_H_
