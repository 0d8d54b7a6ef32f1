#include "service/health_watch_limit.h"

#include <atomic>
#include <string>

#include "absl/strings/str_cat.h"
#include "grpc/grpc.h"
#include "grpcpp/server_context.h"
#include "service/logging.h"
#include "service/tsan_annotations.h"
#include "spdlog/spdlog.h"

namespace samplerd {
namespace {

constexpr char kWatchMethod[] = "/grpc.health.v1.Health/Watch";

// Holds one slot of the count for the life of its call (gRPC deletes an interceptor when its call ends).
class HealthWatchLimit final : public grpc::experimental::Interceptor {
 public:
  HealthWatchLimit(grpc::experimental::ServerRpcInfo* info, std::atomic<int>* open, int max_watches)
      : info_(info), open_(open), admitted_(open->fetch_add(1, std::memory_order_relaxed) < max_watches) {
    if (!admitted_) {
      open_->fetch_sub(1, std::memory_order_relaxed);
      refusal_ = absl::StrCat("the server already serves ", max_watches,
                              " grpc.health.v1.Health/Watch streams (--max_health_watches); use Check or retry later");
    }
    TsanHappensBefore(this);  // gRPC runs the hooks and the deletion on other threads (tsan_annotations.h)
  }
  ~HealthWatchLimit() override {
    TsanHappensAfter(this);
    if (admitted_) open_->fetch_sub(1, std::memory_order_relaxed);
  }

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    using grpc::experimental::InterceptionHookPoints;
    TsanHandedOff handed_off(this);
    if (!admitted_ && methods->QueryInterceptionHookPoint(InterceptionHookPoints::POST_RECV_INITIAL_METADATA)) {
      if (const int64_t held = CallProblemLogBudget().Admit(); held >= 0) {
        spdlog::warn("{} from {} refused: {}{}", info_->method(), info_->server_context()->peer(), refusal_,
                     HeldBackNote(held));
      }
      // As in the token check (auth.cc): the client gets this status, the health service a cancelled call.
      grpc_call_cancel_with_status(info_->server_context()->c_call(), GRPC_STATUS_RESOURCE_EXHAUSTED, refusal_.c_str(),
                                   nullptr);
    }
    if (!admitted_ && methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS)) {
      methods->ModifySendStatus(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, refusal_));
    }
    methods->Proceed();
  }

 private:
  grpc::experimental::ServerRpcInfo* const info_;
  std::atomic<int>* const open_;
  const bool admitted_;
  std::string refusal_;
};

class HealthWatchLimitFactory final : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit HealthWatchLimitFactory(int max_watches) : max_watches_(max_watches) {}

  grpc::experimental::Interceptor* CreateServerInterceptor(grpc::experimental::ServerRpcInfo* info) override {
    if (std::string(info->method()) != kWatchMethod) return nullptr;
    return new HealthWatchLimit(info, &open_, max_watches_);
  }

 private:
  const int max_watches_;
  std::atomic<int> open_{0};
};

}  // namespace

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> MakeHealthWatchLimitFactory(int max_watches) {
  return std::make_unique<HealthWatchLimitFactory>(max_watches);
}

}  // namespace samplerd
