#include "service/calls_in_flight.h"

#include <cstring>

#include "service/tsan_annotations.h"
namespace samplerd {

class CallCounter final : public grpc::experimental::Interceptor {
 public:
  explicit CallCounter(CallsInFlight* calls) : calls_(calls) {
    calls_->Add(1);
    TsanHappensBefore(this);  // gRPC runs the hooks and the deletion on other threads (tsan_annotations.h)
  }
  ~CallCounter() override {
    TsanHappensAfter(this);
    calls_->Add(-1);
  }
  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    TsanHandedOff handed_off(this);
    methods->Proceed();
  }

 private:
  CallsInFlight* const calls_;
};

namespace {

class CallCounterFactory final : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit CallCounterFactory(CallsInFlight* calls) : calls_(calls) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(grpc::experimental::ServerRpcInfo* info) override {
    // A health Watch and a reflection stream have no work to finish: they last as long as their client wants (the
    // drain has already told a Watch NOT_SERVING, and reflection answers each request at once). Counted, either
    // would hold every stopping replica for the whole drain.
    if (std::strcmp(info->method(), "/grpc.health.v1.Health/Watch") == 0 ||
        std::strcmp(info->method(), "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo") == 0) {
      return nullptr;
    }
    return new CallCounter(calls_);
  }

 private:
  CallsInFlight* const calls_;
};

}  // namespace

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> CallsInFlight::MakeInterceptorFactory() {
  return std::make_unique<CallCounterFactory>(this);
}

void CallsInFlight::Add(int delta) {
  std::lock_guard<std::mutex> lock(mu_);
  count_ += delta;
  if (count_ == 0) none_.notify_all();
}

int CallsInFlight::count() const {
  std::lock_guard<std::mutex> lock(mu_);
  return count_;
}

bool CallsInFlight::WaitUntilNone(std::chrono::system_clock::time_point deadline) const {
  std::unique_lock<std::mutex> lock(mu_);
  return none_.wait_until(lock, deadline, [this] { return count_ == 0; });
}

}  // namespace samplerd
