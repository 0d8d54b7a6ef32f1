// The shared-memory plane against a real samplerd (--shm_socket): the control socket's protocol (a sealed memfd
// accepted, an unsealed one refused with the reason), steps referencing a region answered byte for byte as the
// same tensors sent as bytes, steps on the control socket answered byte for byte as on the Sample RPC (errors,
// limits and the bearer token included), a logits tensor rewritten while its steps read it answered with top
// lists one state of it could give or refused, and clients killed mid-step with steps in flight, on a Sample stream
// and on the control socket: 200 times each, while another client is answered correctly throughout, and at the
// end no region is left mapped (/metrics).
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "clients/cpp/shm_plane.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "samplerd/v1/sampler.grpc.pb.h"
#include "tests/service/server_process.h"

namespace samplerd {
namespace {

using ::samplerd::client::ShmPlane;
using ::samplerd::testing::ListProfilesOnANewConnection;
using ::samplerd::testing::ServerProcess;
using ::testing::HasSubstr;

constexpr int kVocab = 32000;

std::string ShmSocketPath() {
  static std::atomic<int> counter{0};
  return "/tmp/samplerd-shm-test-" + std::to_string(getpid()) + "-" + std::to_string(counter++) + ".sock";
}

std::string HttpGet(const std::string& address, const std::string& path) {
  const size_t colon = address.rfind(':');
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(std::stoi(address.substr(colon + 1))));
  if (inet_pton(AF_INET, address.substr(0, colon).c_str(), &addr.sin_addr) != 1) return "";
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return "";
  std::string reply;
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    const std::string request = "GET " + path + " HTTP/1.0\r\nHost: " + address + "\r\n\r\n";
    if (write(fd, request.data(), request.size()) == static_cast<ssize_t>(request.size())) {
      char buffer[8192];
      ssize_t n;
      while ((n = read(fd, buffer, sizeof(buffer))) > 0) reply.append(buffer, static_cast<size_t>(n));
    }
  }
  close(fd);
  const size_t body = reply.find("\r\n\r\n");
  if (reply.find(" 200 ") == std::string::npos || body == std::string::npos) return "";
  return reply.substr(body + 4);
}

// The value of the unlabelled sample `name`; NaN when absent.
double MetricValue(const std::string& exposition, const std::string& name) {
  std::istringstream lines(exposition);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.rfind(name + " ", 0) == 0) return std::stod(line.substr(line.rfind(' ') + 1));
  }
  return std::nan("");
}

double Metric(const ServerProcess& server, const std::string& name) {
  return MetricValue(HttpGet(server.metrics_address(), "/metrics"), name);
}

bool WaitFor(const std::function<bool()>& condition, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return condition();
}

std::vector<float> Gaussian(int n, uint32_t key) {
  std::mt19937 rng(key);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = normal(rng);
  return v;
}

// `steps` steps as bytes, and the same steps with their logits written into `plane` at consecutive slots.
void MakeSteps(int steps, const ShmPlane* plane, v1::SampleRequest* bytes, v1::SampleRequest* refs) {
  for (int i = 0; i < steps; ++i) {
    const std::vector<float> logits = Gaussian(kVocab, static_cast<uint32_t>(i + 1));
    v1::Step* b = bytes->add_steps();
    b->set_sequence_id("s" + std::to_string(i));
    b->set_step(static_cast<uint64_t>(i));
    b->set_seed(42);
    b->set_top_logprobs(4);
    b->mutable_logits()->set_dtype(v1::DTYPE_F32);
    b->mutable_logits()->add_shape(kVocab);
    b->mutable_logits()->set_data(std::string(reinterpret_cast<const char*>(logits.data()), logits.size() * 4));
    v1::Step* r = refs->add_steps();
    *r = *b;
    r->clear_logits();
    const int64_t shape[] = {kVocab};
    plane->WriteF32(static_cast<uint64_t>(i) * kVocab * 4, logits, shape, r->mutable_logits_ref());
  }
}

// Answers of one SampleOnce call, server_micros cleared; the call's status in `status`.
v1::SampleResponse Once(const std::string& target, const v1::SampleRequest& request, const ShmPlane* plane,
                        grpc::Status* status) {
  auto stub = v1::Sampler::NewStub(grpc::CreateChannel(target, grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  if (plane != nullptr) plane->Attach(&context);
  v1::SampleResponse response;
  *status = stub->SampleOnce(&context, request, &response);
  for (v1::StepResult& r : *response.mutable_results()) r.clear_server_micros();
  return response;
}

class ShmServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    socket_path_ = ShmSocketPath();
    server_ = ServerProcess::Start({"--shm_socket", socket_path_, "--shm_max_regions_per_client", "2"});
    ASSERT_NE(server_, nullptr);
  }
  std::string socket_path_;
  std::unique_ptr<ServerProcess> server_;
};

TEST_F(ShmServerTest, ReferencedStepsAnswerByteForByteAsTheirBytes) {
  absl::StatusOr<std::unique_ptr<ShmPlane>> plane = ShmPlane::Connect(socket_path_, 8 * kVocab * 4, "test");
  ASSERT_TRUE(plane.ok()) << plane.status();
  EXPECT_EQ((*plane)->session().size(), 32u);
  EXPECT_EQ((*plane)->region().size(), 32u);
  v1::SampleRequest bytes, refs;
  MakeSteps(8, plane->get(), &bytes, &refs);
  grpc::Status by_bytes_status, by_ref_status;
  const v1::SampleResponse by_bytes = Once(server_->unix_target(), bytes, nullptr, &by_bytes_status);
  const v1::SampleResponse by_ref = Once(server_->unix_target(), refs, plane->get(), &by_ref_status);
  ASSERT_TRUE(by_bytes_status.ok()) << by_bytes_status.error_message();
  ASSERT_TRUE(by_ref_status.ok()) << by_ref_status.error_message();
  ASSERT_EQ(by_ref.results_size(), 8);
  EXPECT_FALSE(by_ref.results(0).has_error()) << by_ref.results(0).error().message();
  EXPECT_EQ(by_ref.SerializeAsString(), by_bytes.SerializeAsString());
  EXPECT_EQ(Metric(*server_, "samplerd_shm_regions_mapped"), 1);
  EXPECT_EQ(Metric(*server_, "samplerd_shm_clients"), 1);

  // Without the session metadata, and with another client's session, the same refs are refused.
  grpc::Status status;
  const v1::SampleResponse no_session = Once(server_->unix_target(), refs, nullptr, &status);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(no_session.results_size(), 8);
  EXPECT_EQ(no_session.results(0).error().field(), "logits_ref.region");
  absl::StatusOr<std::unique_ptr<ShmPlane>> other = ShmPlane::Connect(socket_path_, 4096, "other");
  ASSERT_TRUE(other.ok()) << other.status();
  const v1::SampleResponse stolen = Once(server_->unix_target(), refs, other->get(), &status);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(stolen.results_size(), 8);
  EXPECT_EQ(stolen.results(0).error().code(), 3);
  EXPECT_THAT(stolen.results(0).error().message(), HasSubstr("another client"));

  // The connection closing unregisters its region.
  plane->reset();
  EXPECT_TRUE(WaitFor([&] { return Metric(*server_, "samplerd_shm_regions_mapped") == 1; },
                      std::chrono::seconds(10)));  // `other`'s only
  const v1::SampleResponse gone = Once(server_->unix_target(), refs, other->get(), &status);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(gone.results_size(), 8);
  EXPECT_THAT(gone.results(0).error().message(), HasSubstr("no shared-memory region"));
}

// A referenced tensor counts against --max_message_bytes as if it were inline: a request of a few hundred bytes
// must not ask the workers for more than a request over the wire could carry, whether it comes as a Sample call
// or on the control socket.
TEST(ShmControlSteps, ReferencedTensorsCountAgainstTheMessageLimit) {
  const std::string socket_path = ShmSocketPath();
  // Room for three steps' logits, inline or referenced, and the rest of their requests.
  std::unique_ptr<ServerProcess> server =
      ServerProcess::Start({"--shm_socket", socket_path, "--max_message_bytes", std::to_string(3 * kVocab * 4 + 4096)});
  ASSERT_NE(server, nullptr);
  absl::StatusOr<std::unique_ptr<ShmPlane>> plane = ShmPlane::Connect(socket_path, 4 * kVocab * 4, "budget");
  ASSERT_TRUE(plane.ok()) << plane.status();
  v1::SampleRequest bytes, four;
  MakeSteps(4, plane->get(), &bytes, &four);
  ASSERT_LT(four.ByteSizeLong(), 4096u);

  grpc::Status rpc_status;
  Once(server->unix_target(), four, plane->get(), &rpc_status);
  EXPECT_EQ(rpc_status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(rpc_status.error_message(), HasSubstr("--max_message_bytes"));
  v1::SampleResponse response;
  absl::Status status = (*plane)->Sample(four, &response);
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(status.message(), rpc_status.error_message());

  // Three steps fit, as they would inline; the connection stays usable.
  v1::SampleRequest three = four;
  three.mutable_steps()->RemoveLast();
  ASSERT_TRUE((*plane)->Sample(three, &response).ok());
  ASSERT_EQ(response.results_size(), 3);
  EXPECT_FALSE(response.results(2).has_error()) << response.results(2).error().message();
  const v1::SampleResponse by_rpc = Once(server->unix_target(), three, plane->get(), &rpc_status);
  ASSERT_TRUE(rpc_status.ok()) << rpc_status.error_message();
  EXPECT_EQ(by_rpc.results_size(), 3);
  EXPECT_EQ(server->Terminate(), 0);
}

TEST_F(ShmServerTest, TheControlSocketRefusesUnsealedFdsAndEnforcesTheLimits) {
  absl::StatusOr<int> sock = client::ShmConnect(socket_path_);
  ASSERT_TRUE(sock.ok()) << sock.status();
  const int memfd = memfd_create("unsealed", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  ASSERT_EQ(ftruncate(memfd, 4096), 0);
  v1::ShmControlRequest request;
  request.mutable_register_();
  absl::StatusOr<v1::ShmControlResponse> r = client::ShmControlExchange(*sock, request, memfd);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->code(), 3);
  EXPECT_THAT(r->message(), HasSubstr("F_SEAL_SHRINK and F_SEAL_SEAL"));
  EXPECT_TRUE(r->region().empty());
  // No fd at all.
  r = client::ShmControlExchange(*sock, request, -1);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->code(), 3);
  EXPECT_THAT(r->message(), HasSubstr("exactly one memfd"));
  // Sealed: accepted, twice; a third is over --shm_max_regions_per_client 2.
  ASSERT_EQ(fcntl(memfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_SEAL), 0);
  for (int i = 0; i < 2; ++i) {
    r = client::ShmControlExchange(*sock, request, memfd);
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->code(), 0) << r->message();
  }
  r = client::ShmControlExchange(*sock, request, memfd);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->code(), 8);
  EXPECT_THAT(r->message(), HasSubstr("--shm_max_regions_per_client"));
  // Garbage is answered, not fatal.
  ASSERT_EQ(send(*sock, "\xff\xff\xff", 3, 0), 3);
  char answer[4096];
  const ssize_t n = recv(*sock, answer, sizeof(answer), 0);
  ASSERT_GT(n, 0);
  v1::ShmControlResponse garbage;
  ASSERT_TRUE(garbage.ParseFromArray(answer, static_cast<int>(n)));
  EXPECT_EQ(garbage.code(), 3);
  close(memfd);
  close(*sock);
  EXPECT_TRUE(WaitFor([&] { return Metric(*server_, "samplerd_shm_regions_mapped") == 0; }, std::chrono::seconds(10)));
  EXPECT_GE(Metric(*server_, "samplerd_shm_clients"), 0);
}

