// A count of the calls in flight, every method but the health Watch and reflection included, for the drain on
// SIGTERM.
//
// gRPC's Server::Shutdown(deadline) waits until the deadline for every connection to close, idle ones too, so an
// idle client would hold a stopping server for the whole drain. main() waits for the calls counted here instead,
// then closes the remaining (idle) connections at once.
//
//   auto calls = std::make_shared<CallsInFlight>();
//   interceptors.push_back(calls->MakeInterceptorFactory());
//   ... calls->WaitUntilNone(deadline);
#ifndef SAMPLERD_SERVICE_CALLS_IN_FLIGHT_H_
#define SAMPLERD_SERVICE_CALLS_IN_FLIGHT_H_

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>

#include "grpcpp/support/server_interceptor.h"

namespace samplerd {

// CallsInFlight
//
// Must outlive the server its interceptors are installed in.
class CallsInFlight {
 public:
  // Counts a call from its start until gRPC releases it (the interceptor is deleted with its call).
  std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> MakeInterceptorFactory();

  int count() const;
  // True when no call is in flight; false when `deadline` came first.
  bool WaitUntilNone(std::chrono::system_clock::time_point deadline) const;

 private:
  friend class CallCounter;
  void Add(int delta);

  mutable std::mutex mu_;
  mutable std::condition_variable none_;
  int count_ = 0;  // guarded by mu_
};

}  // namespace samplerd

#endif  // SAMPLERD_SERVICE_CALLS_IN_FLIGHT_H_
