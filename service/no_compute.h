// NoComputeResponder: the answers of a call that asks for no compute, for measuring the transport alone.
//
// `samplerctl bench --no-compute` sends the metadata `samplerd-no-compute: 1` with its calls to the ordinary
// samplerd.v1.Sampler methods; a samplerd started with --allow_no_compute answers them without core: each
// result echoes sequence_id and step only, so the bytes on the wire match a real run's requests while the server
// does no work. SamplerService constructs a responder only under that flag and picks it per call; without the
// flag such a call ends with FAILED_PRECONDITION (Refused()). It shares the method path with the real service
// (a client must not change its calls to measure), so it is chosen per call rather than registered apart.
//
//   if (NoComputeResponder::Wanted(*context)) {
//     if (responder == nullptr) return Finish(NoComputeResponder::Refused());
//     responder->StartRequest(request, &response, done);  // `done` runs before this returns
//   }
#ifndef SAMPLERD_SERVICE_NO_COMPUTE_H_
#define SAMPLERD_SERVICE_NO_COMPUTE_H_

#include <functional>

#include "absl/status/status.h"
#include "grpcpp/grpcpp.h"
#include "samplerd/v1/sampler.pb.h"

namespace samplerd {

class NoComputeResponder {
 public:
  // The request metadata key (and its value "1") that asks for an answer without core.
  static constexpr char kMetadata[] = "samplerd-no-compute";

  // Whether the call's metadata asks for an answer without core.
  static bool Wanted(const grpc::CallbackServerContext& context);

  // The status a call asking for no compute ends with when the server does not allow it.
  static grpc::Status Refused();

  // SamplerService::StartRequest's shape: `response` gets every step echoed by id and index, in order, nothing
  // computed, and `done` runs with OK on the calling thread before this returns.
  void StartRequest(const v1::SampleRequest& request, v1::SampleResponse* response,
                    const std::function<void(absl::Status)>& done) const;
};

}  // namespace samplerd

#endif  // SAMPLERD_SERVICE_NO_COMPUTE_H_