// One packet of `bytes` (with `fds` as SCM_RIGHTS) out; whether it was sent whole.
bool RawSend(int sock, const std::string& bytes, const std::vector<int>& fds) {
  struct iovec iov = {const_cast<char*>(bytes.data()), bytes.size()};
  struct msghdr msg = {};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  std::vector<char> control(CMSG_SPACE(sizeof(int) * fds.size()));
  if (!fds.empty()) {
    msg.msg_control = control.data();
    msg.msg_controllen = control.size();
    struct cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  return sendmsg(sock, &msg, MSG_NOSIGNAL) == static_cast<ssize_t>(bytes.size());
}

// The next answer parsed into `answer`, and its length as sent, even past kShmMaxPacketBytes (MSG_TRUNC; then it
// is not parsed): -1 when the socket fails, 0 when the server closed the connection.
ssize_t RawReceive(int sock, v1::ShmControlResponse* answer) {
  std::string buffer(client::kShmMaxPacketBytes, '\0');
  const ssize_t n = recv(sock, buffer.data(), buffer.size(), MSG_TRUNC);
  if (n > 0 && n <= static_cast<ssize_t>(buffer.size()) &&
      !answer->ParseFromArray(buffer.data(), static_cast<int>(n))) {
    return -1;
  }
  return n;
}

// RawSend, then RawReceive.
ssize_t RawExchange(int sock, const std::string& bytes, const std::vector<int>& fds, v1::ShmControlResponse* answer) {
  return RawSend(sock, bytes, fds) ? RawReceive(sock, answer) : -1;
}

// A zero-length packet is the empty ShmControlRequest, which names no operation: answered, not taken for the
// end of the stream (which also reads as 0 bytes on SOCK_SEQPACKET), so the client keeps its regions.
TEST_F(ShmServerTest, AnEmptyPacketIsAnsweredAndKeepsTheConnectionAndItsRegions) {
  absl::StatusOr<int> sock = client::ShmConnect(socket_path_);
  ASSERT_TRUE(sock.ok()) << sock.status();
  const int memfd = memfd_create("kept", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  ASSERT_EQ(ftruncate(memfd, 4096), 0);
  ASSERT_EQ(fcntl(memfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_SEAL), 0);
  v1::ShmControlRequest request;
  request.mutable_register_();
  absl::StatusOr<v1::ShmControlResponse> registered = client::ShmControlExchange(*sock, request, memfd);
  ASSERT_TRUE(registered.ok()) << registered.status();
  ASSERT_EQ(registered->code(), 0) << registered->message();

  v1::ShmControlResponse empty;
  ASSERT_GT(RawExchange(*sock, "", {}, &empty), 0) << "the server closed the connection";
  EXPECT_EQ(empty.code(), 3);
  EXPECT_THAT(empty.message(), HasSubstr("names no operation"));
  EXPECT_EQ(empty.session(), registered->session());

  v1::ShmControlRequest unregister;
  unregister.mutable_unregister()->set_region(registered->region());
  absl::StatusOr<v1::ShmControlResponse> unregistered = client::ShmControlExchange(*sock, unregister, -1);
  ASSERT_TRUE(unregistered.ok()) << unregistered.status();
  EXPECT_EQ(unregistered->code(), 0) << "the region survived the empty packet: " << unregistered->message();
  close(memfd);
  close(*sock);
}

// docs/shm.md: packets are "at most 131072 bytes each way", whatever the request quotes back.
TEST_F(ShmServerTest, AnAnswerQuotingALongRegionIdStaysWithinThePacketLimit) {
  absl::StatusOr<int> sock = client::ShmConnect(socket_path_);
  ASSERT_TRUE(sock.ok()) << sock.status();
  v1::ShmControlRequest request;
  request.mutable_unregister()->set_region(std::string(131060, 'a'));
  const std::string wire = request.SerializeAsString();
  ASSERT_LE(wire.size(), client::kShmMaxPacketBytes);
  v1::ShmControlResponse answer;
  const ssize_t n = RawExchange(*sock, wire, {}, &answer);
  ASSERT_GT(n, 0);
  EXPECT_LE(static_cast<size_t>(n), client::kShmMaxPacketBytes);
  EXPECT_EQ(answer.code(), 5);
  EXPECT_THAT(answer.message(), HasSubstr("(131060 bytes)"));
  close(*sock);
}

// A TCP socket with data it cannot send and SO_LINGER set makes its last close wait out the linger time, which its
// sender chose: a client that sent one and closed its own copy held the connection's thread in close() for that
// long (its answer, the drain and, on a refused connection, the accept thread with it). The server's close of a
// received socket is abortive and returns at once.
TEST_F(ShmServerTest, ASocketSentToLingerOnCloseDoesNotHoldTheServer) {
  // A loopback connection whose peer never reads, its send queue full.
  const int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(listener, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(address);
  ASSERT_EQ(bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  ASSERT_EQ(listen(listener, 1), 0);
  ASSERT_EQ(getsockname(listener, reinterpret_cast<sockaddr*>(&address), &length), 0);
  const int lingering = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_EQ(connect(lingering, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  const int silent_peer = accept(listener, nullptr, nullptr);
  ASSERT_GE(silent_peer, 0);
  const std::string chunk(65536, 'x');
  while (send(lingering, chunk.data(), chunk.size(), MSG_DONTWAIT | MSG_NOSIGNAL) > 0) {
  }
  const struct linger long_linger = {1, 20};
  ASSERT_EQ(setsockopt(lingering, SOL_SOCKET, SO_LINGER, &long_linger, sizeof(long_linger)), 0);

  absl::StatusOr<int> sock = client::ShmConnect(socket_path_);
  ASSERT_TRUE(sock.ok()) << sock.status();
  const struct timeval wait = {15, 0};
  ASSERT_EQ(setsockopt(*sock, SOL_SOCKET, SO_RCVTIMEO, &wait, sizeof(wait)), 0);
  v1::ShmControlRequest request;
  request.mutable_register_();
  ASSERT_TRUE(RawSend(*sock, request.SerializeAsString(), {lingering}));
  close(lingering);  // while the packet is in flight, so that the server's copy is the last
  v1::ShmControlResponse answer;
  ASSERT_GT(RawReceive(*sock, &answer), 0)
      << "no answer within 15 s: the server waited for the close of the socket the client sent";
  EXPECT_EQ(answer.code(), 3) << answer.message();  // not a memfd
  close(*sock);
  close(silent_peer);
  close(listener);
}

// The control buffer takes as many descriptors as one message can carry (SCM_MAX_FD), so the answer counts them.
TEST_F(ShmServerTest, ARegisterCarryingTooManyDescriptorsIsToldHowMany) {
  absl::StatusOr<int> sock = client::ShmConnect(socket_path_);
  ASSERT_TRUE(sock.ok()) << sock.status();
  const int memfd = memfd_create("many", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  ASSERT_EQ(ftruncate(memfd, 4096), 0);
  ASSERT_EQ(fcntl(memfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_SEAL), 0);
  v1::ShmControlRequest request;
  request.mutable_register_();
  v1::ShmControlResponse answer;
  ASSERT_GT(RawExchange(*sock, request.SerializeAsString(), std::vector<int>(20, memfd), &answer), 0);
  EXPECT_EQ(answer.code(), 3);
  EXPECT_THAT(answer.message(), HasSubstr("got 20"));
  ASSERT_GT(RawExchange(*sock, request.SerializeAsString(), std::vector<int>(2, memfd), &answer), 0);
  EXPECT_EQ(answer.code(), 3);
  EXPECT_THAT(answer.message(), HasSubstr("got 2"));
  close(memfd);
  close(*sock);
}

// A host that rewrites a slot while its step reads it gets, per step, an answer that one state of the tensor
// could give, or INVALID_ARGUMENT on logits.data (docs/shm.md): here the tensor flips between a Gaussian one and
// one of +-3.4e38, which a step reading both gives top log-probabilities above 0 or out of order.
TEST_F(ShmServerTest, ALogitsTensorRewrittenMidStepGivesSelfConsistentTopListsOrAnError) {
  constexpr int kRewrittenVocab = 4096;
  absl::StatusOr<std::unique_ptr<ShmPlane>> plane = ShmPlane::Connect(socket_path_, kRewrittenVocab * 4, "rewritten");
  ASSERT_TRUE(plane.ok()) << plane.status();
  const std::vector<float> good = Gaussian(kRewrittenVocab, 7);
  std::vector<float> huge(kRewrittenVocab);
  std::mt19937 rng(11);
  for (float& x : huge) x = (rng() & 1) != 0 ? 3.4e38f : -3.4e38f;
  v1::TensorRef ref;
  const int64_t shape[] = {kRewrittenVocab};
  (*plane)->WriteF32(0, good, shape, &ref);
  v1::SampleRequest request;
  for (int i = 0; i < 500; ++i) {
    v1::Step* step = request.add_steps();
    step->set_sequence_id("s" + std::to_string(i));
    step->set_step(static_cast<uint64_t>(i));
    step->set_seed(static_cast<uint64_t>(i + 1));
    step->set_top_logprobs(20);
    step->set_profile("fixed");
    step->mutable_params()->set_temperature(0.0f);
    *step->mutable_logits_ref() = ref;
  }
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    char* slot = (*plane)->data();
    while (!stop.load(std::memory_order_relaxed)) {
      std::memcpy(slot, huge.data(), huge.size() * 4);
      // The server reads the slot from another process: neither copy is a dead store.
      std::atomic_signal_fence(std::memory_order_seq_cst);
      std::memcpy(slot, good.data(), good.size() * 4);
      std::atomic_signal_fence(std::memory_order_seq_cst);
    }
  });
  int answered = 0;
  int impossible = 0;
  for (int round = 0; round < 6; ++round) {
    grpc::Status status;
    const v1::SampleResponse response = Once(server_->unix_target(), request, plane->get(), &status);
    ASSERT_TRUE(status.ok()) << status.error_message();
    for (const v1::StepResult& r : response.results()) {
      if (r.has_error()) {
        EXPECT_EQ(r.error().code(), 3) << r.error().message();
        EXPECT_THAT(r.error().field(), ::testing::StartsWith("logits")) << r.error().message();
        continue;
      }
      ++answered;
      bool consistent =
          r.token() >= 0 && r.token() < kRewrittenVocab && !std::isnan(r.logprob()) && r.logprob() <= 0.0f;
      bool listed = false;
      for (int i = 0; i < r.top_size(); ++i) {
        const float logprob = r.top(i).logprob();
        consistent = consistent && std::isfinite(logprob) && logprob <= 0.0f &&
                     (i == 0 || logprob <= r.top(i - 1).logprob()) &&
                     (r.top(i).token() != r.token() || logprob == r.logprob());
        listed = listed || r.top(i).token() == r.token();
      }
      // Unlisted, the drawn token has no finite log-probability (+-3.4e38 logits can give -inf), or the list is
      // full and it is no better than the last listed one.
      consistent = consistent &&
                   (listed || r.logprob() == -INFINITY || (r.top_size() == 20 && r.logprob() <= r.top(19).logprob()));
      if (!consistent) ++impossible;
    }
  }
  stop = true;
  writer.join();
  EXPECT_EQ(impossible, 0) << "of " << answered << " OK answers";
  EXPECT_GT(answered, 0);
}

// A control connection driven by hand, for what ShmPlane does not do: several regions, packets sent before the
// answers are read, a half-close.
struct RawClient {
  int sock = -1;
  std::vector<int> memfds;

  ~RawClient() {
    if (sock >= 0) close(sock);
    for (int fd : memfds) close(fd);
  }
  // Registers a sealed memfd of `size` bytes; `write` maps it and writes every byte (zeros), otherwise it is left
  // as ftruncate made it, all holes. `authorization` goes with the register when not empty. The region id, empty
  // on failure.
  std::string Register(uint64_t size, bool write, const std::string& authorization = "") {
    const int fd = memfd_create("raw", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0 || ftruncate(fd, static_cast<off_t>(size)) != 0) return "";
    memfds.push_back(fd);
    if (write) {
      void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
      if (p == MAP_FAILED) return "";
      std::memset(p, 0, size);
      munmap(p, size);
    }
    if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_SEAL) != 0) return "";
    v1::ShmControlRequest request;
    request.mutable_register_()->set_name("raw");
    request.set_authorization(authorization);
    absl::StatusOr<v1::ShmControlResponse> r = client::ShmControlExchange(sock, request, fd);
    return r.ok() && r->code() == 0 ? r->region() : "";
  }
  // Writes `values` at `offset` of the memfd `index`.
  void Write(size_t index, uint64_t offset, const std::vector<float>& values) const {
    ASSERT_EQ(pwrite(memfds[index], values.data(), values.size() * 4, static_cast<off_t>(offset)),
              static_cast<ssize_t>(values.size() * 4));
  }
  bool Send(const v1::ShmControlRequest& request) const {
    const std::string wire = request.SerializeAsString();
    return send(sock, wire.data(), wire.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(wire.size());
  }
  // The next answer; false when the connection ended (or the answer does not parse).
  bool Receive(v1::ShmControlResponse* answer) const {
    std::string buffer(client::kShmMaxPacketBytes, '\0');
    const ssize_t n = recv(sock, buffer.data(), buffer.size(), 0);
    return n > 0 && answer->ParseFromArray(buffer.data(), static_cast<int>(n));
  }
};

std::unique_ptr<RawClient> ConnectRaw(const std::string& socket_path) {
  absl::StatusOr<int> sock = client::ShmConnect(socket_path);
  if (!sock.ok()) return nullptr;
  auto raw = std::make_unique<RawClient>();
  raw->sock = *sock;
  return raw;
}

void SetRef(const std::string& region, uint64_t offset, std::vector<int64_t> shape, v1::TensorRef* ref) {
  ref->Clear();
  ref->set_region(region);
  ref->set_offset(offset);
  ref->set_dtype(v1::DTYPE_F32);
  for (int64_t d : shape) ref->add_shape(d);
}

// `steps` steps of the same [kVocab] logits at offset 0 of `region`, each with `top` top tokens.
v1::ShmControlRequest LogitsSteps(const std::string& region, int steps, int top) {
  v1::ShmControlRequest request;
  for (int i = 0; i < steps; ++i) {
    v1::Step* step = request.mutable_sample()->add_steps();
    step->set_sequence_id("s" + std::to_string(i));
    step->set_seed(7);
    step->set_top_logprobs(top);
    SetRef(region, 0, {kVocab}, step->mutable_logits_ref());
  }
  return request;
}

// docs/shm.md: a memfd that was sized and never written is all holes, and a read of a hole allocates the page,
// charged to the reader and kept while the client holds the memfd. A step whose ref covers a hole is refused
// before core reads it; the same step over written memory is answered.
TEST_F(ShmServerTest, ARefOverPagesNeverWrittenIsRefusedAndAllocatesNothingInTheServer) {
  std::unique_ptr<RawClient> raw = ConnectRaw(socket_path_);
  ASSERT_NE(raw, nullptr);
  constexpr uint64_t kMiB = 1 << 20;
  const std::vector<int64_t> attention_shape = {1, 512, 4096};  // 8 MiB
  const std::string written = raw->Register(16 * kMiB, /*write=*/true);
  const std::string sparse = raw->Register(16 * kMiB, /*write=*/false);
  ASSERT_FALSE(written.empty());
  ASSERT_FALSE(sparse.empty());
  raw->Write(0, 0, Gaussian(kVocab, 1));

  v1::ShmControlRequest holes = LogitsSteps(written, 2, 0);
  SetRef(sparse, 0, attention_shape, holes.mutable_sample()->mutable_steps(0)->mutable_attention_ref());
  SetRef(sparse, 12 * kMiB, {kVocab}, holes.mutable_sample()->mutable_steps(1)->mutable_logits_ref());
  const int64_t shmem_before = server_->StatusKiB("RssShmem");
  ASSERT_GE(shmem_before, 0);
  ASSERT_TRUE(raw->Send(holes));
  v1::ShmControlResponse answer;
  ASSERT_TRUE(raw->Receive(&answer));
  ASSERT_EQ(answer.code(), 0) << answer.message();
  ASSERT_EQ(answer.sample().results_size(), 2);
  const v1::StepResult& attention = answer.sample().results(0);
  EXPECT_EQ(attention.error().code(), 3);
  EXPECT_EQ(attention.error().field(), "attention_ref");
  EXPECT_THAT(attention.error().message(), HasSubstr("never written"));
  EXPECT_THAT(attention.error().message(), HasSubstr("must be written before it is referenced"));
  const v1::StepResult& logits = answer.sample().results(1);
  EXPECT_EQ(logits.error().code(), 3);
  EXPECT_EQ(logits.error().field(), "logits_ref");
  // Nothing was allocated for the holes: not in the memfd, not in the server's resident memory.
  EXPECT_EQ(lseek(raw->memfds[1], 0, SEEK_DATA), -1) << "the sparse memfd got pages";
  EXPECT_LT(server_->StatusKiB("RssShmem") - shmem_before, 1024) << "kB of shared memory the server mapped";

  // The same steps over written memory are answered.
  v1::ShmControlRequest full = LogitsSteps(written, 2, 0);
  SetRef(written, 4 * kMiB, attention_shape, full.mutable_sample()->mutable_steps(0)->mutable_attention_ref());
  ASSERT_TRUE(raw->Send(full));
  ASSERT_TRUE(raw->Receive(&answer));
  ASSERT_EQ(answer.sample().results_size(), 2);
  for (const v1::StepResult& r : answer.sample().results()) {
    EXPECT_FALSE(r.has_error()) << r.error().field() << ": " << r.error().message();
  }
  EXPECT_TRUE(answer.sample().results(0).metrics().has_attn_entropy());
}

// A client may shut its writing side once it has sent its request (shutdown(SHUT_WR)) and read the answer: it is
// still there, so its steps run. One that closes the connection is gone, and its steps not yet started are not.
TEST(ShmControlSteps, AClientThatHalfClosesIsAnsweredAndOneThatClosesHasItsStepsCancelled) {
  const std::string socket_path = ShmSocketPath();
  std::unique_ptr<ServerProcess> server = ServerProcess::Start({"--shm_socket", socket_path, "--workers", "1"});
  ASSERT_NE(server, nullptr);
  std::unique_ptr<RawClient> raw = ConnectRaw(socket_path);
  ASSERT_NE(raw, nullptr);
  const std::string region = raw->Register(kVocab * 4, /*write=*/true);
  ASSERT_FALSE(region.empty());
  raw->Write(0, 0, Gaussian(kVocab, 3));
  ASSERT_TRUE(raw->Send(LogitsSteps(region, 8, 4)));
  ASSERT_EQ(shutdown(raw->sock, SHUT_WR), 0);
  v1::ShmControlResponse answer;
  ASSERT_TRUE(raw->Receive(&answer));
  EXPECT_EQ(answer.code(), 0) << answer.message();
  ASSERT_EQ(answer.sample().results_size(), 8);
  for (const v1::StepResult& r : answer.sample().results()) {
    EXPECT_FALSE(r.has_error()) << r.sequence_id() << ": " << r.error().message();
    EXPECT_EQ(r.top_size(), 4);
  }

  std::unique_ptr<RawClient> leaving = ConnectRaw(socket_path);
  ASSERT_NE(leaving, nullptr);
  const std::string its_region = leaving->Register(kVocab * 4, /*write=*/true);
  ASSERT_FALSE(its_region.empty());
  leaving->Write(0, 0, Gaussian(kVocab, 4));
  ASSERT_TRUE(leaving->Send(LogitsSteps(its_region, 400, 4)));  // 50 MB referenced: under --max_message_bytes
  leaving.reset();
  const auto cancelled = [&] {
    const std::string exposition = HttpGet(server->metrics_address(), "/metrics");
    const std::string series = "samplerd_step_errors_total{code=\"CANCELLED\"} ";
    const size_t at = exposition.find(series);
    return at == std::string::npos ? 0.0 : std::stod(exposition.substr(at + series.size()));
  };
  EXPECT_TRUE(WaitFor([&] { return cancelled() > 0; }, std::chrono::seconds(10)));
  EXPECT_EQ(server->Terminate(), 0);
}

// docs/shm.md: a control connection plays the stream, also for the drain. A request in flight at SIGTERM is
// answered in full, as a Sample call's would be; a request that arrives once the drain began, on a connection
// that already ran steps, is refused with UNAVAILABLE instead of run; and an idle connection does not hold the
// server once the last answer is out.
// A request of `steps` steps that keeps one worker busy for about 12 ms each: attention of 65,536 one-element rows
// (docs/reliability.md, "Work per byte"), in a region `client` registers; with logits of 1,000 the steps stay under
// --max_message_bytes. No steps when the region could not be registered.
v1::ShmControlRequest SlowRequest(RawClient* client, int steps) {
  constexpr uint64_t kAttentionOffset = kVocab * 4;
  constexpr int64_t kRows = 65536;
  const std::string region = client->Register(kAttentionOffset + kRows * 2, /*write=*/true);
  if (region.empty()) return v1::ShmControlRequest();
  client->Write(0, 0, Gaussian(kVocab, 9));
  v1::ShmControlRequest slow = LogitsSteps(region, steps, 0);
  for (v1::Step& step : *slow.mutable_sample()->mutable_steps()) {
    SetRef(region, 0, {1000}, step.mutable_logits_ref());
    SetRef(region, kAttentionOffset, {kRows, 1}, step.mutable_attention_ref());
    step.mutable_attention_ref()->set_dtype(v1::DTYPE_F16);
  }
  return slow;
}

TEST(ShmControlSteps, ARequestInFlightAtSigtermIsAnsweredAndLaterOnesAreRefused) {
  // Far longer than the request needs, under a sanitizer too (10x slower and more).
  constexpr int kDrainSeconds = 90;
  const std::string socket_path = ShmSocketPath();
  std::unique_ptr<ServerProcess> server =
      ServerProcess::Start({"--shm_socket", socket_path, "--workers", "1", "--drain_seconds",
                            std::to_string(kDrainSeconds), "--max_connection_age_grace_seconds", "90"});
  ASSERT_NE(server, nullptr);
  constexpr int kSteps = 100;
  std::unique_ptr<RawClient> busy = ConnectRaw(socket_path);
  ASSERT_NE(busy, nullptr);
  const v1::ShmControlRequest slow = SlowRequest(busy.get(), kSteps);
  ASSERT_EQ(slow.sample().steps_size(), kSteps);
  // `late` has run steps before the signal (so it holds its stream), `idle` has only registered.
  std::unique_ptr<RawClient> late = ConnectRaw(socket_path);
  std::unique_ptr<RawClient> idle = ConnectRaw(socket_path);
  ASSERT_NE(late, nullptr);
  ASSERT_NE(idle, nullptr);
  const std::string late_region = late->Register(kVocab * 4, /*write=*/true);
  ASSERT_FALSE(late_region.empty());
  ASSERT_FALSE(idle->Register(4096, /*write=*/true).empty());
  v1::ShmControlResponse answer;
  ASSERT_TRUE(late->Send(LogitsSteps(late_region, 1, 0)));
  ASSERT_TRUE(late->Receive(&answer));
  ASSERT_EQ(answer.code(), 0) << answer.message();

  std::atomic<bool> answered{false};
  v1::ShmControlResponse slow_answer;
  bool slow_received = false;
  ASSERT_TRUE(busy->Send(slow));
  std::thread reader([&] {
    slow_received = busy->Receive(&slow_answer);
    answered.store(true);
  });
  const bool started =
      WaitFor([&] { return Metric(*server, "samplerd_step_core_seconds_count") >= 3; }, std::chrono::seconds(10));
  const bool answered_before_signal = answered.load();
  const auto signalled = std::chrono::steady_clock::now();
  kill(server->pid(), SIGTERM);
  EXPECT_TRUE(started);
  EXPECT_FALSE(answered_before_signal) << "the request was done before SIGTERM: make it slower";
  // The drain has begun once a call that needs no worker is refused.
  auto stub = v1::Sampler::NewStub(grpc::CreateChannel(server->unix_target(), grpc::InsecureChannelCredentials()));
  EXPECT_TRUE(WaitFor(
      [&] {
        grpc::ClientContext context;
        context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
        v1::ListProfilesResponse profiles;
        return stub->ListProfiles(&context, v1::ListProfilesRequest(), &profiles).error_code() ==
               grpc::StatusCode::UNAVAILABLE;
      },
      std::chrono::seconds(10)));

  // Draining: a new request is refused, not started. (No ASSERT until `reader` is joined.)
  answer.Clear();
  EXPECT_TRUE(late->Send(LogitsSteps(late_region, 1, 0)));
  EXPECT_TRUE(late->Receive(&answer)) << "the connection closed without an answer";
  EXPECT_EQ(answer.code(), 14) << answer.message();
  EXPECT_THAT(answer.message(), HasSubstr("draining"));
  EXPECT_FALSE(answer.has_sample());

  reader.join();
  const auto answered_at = std::chrono::steady_clock::now();
  ASSERT_TRUE(slow_received) << "the request in flight at SIGTERM got no answer";
  EXPECT_EQ(slow_answer.code(), 0) << slow_answer.message();
  ASSERT_EQ(slow_answer.sample().results_size(), kSteps);
  for (const v1::StepResult& r : slow_answer.sample().results()) {
    ASSERT_FALSE(r.has_error()) << r.sequence_id() << ": " << r.error().message();
  }
  // The idle connection does not hold the drain.
  EXPECT_EQ(server->Stop(/*signal=*/0, std::chrono::seconds(kDrainSeconds)), 0);
  EXPECT_LT(std::chrono::steady_clock::now() - answered_at, std::chrono::seconds(3));
  EXPECT_LT(std::chrono::steady_clock::now() - signalled, std::chrono::seconds(kDrainSeconds));
}

// The drain's wait for the control socket's requests comes after gRPC's: a second SIGTERM then still ends the
// process at once.
TEST(ShmControlSteps, ASecondSigtermWhileAControlRequestDrainsExitsAtOnce) {
  const std::string socket_path = ShmSocketPath();
  std::unique_ptr<ServerProcess> server =
      ServerProcess::Start({"--shm_socket", socket_path, "--workers", "1", "--drain_seconds", "90",
                            "--max_connection_age_grace_seconds", "90"});
  ASSERT_NE(server, nullptr);
  std::unique_ptr<RawClient> busy = ConnectRaw(socket_path);
  ASSERT_NE(busy, nullptr);
  const v1::ShmControlRequest slow = SlowRequest(busy.get(), 400);  // ~5 s, far more under a sanitizer
  ASSERT_EQ(slow.sample().steps_size(), 400);
  ASSERT_TRUE(busy->Send(slow));
  ASSERT_TRUE(
      WaitFor([&] { return Metric(*server, "samplerd_step_core_seconds_count") >= 3; }, std::chrono::seconds(10)));
  ASSERT_EQ(kill(server->pid(), SIGTERM), 0);
  // gRPC's part of the drain is over at once (no gRPC call); the control request is still running.
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  const auto signalled = std::chrono::steady_clock::now();
  EXPECT_EQ(server->Stop(SIGTERM, std::chrono::seconds(20)), 128 + SIGTERM);
  EXPECT_LT(std::chrono::steady_clock::now() - signalled, std::chrono::seconds(3));
}

// docs/shm.md: a client may send requests before reading the answers to earlier ones. Four answers of ~110 KB
// are more than the socket holds unread, so the later ones wait for the client to read.
TEST_F(ShmServerTest, AClientMayPipelineRequestsWhoseAnswersOutgrowTheSocketBuffer) {
  std::unique_ptr<RawClient> raw = ConnectRaw(socket_path_);
  ASSERT_NE(raw, nullptr);
  const std::string region = raw->Register(kVocab * 4, /*write=*/true);
  ASSERT_FALSE(region.empty());
  raw->Write(0, 0, Gaussian(kVocab, 5));
  const v1::ShmControlRequest request = LogitsSteps(region, 400, 20);
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(raw->Send(request)) << i;
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // the server is answering into a full buffer
  for (int i = 0; i < 4; ++i) {
    v1::ShmControlResponse answer;
    ASSERT_TRUE(raw->Receive(&answer)) << "the connection ended after " << i << " answers";
    EXPECT_EQ(answer.code(), 0) << answer.message();
    ASSERT_EQ(answer.sample().results_size(), 400);
    EXPECT_GT(answer.ByteSizeLong(), 100000u);
    EXPECT_FALSE(answer.sample().results(399).has_error()) << answer.sample().results(399).error().message();
  }
}

// A client that never reads its answers holds its connection's thread only for a while: once the socket is full
// of them, the server waits kAnswerSendTimeout (3 s) for room, then disconnects it and unregisters its regions.
TEST_F(ShmServerTest, AClientThatDoesNotReadItsAnswersIsDisconnectedAfterAWhile) {
  std::unique_ptr<RawClient> raw = ConnectRaw(socket_path_);
  ASSERT_NE(raw, nullptr);
  const std::string region = raw->Register(kVocab * 4, /*write=*/true);
  ASSERT_FALSE(region.empty());
  raw->Write(0, 0, Gaussian(kVocab, 6));
  const v1::ShmControlRequest request = LogitsSteps(region, 400, 20);
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(raw->Send(request)) << i;
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  EXPECT_EQ(Metric(*server_, "samplerd_shm_clients"), 1) << "disconnected at once, without waiting for a read";
  EXPECT_TRUE(WaitFor([&] { return Metric(*server_, "samplerd_shm_clients") == 0; }, std::chrono::seconds(10)));
  EXPECT_EQ(Metric(*server_, "samplerd_shm_regions"), 0);
}

TEST(ShmFallback, ConnectWithoutAServerSocketIsUnavailable) {
  absl::StatusOr<std::unique_ptr<ShmPlane>> plane = ShmPlane::Connect(ShmSocketPath(), 4096);
  EXPECT_EQ(plane.status().code(), absl::StatusCode::kUnavailable);
}

// A child host (shm_kill_child) with steps in flight on its region is SIGKILLed, 200 times, while this process
// keeps a shared-memory client of its own and checks every answer against the bytes path's. `control`: the
// steps (the children's and the survivor's) travel on the control socket instead of a Sample stream.
void KillClientsMidStep(const ServerProcess& server, const std::string& socket_path, bool control) {
  absl::StatusOr<std::unique_ptr<ShmPlane>> plane = ShmPlane::Connect(socket_path, 4 * kVocab * 4, "survivor");
  ASSERT_TRUE(plane.ok()) << plane.status();
  v1::SampleRequest bytes, refs;
  MakeSteps(4, plane->get(), &bytes, &refs);
  grpc::Status status;
  const std::string expected = Once(server.unix_target(), bytes, nullptr, &status).SerializeAsString();
  ASSERT_TRUE(status.ok());

  std::atomic<bool> stop{false};
  std::atomic<int> answered{0};
  std::atomic<int> wrong{0};
  std::thread survivor([&] {
    v1::SampleResponse response;
    auto check = [&] {
      for (v1::StepResult& r : *response.mutable_results()) r.clear_server_micros();
      if (response.SerializeAsString() != expected) ++wrong;
      ++answered;
    };
    if (control) {
      while (!stop.load()) {
        if (!(*plane)->Sample(refs, &response).ok()) {
          ++wrong;
          return;
        }
        check();
      }
      return;
    }
    auto stub = v1::Sampler::NewStub(grpc::CreateChannel(server.unix_target(), grpc::InsecureChannelCredentials()));
    grpc::ClientContext context;
    (*plane)->Attach(&context);
    auto stream = stub->Sample(&context);
    while (!stop.load()) {
      if (!stream->Write(refs) || !stream->Read(&response)) {
        ++wrong;
        return;
      }
      check();
    }
    stream->WritesDone();
    if (!stream->Finish().ok()) ++wrong;
  });

  constexpr int kKills = 200;
  int killed_streaming = 0;
  for (int i = 0; i < kKills; ++i) {
    int out[2];
    ASSERT_EQ(pipe2(out, O_CLOEXEC), 0);
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      dup2(out[1], 1);
      execl(SHM_KILL_CHILD, SHM_KILL_CHILD, socket_path.c_str(), server.unix_target().c_str(),
            control ? "control" : static_cast<char*>(nullptr), static_cast<char*>(nullptr));
      _exit(127);
    }
    close(out[1]);
    char line[32] = {};
    const ssize_t n = read(out[0], line, sizeof(line) - 1);  // "streaming": answers flow, steps are in flight
    if (n > 0 && std::strncmp(line, "streaming", 9) == 0) ++killed_streaming;
    kill(pid, SIGKILL);
    int wstatus = 0;
    waitpid(pid, &wstatus, 0);
    close(out[0]);
  }
  EXPECT_EQ(killed_streaming, kKills) << "a child did not reach the streaming state";
  stop = true;
  survivor.join();
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_GT(answered.load(), 0);
  // The server is up, answers a fresh bytes request as before, and only the survivor's region is mapped; once
  // it goes, none is, and no stream slot is left taken.
  EXPECT_EQ(Once(server.unix_target(), bytes, nullptr, &status).SerializeAsString(), expected);
  EXPECT_TRUE(WaitFor([&] { return Metric(server, "samplerd_shm_regions_mapped") == 1; }, std::chrono::seconds(20)))
      << Metric(server, "samplerd_shm_regions_mapped");
  plane->reset();
  EXPECT_TRUE(WaitFor([&] { return Metric(server, "samplerd_shm_regions_mapped") == 0; }, std::chrono::seconds(20)));
  EXPECT_EQ(Metric(server, "samplerd_shm_mapped_bytes"), 0);
  EXPECT_EQ(Metric(server, "samplerd_shm_clients"), 0);
  EXPECT_EQ(Metric(server, "samplerd_shm_regions"), 0);
  EXPECT_TRUE(WaitFor([&] { return Metric(server, "samplerd_active_streams") == 0; }, std::chrono::seconds(20)));
}

TEST_F(ShmServerTest, KillingClientsMidStreamTwoHundredTimesLeavesNothingMappedAndOthersServed) {
  KillClientsMidStep(*server_, socket_path_, /*control=*/false);
  EXPECT_EQ(server_->Terminate(), 0);
}

TEST_F(ShmServerTest, KillingControlSocketClientsMidStepTwoHundredTimesLeavesNothingMappedAndOthersServed) {
  KillClientsMidStep(*server_, socket_path_, /*control=*/true);
  EXPECT_EQ(server_->Terminate(), 0);
}

// The steps of `request` with their server_micros cleared (the one field that is a measurement).
v1::SampleResponse WithoutTimes(v1::SampleResponse response) {
  for (v1::StepResult& r : *response.mutable_results()) r.clear_server_micros();
  return response;
}

// Good steps and rejected ones (each failure a different field), all with explicit seeds.
v1::SampleRequest MixedRequest(const ShmPlane& plane) {
  v1::SampleRequest bytes, request;
  MakeSteps(4, &plane, &bytes, &request);
  const int64_t shape[] = {kVocab};
  auto add = [&](const std::string& id) {
    v1::Step* step = request.add_steps();
    *step = request.steps(0);
    step->set_sequence_id(id);
    return step;
  };
  add("misaligned")->mutable_logits_ref()->set_offset(2);                         // logits_ref.offset
  add("past-the-end")->mutable_logits_ref()->set_offset(plane.size());            // logits_ref.offset
  add("unknown-region")->mutable_logits_ref()->set_region(std::string(32, 'a'));  // logits_ref.region
  add("no-dtype")->mutable_logits_ref()->set_dtype(v1::DTYPE_UNSPECIFIED);        // logits.dtype
  *add("both")->mutable_logits() = bytes.steps(0).logits();                       // logits_ref
  add("long-id")->set_sequence_id(std::string(300, 'x'));                         // sequence_id
  v1::Step* top = add("too-many-top");
  top->set_top_logprobs(1000);  // top_logprobs
  v1::Step* overflow = add("overflow");
  overflow->mutable_logits_ref()->clear_shape();
  for (int i = 0; i < 4; ++i) overflow->mutable_logits_ref()->add_shape(int64_t{1} << 40);  // logits_ref.shape
  plane.FillRef(0, v1::DTYPE_F32, shape, add("s0")->mutable_logits_ref());                  // step 0 again
  return request;
}

TEST_F(ShmServerTest, StepsOnTheControlSocketAnswerByteForByteAsOnTheSampleRpc) {
  absl::StatusOr<std::unique_ptr<ShmPlane>> plane = ShmPlane::Connect(socket_path_, 4 * kVocab * 4, "control");
  ASSERT_TRUE(plane.ok()) << plane.status();
  const v1::SampleRequest request = MixedRequest(**plane);
  const double steps_before = Metric(*server_, "samplerd_step_core_seconds_count");

  grpc::Status status;
  const v1::SampleResponse by_rpc = Once(server_->unix_target(), request, plane->get(), &status);
  ASSERT_TRUE(status.ok()) << status.error_message();
  v1::SampleResponse by_control;
  ASSERT_TRUE((*plane)->Sample(request, &by_control).ok());
  EXPECT_EQ(WithoutTimes(by_control).SerializeAsString(), by_rpc.SerializeAsString());

  // Spot checks that the comparison compares something: answers, and each error under its own field.
  ASSERT_EQ(by_control.results_size(), request.steps_size());
  std::vector<std::string> fields;
  for (const v1::StepResult& r : by_control.results()) fields.push_back(r.has_error() ? r.error().field() : "ok");
  EXPECT_THAT(fields, ::testing::ElementsAre("ok", "ok", "ok", "ok", "logits_ref.offset", "logits_ref.offset",
                                             "logits_ref.region", "logits.dtype", "logits_ref", "sequence_id",
                                             "top_logprobs", "logits_ref.shape", "ok"));
  EXPECT_EQ(by_control.results(12).token(), by_control.results(0).token());  // same sequence, step, seed, logits

  // Asked again on the same connection: the same draws. Both paths fed the same step metrics.
  v1::SampleResponse again;
  ASSERT_TRUE((*plane)->Sample(request, &again).ok());
  EXPECT_EQ(WithoutTimes(again).SerializeAsString(), by_rpc.SerializeAsString());
  EXPECT_EQ(Metric(*server_, "samplerd_step_core_seconds_count") - steps_before, 3 * request.steps_size());
  EXPECT_EQ(Metric(*server_, "samplerd_active_streams"), 1);  // the control connection is a stream
  plane->reset();
  EXPECT_TRUE(WaitFor([&] { return Metric(*server_, "samplerd_active_streams") == 0; }, std::chrono::seconds(10)));
}

TEST(ShmControlSteps, KeepTheLimitsOfTheSampleRpc) {
  const std::string socket_path = ShmSocketPath();
  std::unique_ptr<ServerProcess> server =
      ServerProcess::Start({"--shm_socket", socket_path, "--max_steps_per_request", "4", "--max_streams", "1"});
  ASSERT_NE(server, nullptr);
  absl::StatusOr<std::unique_ptr<ShmPlane>> plane = ShmPlane::Connect(socket_path, 5 * kVocab * 4, "limits");
  ASSERT_TRUE(plane.ok()) << plane.status();
  v1::SampleRequest bytes, five;
  MakeSteps(5, plane->get(), &bytes, &five);

  // Over --max_steps_per_request: the request is refused with the status that would end a Sample stream.
  grpc::Status rpc_status;
  Once(server->unix_target(), five, plane->get(), &rpc_status);
  EXPECT_EQ(rpc_status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  v1::SampleResponse response;
  absl::Status status = (*plane)->Sample(five, &response);
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(status.message(), rpc_status.error_message());
  // The connection stays usable.
  v1::SampleRequest four = five;
  four.mutable_steps()->RemoveLast();
  ASSERT_TRUE((*plane)->Sample(four, &response).ok());
  EXPECT_EQ(response.results_size(), 4);

  // The connection holds the one --max_streams slot: a Sample stream and a second control client are refused.
  auto stub = v1::Sampler::NewStub(grpc::CreateChannel(server->unix_target(), grpc::InsecureChannelCredentials()));
  {
    grpc::ClientContext context;
    auto stream = stub->Sample(&context);
    stream->WritesDone();
    EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  }
  absl::StatusOr<std::unique_ptr<ShmPlane>> second = ShmPlane::Connect(socket_path, 5 * kVocab * 4, "second");
  ASSERT_TRUE(second.ok()) << second.status();
  v1::SampleRequest second_bytes, one;
  MakeSteps(1, second->get(), &second_bytes, &one);
  status = (*second)->Sample(one, &response);
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(status.message()), HasSubstr("--max_streams"));
  // Once the first closes, its slot is free.
  plane->reset();
  EXPECT_TRUE(WaitFor([&] { return (*second)->Sample(one, &response).ok(); }, std::chrono::seconds(10)));

  // A request over the control socket's packet size is refused by the client before it is sent, and by the
  // server when a client sends it anyway; either way the connection stays usable.
  v1::SampleRequest huge = one;
  for (int i = 0; i < 60000; ++i) huge.mutable_steps(0)->add_recent_tokens(100000);
  status = (*second)->Sample(huge, &response);
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(status.message()), HasSubstr("131072"));
  EXPECT_TRUE((*second)->Sample(one, &response).ok());
  absl::StatusOr<int> raw = client::ShmConnect(socket_path);
  ASSERT_TRUE(raw.ok()) << raw.status();
  v1::ShmControlRequest oversized;
  *oversized.mutable_sample() = huge;
  const std::string wire = oversized.SerializeAsString();
  ASSERT_GT(wire.size(), client::kShmMaxPacketBytes);
  ASSERT_EQ(send(*raw, wire.data(), wire.size(), 0), static_cast<ssize_t>(wire.size()));
  std::string answer(client::kShmMaxPacketBytes, '\0');
  const ssize_t n = recv(*raw, answer.data(), answer.size(), 0);
  ASSERT_GT(n, 0);
  v1::ShmControlResponse refused;
  ASSERT_TRUE(refused.ParseFromArray(answer.data(), static_cast<int>(n)));
  EXPECT_EQ(refused.code(), 8);
  EXPECT_THAT(refused.message(), HasSubstr("at most 131072 bytes"));
  close(*raw);
  EXPECT_EQ(server->Terminate(), 0);
}

// A client over --shm_max_clients sends its register at once, before or after the server answered and closed the
// connection: either way it reads RESOURCE_EXHAUSTED, not a reset connection.
TEST(ShmControlSteps, AClientOverTheConnectionLimitIsToldSo) {
  const std::string socket_path = ShmSocketPath();
  std::unique_ptr<ServerProcess> server = ServerProcess::Start({"--shm_socket", socket_path, "--shm_max_clients", "1"});
  ASSERT_NE(server, nullptr);
  absl::StatusOr<std::unique_ptr<ShmPlane>> holder = ShmPlane::Connect(socket_path, 4096, "holder");
  ASSERT_TRUE(holder.ok()) << holder.status();
  for (int attempt = 0; attempt < 50; ++attempt) {
    absl::StatusOr<std::unique_ptr<ShmPlane>> extra = ShmPlane::Connect(socket_path, 4096, "extra");
    ASSERT_FALSE(extra.ok());
    EXPECT_EQ(extra.status().code(), absl::StatusCode::kResourceExhausted)
        << "attempt " << attempt << ": " << extra.status();
  }
  EXPECT_EQ(server->Terminate(), 0);
}

// Kills what FillTheThreadsOf holds and reaps it.
void ReleaseThreads(pid_t filler) {
  kill(-filler, SIGKILL);
  while (waitpid(-filler, nullptr, 0) > 0) {
  }
  prctl(PR_SET_CHILD_SUBREAPER, 0);
}

// Forks processes as `uid` under RLIMIT_NPROC `limit` until the user has `limit` processes and threads, then holds
// them until killed (by process group: the returned pid). Returns -1 when the fork or the wait failed.
pid_t FillTheThreadsOf(uid_t uid, rlim_t limit) {
  int ready[2];
  if (pipe2(ready, O_CLOEXEC) != 0) return -1;
  // The held processes come back to this one to be reaped (ReleaseThreads): a zombie still counts against the
  // user's limit, and this machine's init may not reap.
  prctl(PR_SET_CHILD_SUBREAPER, 1);
  const pid_t filler = fork();
  if (filler < 0) return -1;
  if (filler == 0) {
    // Only async-signal-safe calls: the test process has gRPC threads.
    setpgid(0, 0);
    const struct rlimit cap = {limit, limit};
    if (setgid(uid) != 0 || setuid(uid) != 0 || setrlimit(RLIMIT_NPROC, &cap) != 0) _exit(1);
    while (true) {
      const pid_t held = fork();
      if (held == 0) {
        pause();
        _exit(0);
      }
      if (held < 0) break;
    }
    (void)write(ready[1], "x", 1);
    pause();
    _exit(0);
  }
  close(ready[1]);
  char byte;
  const bool filled = read(ready[0], &byte, 1) == 1;
  close(ready[0]);
  if (!filled) {
    ReleaseThreads(filler);
    return -1;
  }
  return filler;
}

// The most descriptors one SCM_RIGHTS message carries (SCM_MAX_FD, unix(7)): the server takes them all, and holds
// one packet's worth over all connections at once (ShmControlServer::kMaxDescriptorsReceived).
constexpr int kScmMaxFd = 253;

// Each region keeps a descriptor, and gRPC 1.51's listener stops for good once an accept fails for lack of one:
// the plane takes at most half of the open-file limit, so clients that register all their limits allow leave the
// gRPC listeners room to accept.
TEST(ShmControlSteps, RegionsLeaveTheGrpcListenersHalfTheOpenFileLimit) {
  const std::string socket_path = ShmSocketPath();
  constexpr int kClients = 4;
  constexpr int kRegionsPerClient = 256;  // 1,024 regions allowed by the flags, with 1,024 descriptors in all
  std::unique_ptr<ServerProcess> server =
      ServerProcess::Start({"--shm_socket", socket_path, "--shm_max_clients", std::to_string(kClients),
                            "--shm_max_regions_per_client", std::to_string(kRegionsPerClient)},
                           "", {"/usr/bin/prlimit", "--nofile=1024:1024", "--"});
  ASSERT_NE(server, nullptr);
  std::vector<std::unique_ptr<RawClient>> clients;
  int registered = 0;
  int refused = 0;
  for (int c = 0; c < kClients; ++c) {
    clients.push_back(ConnectRaw(socket_path));
    ASSERT_NE(clients.back(), nullptr);
    for (int r = 0; r < kRegionsPerClient; ++r) {
      const int fd = memfd_create("limit", MFD_CLOEXEC | MFD_ALLOW_SEALING);
      ASSERT_GE(fd, 0);
      ASSERT_EQ(ftruncate(fd, 4096), 0);
      ASSERT_EQ(fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_SEAL), 0);
      v1::ShmControlRequest request;
      request.mutable_register_()->set_name("limit");
      absl::StatusOr<v1::ShmControlResponse> answer = client::ShmControlExchange(clients.back()->sock, request, fd);
      close(fd);
      ASSERT_TRUE(answer.ok()) << answer.status();
      if (answer->code() == 0) {
        ++registered;
      } else {
        ++refused;
        EXPECT_EQ(answer->code(), 8) << answer->message();
        EXPECT_THAT(answer->message(), HasSubstr("RLIMIT_NOFILE"));
      }
    }
  }
  EXPECT_GT(refused, 0);
  // Half the limit, less the connections (3 x --shm_max_clients) and the descriptors they may be closing.
  EXPECT_EQ(registered, 512 - 3 * kClients - kScmMaxFd);
  // New connections are still accepted.
  for (int i = 0; i < 20; ++i) {
    ASSERT_EQ(ListProfilesOnANewConnection(server->tcp_target()), "") << "connection " << i;
  }
  EXPECT_EQ(server->Terminate(), 0);
}

// A packet may carry SCM_MAX_FD (253) descriptors, all of which the server takes (so that it can close them
// safely): clients sending such packets on several connections at once must still leave the gRPC listeners the
// descriptors they need, since gRPC 1.51's listener stops for good once an accept fails for lack of one.
TEST(ShmControlSteps, PacketsFullOfDescriptorsLeaveTheGrpcListenersTheirDescriptors) {
  const std::string socket_path = ShmSocketPath();
  std::unique_ptr<ServerProcess> server =
      ServerProcess::Start({"--shm_socket", socket_path}, "", {"/usr/bin/prlimit", "--nofile=512:512", "--"});
  ASSERT_NE(server, nullptr);
  int pipe_ends[2];
  ASSERT_EQ(pipe2(pipe_ends, O_CLOEXEC), 0);
  const std::vector<int> many(kScmMaxFd, pipe_ends[0]);
  v1::ShmControlRequest request;
  request.mutable_register_();
  const std::string wire = request.SerializeAsString();
  std::atomic<bool> stop{false};
  std::atomic<int> answered{0};
  std::vector<std::thread> senders;
  for (int t = 0; t < 4; ++t) {
    senders.emplace_back([&] {
      std::unique_ptr<RawClient> raw = ConnectRaw(socket_path);
      if (raw == nullptr) return;
      v1::ShmControlResponse answer;
      while (!stop.load() && RawExchange(raw->sock, wire, many, &answer) > 0) answered.fetch_add(1);
    });
  }
  ASSERT_TRUE(WaitFor([&] { return answered.load() > 50; }, std::chrono::seconds(20)));
  // While the packets keep coming, new connections: each is an accept that would fail with the table full.
  for (int i = 0; i < 300; ++i) {
    ASSERT_EQ(ListProfilesOnANewConnection(server->tcp_target()), "") << "during the packets, connection " << i;
  }
  stop.store(true);
  for (std::thread& t : senders) t.join();
  for (int i = 0; i < 5; ++i) {
    ASSERT_EQ(ListProfilesOnANewConnection(server->tcp_target()), "") << "after the packets, connection " << i;
  }
  close(pipe_ends[0]);
  close(pipe_ends[1]);
  EXPECT_EQ(server->Terminate(), 0);
}

// Thread creation can fail (a pod's pids limit). RLIMIT_NPROC binds only an unprivileged user, so the server runs
// as nobody, which takes root to arrange.
TEST(ShmControlSteps, AServerOutOfThreadsRefusesANewClientAndStillDrains) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to run samplerd as an unprivileged user";
  constexpr uid_t kNobody = 65534;
  constexpr int kThreads = 64;
  const std::string socket_path = ShmSocketPath();
  // A copy nobody can reach: the checkout may be in a directory only root enters (CI's is made by mktemp -d).
  char dir[] = "/tmp/samplerd-nobody-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr) << std::strerror(errno);
  const std::filesystem::path binary = std::filesystem::path(dir) / "samplerd";
  std::filesystem::permissions(dir, std::filesystem::perms::owner_all | std::filesystem::perms::group_read |
                                        std::filesystem::perms::group_exec | std::filesystem::perms::others_read |
                                        std::filesystem::perms::others_exec);
  std::filesystem::copy_file(ServerProcess::BuiltBinary(), binary);
  // Under AddressSanitizer, the leak check at exit needs a thread of its own, which this test denies.
  const char* asan_options = std::getenv("ASAN_OPTIONS");
  const std::string no_leak_check =
      absl::StrCat("ASAN_OPTIONS=", asan_options != nullptr ? asan_options : "", ":detect_leaks=0");
  std::unique_ptr<ServerProcess> server =
      ServerProcess::Start({"--shm_socket", socket_path, "--workers", "1", "--drain_seconds", "5",
                            "--max_connection_age_grace_seconds", "5"},
                           "",
                           {"/usr/bin/env", no_leak_check, "/usr/bin/setpriv", "--reuid=65534", "--regid=65534",
                            "--clear-groups", "/usr/bin/prlimit", absl::StrCat("--nproc=", kThreads)},
                           binary.string());
  ASSERT_NE(server, nullptr);
  {
    absl::StatusOr<std::unique_ptr<ShmPlane>> first = ShmPlane::Connect(socket_path, 4096, "first");
    ASSERT_TRUE(first.ok()) << first.status();
  }
  const pid_t filler = FillTheThreadsOf(kNobody, kThreads);
  ASSERT_GT(filler, 0);
  absl::StatusOr<std::unique_ptr<ShmPlane>> late = ShmPlane::Connect(socket_path, 4096, "late");
  EXPECT_EQ(late.status().code(), absl::StatusCode::kResourceExhausted) << late.status();
  EXPECT_THAT(std::string(late.status().message()), HasSubstr("no thread"));
  EXPECT_EQ(server->Terminate(), 0);
  ReleaseThreads(filler);
  std::filesystem::remove_all(dir);
}

