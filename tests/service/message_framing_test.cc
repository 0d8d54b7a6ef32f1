// CheckMessageFraming (service/message_framing.h) against a real samplerd: a message that carries gRPC's
// compressed flag on a call without a usable grpc-encoding ends the call with INTERNAL on every method, instead of
// being parsed as if it were plain. gRPC's clients cannot send such a frame, so the calls are made with curl over
// HTTP/2 (prior knowledge: samplerd's TCP listener is plaintext here), which reports the gRPC status it read from
// the headers or trailers.
#include <stdlib.h>
#include <sys/wait.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "clients/cpp/samplerd_client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "samplerd/v1/sampler.pb.h"
#include "tests/service/server_process.h"

namespace samplerd {
namespace {

using ::samplerd::testing::ServerProcess;
using ::samplerd::testing::ShellQuote;
using ::testing::HasSubstr;

// What curl saw of a gRPC call: the status and message from the headers/trailers, and the body.
struct RawCall {
  int grpc_status = -1;
  std::string grpc_message;
  std::string body;
};

// The SampleResponses in a response body of length-prefixed messages; fails the test on a malformed body.
std::vector<v1::SampleResponse> Responses(const std::string& body) {
  std::vector<v1::SampleResponse> responses;
  size_t at = 0;
  while (at + 5 <= body.size()) {
    uint32_t n = 0;
    for (int i = 1; i <= 4; ++i) n = (n << 8) | static_cast<unsigned char>(body[at + i]);
    EXPECT_LE(at + 5 + n, body.size()) << "a truncated response message";
    if (at + 5 + n > body.size()) break;
    EXPECT_TRUE(responses.emplace_back().ParseFromString(body.substr(at + 5, n)));
    at += 5 + n;
  }
  EXPECT_EQ(at, body.size());
  return responses;
}

// One length-prefixed gRPC message (compressed-flag byte, 4-byte big-endian length, bytes).
std::string Frame(bool compressed_flag, const std::string& message) {
  std::string frame(1, compressed_flag ? '\1' : '\0');
  const uint32_t n = static_cast<uint32_t>(message.size());
  for (int shift = 24; shift >= 0; shift -= 8) frame.push_back(static_cast<char>((n >> shift) & 0xff));
  return frame + message;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// POSTs `body` to `method` on `server` over HTTP/2 with `headers` added, as a gRPC client would.
RawCall Call(const ServerProcess& server, const std::string& method, const std::string& body,
             const std::vector<std::string>& headers = {}) {
  // Each test process its own directory: ctest runs these tests in parallel.
  static const std::string dir = [] {
    std::string pattern = ::testing::TempDir() + "/samplerd-framing-XXXXXX";
    const char* made = mkdtemp(pattern.data());
    EXPECT_NE(made, nullptr) << pattern << ": " << std::strerror(errno);
    return made == nullptr ? std::string("/tmp") : std::string(made);
  }();
  const std::string body_path = dir + "/framing_body.bin", headers_path = dir + "/framing_headers.txt",
                    out_path = dir + "/framing_out.bin";
  std::ofstream(body_path, std::ios::binary) << body;
  std::string command = "curl -sS --max-time 20 --noproxy '*' --http2-prior-knowledge -o " + ShellQuote(out_path) +
                        " -D " + ShellQuote(headers_path) + " -H 'content-type: application/grpc' -H 'te: trailers'";
  for (const std::string& h : headers) command += " -H '" + h + "'";
  command += " --data-binary @" + ShellQuote(body_path) + " http://" + server.tcp_target() + "/" + method;
  const int rc = std::system(command.c_str());
  EXPECT_TRUE(WIFEXITED(rc) && WEXITSTATUS(rc) == 0) << "curl failed (is curl with HTTP/2 installed?): " << command;
  RawCall call;
  std::ifstream in(headers_path);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.rfind("grpc-status: ", 0) == 0) call.grpc_status = std::stoi(line.substr(13));
    if (line.rfind("grpc-message: ", 0) == 0) call.grpc_message = line.substr(14);
  }
  call.body = ReadFile(out_path);
  return call;
}

// A request samplerd answers OK when it arrives as a plain message.
std::string ValidRequest() {
  v1::SampleRequest request;
  v1::Step* step = request.add_steps();
  step->set_sequence_id("framing");
  step->set_seed(7);
  const std::vector<float> logits = {1.0f, 2.0f, 0.5f, -1.0f};
  client::FillF32Tensor(logits, {4}, step->mutable_logits());
  return request.SerializeAsString();
}

class MessageFraming : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = ServerProcess::Start({"--workers", "1"});
    ASSERT_NE(server_, nullptr);
  }
  std::unique_ptr<ServerProcess> server_;
};

