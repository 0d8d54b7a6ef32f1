// Server (service/server.h) in this process: Create starts a server a client can call, names the flag of a file
// it cannot use, refuses an address it cannot bind, and Shutdown ends Wait.
#include "service/server.h"

#include <memory>
#include <string>
#include <thread>

#include "core/profile.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "samplerd/v1/sampler.grpc.pb.h"
#include "service/server_config.h"

namespace samplerd {
namespace {

using ::testing::HasSubstr;
using ::testing::SizeIs;

ServerConfig LoopbackConfig() {
  ServerConfig config;
  config.listen = {"127.0.0.1:0"};
  config.metrics_listen = "";
  config.workers = 1;
  config.drain_seconds = 1;
  config.max_connection_age_grace_seconds = 1;
  return config;
}

TEST(Server, ServesOnTheBoundAddressUntilShutdown) {
  absl::StatusOr<std::unique_ptr<Server>> server = Server::Create(LoopbackConfig(), ProfileRegistry::BuiltIn());
  ASSERT_TRUE(server.ok()) << server.status();
  ASSERT_THAT((*server)->bound_addresses(), SizeIs(1));
  const std::string address = (*server)->bound_addresses()[0];
  EXPECT_NE(address, "127.0.0.1:0") << "the bound address carries the port gRPC picked";
  EXPECT_EQ((*server)->metrics_address(), "");

  auto stub = v1::Sampler::NewStub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  v1::ListProfilesResponse response;
  ASSERT_TRUE(stub->ListProfiles(&context, v1::ListProfilesRequest(), &response).ok());
  EXPECT_GT(response.profiles_size(), 0);

  std::thread waiter([&] { (*server)->Wait(); });
  (*server)->Shutdown();
  waiter.join();
}

TEST(Server, AnUnreadableTokenFileIsInvalidArgument) {
  ServerConfig config = LoopbackConfig();
  config.auth_token_file = "/nonexistent/samplerd-token";
  absl::StatusOr<std::unique_ptr<Server>> server = Server::Create(config, ProfileRegistry::BuiltIn());
  ASSERT_FALSE(server.ok());
  EXPECT_EQ(server.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(server.status().message()), HasSubstr("--auth_token_file"));
}

TEST(Server, ATakenAddressIsUnavailableAndNamed) {
  absl::StatusOr<std::unique_ptr<Server>> first = Server::Create(LoopbackConfig(), ProfileRegistry::BuiltIn());
  ASSERT_TRUE(first.ok()) << first.status();
  ServerConfig config = LoopbackConfig();
  config.listen = {(*first)->bound_addresses()[0]};
  absl::StatusOr<std::unique_ptr<Server>> second = Server::Create(config, ProfileRegistry::BuiltIn());
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(second.status().message()), HasSubstr(config.listen[0]));
  (*first)->Shutdown();
}

}  // namespace
}  // namespace samplerd
