// Server (service/server.h) in this process: Create starts a server a client can call, names the flag of a file
// it cannot use, refuses an address it cannot bind, and Shutdown ends Wait.
#include "service/server.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
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

// A second server with the same unix socket path must not take the path over from the one serving there (gRPC,
// and the shm control socket, remove a socket file before they bind); a stale file is replaced.
TEST(Server, ALiveUnixSocketPathIsNotTakenOverAndAStaleOneIsReplaced) {
  // A directory of its own (test runs at the same time must not share the paths), short enough for sun_path
  // whatever TMPDIR is.
  char dir[] = "/tmp/samplerd-server-test-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr) << std::strerror(errno);
  const std::string grpc_path = std::string(dir) + "/grpc.sock";
  const std::string shm_path = std::string(dir) + "/shm.sock";
  ServerConfig config = LoopbackConfig();
  config.listen = {"unix:" + grpc_path};
  config.shm_socket = shm_path;
  absl::StatusOr<std::unique_ptr<Server>> first = Server::Create(config, ProfileRegistry::BuiltIn());
  ASSERT_TRUE(first.ok()) << first.status();

  absl::StatusOr<std::unique_ptr<Server>> second = Server::Create(config, ProfileRegistry::BuiltIn());
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(second.status().message()), HasSubstr("another server is listening"));
  ServerConfig grpc_only = config;
  grpc_only.shm_socket = "";
  second = Server::Create(grpc_only, ProfileRegistry::BuiltIn());
  ASSERT_FALSE(second.ok());
  EXPECT_THAT(std::string(second.status().message()), HasSubstr(grpc_path));

  // The first server still answers on its path.
  auto stub = v1::Sampler::NewStub(grpc::CreateChannel("unix:" + grpc_path, grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  v1::ListProfilesResponse response;
  EXPECT_TRUE(stub->ListProfiles(&context, v1::ListProfilesRequest(), &response).ok());
  (*first)->Shutdown();

  // A socket file nobody listens on (a server that died without removing it) is replaced.
  const int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  struct sockaddr_un address = {};
  address.sun_family = AF_UNIX;
  ASSERT_LT(grpc_path.size(), sizeof(address.sun_path));
  std::memcpy(address.sun_path, grpc_path.data(), grpc_path.size());
  unlink(grpc_path.c_str());
  ASSERT_EQ(bind(fd, reinterpret_cast<const struct sockaddr*>(&address), sizeof(address)), 0);
  close(fd);
  absl::StatusOr<std::unique_ptr<Server>> third = Server::Create(grpc_only, ProfileRegistry::BuiltIn());
  ASSERT_TRUE(third.ok()) << third.status();
  (*third)->Shutdown();
  unlink(grpc_path.c_str());
  unlink(shm_path.c_str());
  rmdir(dir);
}

TEST(ServerConfig, OnePathForTheGrpcSocketAndTheShmSocketIsAUsageError) {
  ServerConfig config = LoopbackConfig();
  config.listen = {"127.0.0.1:0", "unix:///tmp/samplerd-one.sock"};
  config.shm_socket = "/tmp/samplerd-one.sock";
  const absl::Status status = ValidateServerConfig(config);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("shm_socket"));
}

}  // namespace
}  // namespace samplerd