// CPU seconds (user + system) the process `pid` has used.
double CpuSeconds(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  // Fields after the command name, which is in parentheses and may hold spaces: utime and stime are the 12th and
  // 13th of them.
  std::istringstream rest(text.substr(text.rfind(')') + 2));
  std::string field;
  double ticks = 0;
  for (int i = 1; i <= 13 && rest >> field; ++i) {
    if (i >= 12) ticks += std::stod(field);
  }
  return ticks / static_cast<double>(sysconf(_SC_CLK_TCK));
}

// With every file descriptor of the server taken, a shared-memory client waits in the listen backlog: the server
// must not spin on the readable listening socket meanwhile, and must take the client once descriptors free.
TEST(ShmControlSteps, AServerOutOfDescriptorsWaitsForThemWithoutSpinning) {
  const std::string socket_path = ShmSocketPath();
  std::unique_ptr<ServerProcess> server = ServerProcess::Start({"--shm_socket", socket_path, "--workers", "1"});
  ASSERT_NE(server, nullptr);
  // RLIMIT_NOFILE bounds descriptor numbers, not their count: with the limit at the server's lowest free number,
  // every new descriptor fails with EMFILE while those it holds, inherited high numbers included, stay valid.
  const std::string fd_dir = "/proc/" + std::to_string(server->pid()) + "/fd";
  const auto lowest_free = [&] {
    std::set<int> numbers;
    for (const auto& entry : std::filesystem::directory_iterator(fd_dir)) {
      numbers.insert(std::stoi(entry.path().filename().string()));
    }
    rlim_t lowest = 0;
    while (numbers.count(static_cast<int>(lowest)) != 0) ++lowest;
    return lowest;
  };
  struct rlimit original {};
  ASSERT_EQ(prlimit(server->pid(), RLIMIT_NOFILE, nullptr, &original), 0) << std::strerror(errno);
  struct rlimit lowered = {lowest_free(), original.rlim_max};
  ASSERT_EQ(prlimit(server->pid(), RLIMIT_NOFILE, &lowered, nullptr), 0) << std::strerror(errno);
  // A descriptor the server held for a moment when the limit was set frees a lower number once closed: follow it
  // down until the lowest free number has stayed at or above the limit for half a second.
  for (int steady = 0, waited = 0; steady < 10 && waited < 200; ++waited) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    const rlim_t lowest = lowest_free();
    if (lowest < lowered.rlim_cur) {
      lowered.rlim_cur = lowest;
      ASSERT_EQ(prlimit(server->pid(), RLIMIT_NOFILE, &lowered, nullptr), 0) << std::strerror(errno);
      steady = 0;
    } else {
      ++steady;
    }
  }
  ASSERT_GE(lowest_free(), lowered.rlim_cur) << "the server's descriptors were not all taken";

  sockaddr_un unix_address{};
  unix_address.sun_family = AF_UNIX;
  std::strncpy(unix_address.sun_path, socket_path.c_str(), sizeof(unix_address.sun_path) - 1);
  const int waiting = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  ASSERT_GE(waiting, 0);
  ASSERT_EQ(connect(waiting, reinterpret_cast<const sockaddr*>(&unix_address), sizeof(unix_address)), 0)
      << std::strerror(errno);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const double before = CpuSeconds(server->pid());
  std::this_thread::sleep_for(std::chrono::seconds(1));
  const double used = CpuSeconds(server->pid()) - before;
  EXPECT_LT(used, 0.25) << "CPU seconds the server used in one idle second with a client in its backlog";

  ASSERT_EQ(prlimit(server->pid(), RLIMIT_NOFILE, &original, nullptr), 0) << std::strerror(errno);
  close(waiting);
  absl::StatusOr<std::unique_ptr<ShmPlane>> client = ShmPlane::Connect(socket_path, 4096, "after");
  EXPECT_TRUE(client.ok()) << client.status();
  client = absl::StatusOr<std::unique_ptr<ShmPlane>>();
  EXPECT_EQ(server->Terminate(), 0);
}

