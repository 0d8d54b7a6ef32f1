// RequestObserver: what SamplerService tells the rest of the server about the work it does, so metrics (and
// anything else that counts) stay out of the data path.
//
//   class CountingObserver : public RequestObserver {
//     void OnRequest(size_t bytes) override { bytes_ += bytes; }
//     void OnStep(const v1::StepResult& result, std::chrono::nanoseconds core_time) override { ++steps_; }
//   };
//   SamplerService::Options options;
//   options.observer = std::make_shared<CountingObserver>();
//
// Both calls happen on the thread that runs the request (a gRPC thread or a worker), concurrently for different
// streams, so an implementation must be thread-safe and cheap: it sits next to every step.
#ifndef SAMPLERD_SERVICE_REQUEST_OBSERVER_H_
#define SAMPLERD_SERVICE_REQUEST_OBSERVER_H_

#include <chrono>
#include <cstddef>

#include "samplerd/v1/sampler.pb.h"

namespace samplerd {

// RequestObserver
class RequestObserver {
 public:
  virtual ~RequestObserver() = default;

  // A SampleRequest is about to be processed (one SampleOnce call or one message of a Sample stream), also one
  // that is then refused for carrying too many steps. `bytes` is its serialized size.
  virtual void OnRequest(size_t bytes) = 0;

  // One step was answered with `result`: a token (regime and profile set) or `result.error()` (its code set).
  // `core_time` is the time core spent on it (decode and encode excluded).
  virtual void OnStep(const v1::StepResult& result, std::chrono::nanoseconds core_time) = 0;
};

}  // namespace samplerd

#endif  // SAMPLERD_SERVICE_REQUEST_OBSERVER_H_