TEST_F(MessageFraming, APlainMessageIsAnswered) {
  for (const char* method : {"samplerd.v1.Sampler/SampleOnce", "samplerd.v1.Sampler/Sample"}) {
    const RawCall call = Call(*server_, method, Frame(false, ValidRequest()));
    EXPECT_EQ(call.grpc_status, 0) << method << ": " << call.grpc_message;
    const std::vector<v1::SampleResponse> responses = Responses(call.body);
    ASSERT_EQ(responses.size(), 1u) << method;
    ASSERT_EQ(responses[0].results_size(), 1) << method;
    EXPECT_FALSE(responses[0].results(0).has_error()) << method;
  }
  EXPECT_EQ(Call(*server_, "samplerd.v1.Sampler/ListProfiles", Frame(false, "")).grpc_status, 0);
}

TEST_F(MessageFraming, TheCompressedFlagWithoutEncodingIsInternalOnEveryMethod) {
  for (const char* method :
       {"samplerd.v1.Sampler/SampleOnce", "samplerd.v1.Sampler/Sample", "samplerd.v1.Sampler/ListProfiles"}) {
    const std::string message = std::string(method).find("ListProfiles") == std::string::npos ? ValidRequest() : "";
    const RawCall call = Call(*server_, method, Frame(true, message));
    EXPECT_EQ(call.grpc_status, 13) << method << " (INTERNAL)";
    EXPECT_THAT(call.grpc_message, HasSubstr("compressed flag")) << method;
    EXPECT_EQ(call.body, "") << method << " answers no message";
  }
}

TEST_F(MessageFraming, TheCompressedFlagWithIdentityOrAnUnknownEncodingIsInternal) {
  for (const char* encoding : {"identity", "br-unknown"}) {
    const RawCall call = Call(*server_, "samplerd.v1.Sampler/SampleOnce", Frame(true, ValidRequest()),
                              {std::string("grpc-encoding: ") + encoding});
    EXPECT_EQ(call.grpc_status, 13) << encoding;
    EXPECT_THAT(call.grpc_message, HasSubstr("compressed flag")) << encoding;
  }
}

TEST_F(MessageFraming, AStreamEndsAtTheFirstFlaggedMessageAfterAnsweringThePlainOnes) {
  // Two plain requests, then a flagged one: two answers, then INTERNAL.
  const std::string body = Frame(false, ValidRequest()) + Frame(false, ValidRequest()) + Frame(true, ValidRequest());
  const RawCall call = Call(*server_, "samplerd.v1.Sampler/Sample", body);
  EXPECT_EQ(call.grpc_status, 13);
  EXPECT_THAT(call.grpc_message, HasSubstr("compressed flag"));
  const std::vector<v1::SampleResponse> responses = Responses(call.body);
  ASSERT_EQ(responses.size(), 2u) << "the two plain requests were answered";
  for (const v1::SampleResponse& response : responses) {
    ASSERT_EQ(response.results_size(), 1);
    EXPECT_FALSE(response.results(0).has_error()) << response.results(0).error().message();
  }
}

}  // namespace
}  // namespace samplerd