// A token file in a directory of its own, removed with it.
class TokenFile {
 public:
  explicit TokenFile(const std::string& token) {
    char dir[] = "/tmp/samplerd-shm-auth-XXXXXX";
    if (mkdtemp(dir) != nullptr) dir_ = dir;
    Write(token);
  }
  ~TokenFile() {
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }
  std::string path() const { return dir_ + "/token"; }
  void Write(const std::string& token) const { std::ofstream(path()) << token << "\n"; }

 private:
  std::string dir_;
};

// A server whose control socket requires `token` (--auth_token_file), started with `flags` besides.
struct TokenShmServer {
  explicit TokenShmServer(const std::string& token, std::vector<std::string> flags = {})
      : token_file(token), socket_path(ShmSocketPath()) {
    flags.insert(flags.end(), {"--shm_socket", socket_path, "--auth_token_file", token_file.path()});
    server = ServerProcess::Start(flags);
  }
  TokenFile token_file;
  std::string socket_path;
  std::unique_ptr<ServerProcess> server;
};

TEST(ShmControlSteps, NeedTheBearerTokenWhenTheServerHasOne) {
  TokenShmServer shm("s3cret-token");
  ASSERT_NE(shm.server, nullptr);

  // Without a token a connection gets neither a region nor steps: it holds no session, so no --shm_max_clients
  // slot (ShmControlAuth below).
  absl::StatusOr<std::unique_ptr<ShmPlane>> anonymous = ShmPlane::Connect(shm.socket_path, 2 * kVocab * 4, "anon");
  EXPECT_EQ(anonymous.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(std::string(anonymous.status().message()), HasSubstr("--auth_token_file"));
  std::unique_ptr<RawClient> raw = ConnectRaw(shm.socket_path);
  ASSERT_NE(raw, nullptr);
  v1::ShmControlRequest inline_step;
  v1::Tensor* logits = inline_step.mutable_sample()->add_steps()->mutable_logits();
  logits->set_dtype(v1::DTYPE_F32);
  logits->add_shape(4);
  logits->set_data(std::string(16, '\0'));
  ASSERT_TRUE(raw->Send(inline_step));
  v1::ShmControlResponse answer;
  ASSERT_TRUE(raw->Receive(&answer));
  EXPECT_EQ(answer.code(), 16) << answer.message();
  EXPECT_FALSE(answer.has_sample());
  v1::SampleResponse response;

  // A wrong token is refused at once.
  absl::StatusOr<std::unique_ptr<ShmPlane>> wrong =
      ShmPlane::Connect(shm.socket_path, 2 * kVocab * 4, "wrong", "not-the-token");
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kUnauthenticated);

  // With the token: the steps run, and answer as the Sample RPC does with the token.
  absl::StatusOr<std::unique_ptr<ShmPlane>> holder =
      ShmPlane::Connect(shm.socket_path, 2 * kVocab * 4, "holder", "s3cret-token");
  ASSERT_TRUE(holder.ok()) << holder.status();
  v1::SampleRequest held_bytes, held_refs;
  MakeSteps(2, holder->get(), &held_bytes, &held_refs);
  ASSERT_TRUE((*holder)->Sample(held_refs, &response).ok());
  auto stub = v1::Sampler::NewStub(grpc::CreateChannel(shm.server->unix_target(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  context.AddMetadata("authorization", "Bearer s3cret-token");
  v1::SampleResponse by_rpc;
  ASSERT_TRUE(stub->SampleOnce(&context, held_bytes, &by_rpc).ok());
  EXPECT_EQ(WithoutTimes(response).SerializeAsString(), WithoutTimes(by_rpc).SerializeAsString());
  EXPECT_EQ(shm.server->Terminate(), 0);
}

// How long the server gives a new connection to present a token (ShmControlServer::kAuthenticateWithin).
constexpr auto kAuthenticateWithin = std::chrono::seconds(3);

// Whether the server closed `sock` before `deadline` (an answer sent first is read and dropped).
bool ClosedBefore(int sock, std::chrono::steady_clock::time_point deadline) {
  char buffer[4096];
  for (;;) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    struct pollfd polled = {sock, POLLIN, 0};
    if (left.count() <= 0 || poll(&polled, 1, static_cast<int>(left.count())) <= 0) return false;
    if (recv(sock, buffer, sizeof(buffer), MSG_DONTWAIT) <= 0) return true;
  }
}

// With --auth_token_file a connection holds a --shm_max_clients slot only once it has authenticated, so
// connections that never present a token cannot shut out clients that do: past --shm_max_clients of them waiting,
// a new connection closes the oldest, and one that has not authenticated within kAuthenticateWithin is told so
// and closed.
TEST(ShmControlAuth, ConnectionsWithoutATokenNeitherTakeClientSlotsNorStayOpen) {
  TokenShmServer shm("s3cret-token", {"--shm_max_clients", "2"});
  ASSERT_NE(shm.server, nullptr);
  std::vector<std::unique_ptr<RawClient>> silent;
  for (int i = 0; i < 2; ++i) {
    silent.push_back(ConnectRaw(shm.socket_path));
    ASSERT_NE(silent.back(), nullptr);
  }
  const auto silent_since = std::chrono::steady_clock::now();

  std::vector<std::unique_ptr<ShmPlane>> planes;
  for (int i = 0; i < 2; ++i) {
    absl::StatusOr<std::unique_ptr<ShmPlane>> plane =
        ShmPlane::Connect(shm.socket_path, 2 * kVocab * 4, "holder", "s3cret-token");
    ASSERT_TRUE(plane.ok()) << "client " << i << " with the token: " << plane.status();
    planes.push_back(*std::move(plane));
  }
  EXPECT_EQ(Metric(*shm.server, "samplerd_shm_clients"), 2);
  // The oldest silent connection made room for the first client, well before its own deadline.
  EXPECT_TRUE(ClosedBefore(silent[0]->sock, silent_since + kAuthenticateWithin - std::chrono::milliseconds(500)));

  // The other one, with room to wait, is answered UNAUTHENTICATED after kAuthenticateWithin, and closed.
  const struct timeval wait = {10, 0};
  ASSERT_EQ(setsockopt(silent[1]->sock, SOL_SOCKET, SO_RCVTIMEO, &wait, sizeof(wait)), 0);
  v1::ShmControlResponse answer;
  ASSERT_TRUE(silent[1]->Receive(&answer));
  const auto waited = std::chrono::steady_clock::now() - silent_since;
  EXPECT_EQ(answer.code(), 16) << answer.message();
  EXPECT_THAT(answer.message(), HasSubstr("within 3000 ms"));
  EXPECT_GE(waited, kAuthenticateWithin - std::chrono::milliseconds(200));
  EXPECT_LT(waited, kAuthenticateWithin + std::chrono::seconds(2));
  EXPECT_TRUE(ClosedBefore(silent[1]->sock, std::chrono::steady_clock::now() + std::chrono::seconds(2)));

  // The clients with the token were served throughout.
  v1::SampleRequest bytes, refs;
  MakeSteps(2, planes[0].get(), &bytes, &refs);
  v1::SampleResponse response;
  EXPECT_TRUE(planes[0]->Sample(refs, &response).ok());
  EXPECT_EQ(shm.server->Terminate(), 0);
}

// A token removed from --auth_token_file (and reloaded by SIGHUP) stops working on a control connection that
// authenticated with it at its next request, as it does for the next gRPC call; the connection keeps its
// regions and works again once it presents a token in force.
TEST(ShmControlAuth, ATokenRevokedByAReloadIsRefusedAtTheConnectionsNextRequest) {
  TokenShmServer shm("old-token");
  ASSERT_NE(shm.server, nullptr);
  std::unique_ptr<RawClient> raw = ConnectRaw(shm.socket_path);
  ASSERT_NE(raw, nullptr);
  const std::string region = raw->Register(kVocab * 4, /*write=*/true, "Bearer old-token");
  ASSERT_FALSE(region.empty());
  raw->Write(0, 0, Gaussian(kVocab, 6));
  const v1::ShmControlRequest steps = LogitsSteps(region, 1, 0);
  v1::ShmControlResponse answer;
  ASSERT_TRUE(raw->Send(steps));
  ASSERT_TRUE(raw->Receive(&answer));
  ASSERT_EQ(answer.code(), 0) << answer.message();

  shm.token_file.Write("new-token");
  ASSERT_EQ(kill(shm.server->pid(), SIGHUP), 0);
  auto stub = v1::Sampler::NewStub(grpc::CreateChannel(shm.server->unix_target(), grpc::InsecureChannelCredentials()));
  const auto refused_on_grpc = [&] {
    grpc::ClientContext context;
    context.AddMetadata("authorization", "Bearer old-token");
    v1::SampleResponse ignored;
    return stub->SampleOnce(&context, v1::SampleRequest(), &ignored).error_code() == grpc::StatusCode::UNAUTHENTICATED;
  };
  ASSERT_TRUE(WaitFor(refused_on_grpc, std::chrono::seconds(10))) << "the reload did not take the old token away";

  ASSERT_TRUE(raw->Send(steps));
  ASSERT_TRUE(raw->Receive(&answer));
  EXPECT_EQ(answer.code(), 16) << answer.message();
  EXPECT_THAT(answer.message(), HasSubstr("no longer accepted"));
  EXPECT_FALSE(answer.has_sample());
  EXPECT_TRUE(raw->Register(4096, /*write=*/true).empty()) << "registered with a revoked token";

  v1::ShmControlRequest renewed = steps;
  renewed.set_authorization("Bearer new-token");
  ASSERT_TRUE(raw->Send(renewed));
  ASSERT_TRUE(raw->Receive(&answer));
  EXPECT_EQ(answer.code(), 0) << answer.message();
  ASSERT_EQ(answer.sample().results_size(), 1);
  EXPECT_FALSE(answer.sample().results(0).has_error()) << answer.sample().results(0).error().message();
  EXPECT_EQ(shm.server->Terminate(), 0);
}

// A reload that removes a connection's token leaves it kAuthenticateWithin to present an accepted one; one that
// stays silent is closed, and its session (its --shm_max_clients slot and its regions) goes with it.
TEST(ShmControlAuth, AConnectionWhoseTokenIsRevokedAndNotRenewedIsClosedAndFreesItsSlot) {
  TokenShmServer shm("old-token", {"--shm_max_clients", "1"});
  ASSERT_NE(shm.server, nullptr);
  absl::StatusOr<std::unique_ptr<ShmPlane>> holder =
      ShmPlane::Connect(shm.socket_path, kVocab * 4, "holder", "old-token");
  ASSERT_TRUE(holder.ok()) << holder.status();
  EXPECT_EQ(Metric(*shm.server, "samplerd_shm_clients"), 1);

  shm.token_file.Write("new-token");
  ASSERT_EQ(kill(shm.server->pid(), SIGHUP), 0);
  EXPECT_TRUE(WaitFor([&] { return Metric(*shm.server, "samplerd_shm_clients") == 0; }, std::chrono::seconds(15)))
      << "the connection with the revoked token kept its slot";
  EXPECT_EQ(Metric(*shm.server, "samplerd_shm_regions"), 0);
  absl::StatusOr<std::unique_ptr<ShmPlane>> renewed =
      ShmPlane::Connect(shm.socket_path, kVocab * 4, "renewed", "new-token");
  EXPECT_TRUE(renewed.ok()) << renewed.status();
  EXPECT_EQ(shm.server->Terminate(), 0);
}

// Connections that are opened and closed faster than the control thread serves them must not pile up: each one
// holds a descriptor and a thread until it is reaped, and a process out of descriptors stops gRPC's listener for
// good (docs/reliability.md, known gaps). With a token required, none of them ever holds a session.
TEST(ShmControlAuth, ConnectionsThatComeAndGoHoldABoundedNumberOfDescriptors) {
  TokenShmServer shm("s3cret-token", {"--shm_max_clients", "2"});
  ASSERT_NE(shm.server, nullptr);
  const std::string fd_dir = "/proc/" + std::to_string(shm.server->pid()) + "/fd";
  const auto descriptors = [&] {
    std::error_code error;
    auto it = std::filesystem::directory_iterator(fd_dir, error);
    return error ? 0 : static_cast<int>(std::distance(it, std::filesystem::directory_iterator()));
  };
  const int baseline = descriptors();
  std::atomic<bool> stop{false};
  std::vector<std::thread> flooders;
  for (int t = 0; t < 4; ++t) {
    flooders.emplace_back([&] {
      while (!stop.load()) {
        absl::StatusOr<int> sock = client::ShmConnect(shm.socket_path);
        if (sock.ok()) close(*sock);
      }
    });
  }
  int most = baseline;
  for (const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(3);
       std::chrono::steady_clock::now() < until;) {
    most = std::max(most, descriptors());
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  stop = true;
  for (std::thread& t : flooders) t.join();
  std::fprintf(stderr, "samplerd descriptors: %d before, at most %d during the flood\n", baseline, most);
  // 2 sessions + 2 x 2 waiting or ending connections, and room for gRPC's own.
  EXPECT_LT(most, baseline + 40);
  // The flood's connections still in the backlog are refused or joined first (a client past the cap is told to
  // retry); then a client with the token is served.
  absl::Status last;
  EXPECT_TRUE(WaitFor(
      [&] {
        absl::StatusOr<std::unique_ptr<ShmPlane>> plane =
            ShmPlane::Connect(shm.socket_path, kVocab * 4, "after", "s3cret-token");
        last = plane.status();
        return plane.ok();
      },
      std::chrono::seconds(10)))
      << last;
  EXPECT_EQ(shm.server->Terminate(), 0);
}

}  // namespace
}  // namespace samplerd
