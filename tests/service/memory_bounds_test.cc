// Memory amplification (issue 15): small or within-limit requests that could make samplerd allocate far more
// than they weigh. Each pattern runs against a fresh samplerd process, and the server's peak RSS (VmHWM in
// /proc/PID/status) must stay under the bound docs/reliability.md states for these flags:
//
//   --max_message_bytes 16 MiB, --workers 1:   peak RSS under kPeakBoundMiB (256 MiB) for every pattern.
//
// The patterns: attention of many one-element rows; a gzip-compressed request that inflates to 128 MiB (with and
// without a token); seed-0 steps with 32 KiB sequence ids; thousands of health Watch streams. Error messages
// that would quote a huge input are checked here too: they stay short, so each bad step is answered on its own.
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "clients/cpp/samplerd_client.h"
#include "clients/cpp/shm_plane.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "samplerd/v1/sampler.grpc.pb.h"
#include "tests/service/http2_frames.h"
#include "tests/service/server_process.h"

namespace samplerd {
namespace {

using ::samplerd::client::FillF32Tensor;
using ::samplerd::testing::ServerProcess;

constexpr int64_t kMaxMessageBytes = int64_t{16} << 20;
constexpr int64_t kPeakBoundMiB = 256;

std::vector<std::string> Flags(std::vector<std::string> extra = {}) {
  std::vector<std::string> flags = {"--max_message_bytes", std::to_string(kMaxMessageBytes), "--workers", "1"};
  flags.insert(flags.end(), extra.begin(), extra.end());
  return flags;
}

// A samplerd of Flags() whose --max_pending_request_bytes is `bytes`.
std::unique_ptr<ServerProcess> StartWithPendingBudget(int64_t bytes) {
  return ServerProcess::Start(Flags({"--max_pending_request_bytes", std::to_string(bytes)}));
}

int64_t PeakMiB(const ServerProcess& server) {
  const int64_t peak = server.StatusKiB("VmHWM") / 1024;
  std::fprintf(stderr, "samplerd peak RSS (VmHWM): %lld MiB\n", static_cast<long long>(peak));
  return peak;
}

std::unique_ptr<v1::Sampler::Stub> Stub(const ServerProcess& server) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(-1);  // responses echo every sequence_id
  return v1::Sampler::NewStub(grpc::CreateCustomChannel(server.tcp_target(), grpc::InsecureChannelCredentials(), args));
}

void SetLogits(v1::Step* step) {
  const int64_t shape[] = {4};
  FillF32Tensor({0.5f, 1.0f, -0.25f, 2.0f}, shape, step->mutable_logits());
}

TEST(MemoryBounds, AttentionOfManyOneElementRowsIsRefusedByRowsNotComputed) {
  std::unique_ptr<ServerProcess> server = ServerProcess::Start(Flags());
  ASSERT_NE(server, nullptr);
  // [1, 8M, 1] bf16: 16 MiB, under --max_attention_elements, 8M rows.
  v1::SampleRequest request;
  v1::Step* step = request.add_steps();
  step->set_sequence_id("rows");
  step->set_seed(1);
  SetLogits(step);
  constexpr int64_t kRows = int64_t{8} << 20;
  v1::Tensor* attention = step->mutable_attention();
  attention->set_dtype(v1::DTYPE_BF16);
  for (int64_t d : {int64_t{1}, kRows - 1024, int64_t{1}}) attention->add_shape(d);
  attention->mutable_data()->assign(static_cast<size_t>(kRows - 1024) * 2, '\0');
  ASSERT_LT(request.ByteSizeLong(), static_cast<size_t>(kMaxMessageBytes));
  auto stub = Stub(*server);
  for (int i = 0; i < 3; ++i) {
    grpc::ClientContext context;
    v1::SampleResponse response;
    const grpc::Status status = stub->SampleOnce(&context, request, &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
    ASSERT_EQ(response.results_size(), 1);
    EXPECT_EQ(response.results(0).error().code(), 8 /* RESOURCE_EXHAUSTED */);
    EXPECT_EQ(response.results(0).error().field(), "attention.shape");
    EXPECT_NE(response.results(0).error().message().find("rows"), std::string::npos);
  }
  // The largest short-row tensor within --max_attention_rows is computed, and costs by its elements.
  attention->clear_shape();
  for (int64_t d : {int64_t{64}, int64_t{1024}, int64_t{100}}) attention->add_shape(d);
  attention->mutable_data()->assign(64 * 1024 * 100 * 2, '\0');
  grpc::ClientContext context;
  v1::SampleResponse response;
  ASSERT_TRUE(stub->SampleOnce(&context, request, &response).ok());
  EXPECT_FALSE(response.results(0).has_error()) << response.results(0).error().message();
  EXPECT_LT(PeakMiB(*server), kPeakBoundMiB);
  EXPECT_EQ(server->Terminate(), 0);
}

// A request whose logits are 128 MiB of zeros, gzip-compressed by the client to well under 1 MiB. An uncompressed
// call with the accepted token is served afterwards.
void ExpectGzipBombRefused(const std::vector<std::string>& flags, bool send_token) {
  std::unique_ptr<ServerProcess> server = ServerProcess::Start(flags);
  ASSERT_NE(server, nullptr);
  v1::SampleRequest request;
  v1::Step* step = request.add_steps();
  step->set_sequence_id("bomb");
  step->mutable_logits()->set_dtype(v1::DTYPE_F32);
  step->mutable_logits()->add_shape(int64_t{32} << 20);
  step->mutable_logits()->mutable_data()->assign(size_t{128} << 20, '\0');
  auto stub = Stub(*server);
  for (int i = 0; i < 2; ++i) {
    grpc::ClientContext context;
    context.set_compression_algorithm(GRPC_COMPRESS_GZIP);
    if (send_token) context.AddMetadata("authorization", "Bearer good-token");
    v1::SampleResponse response;
    const grpc::Status status = stub->SampleOnce(&context, request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::UNIMPLEMENTED) << status.error_message();
  }
  // Uncompressed calls are still served.
  v1::SampleRequest small;
  step = small.add_steps();
  step->set_sequence_id("plain");
  SetLogits(step);
  grpc::ClientContext context;
  context.AddMetadata("authorization", "Bearer good-token");
  v1::SampleResponse response;
  EXPECT_TRUE(stub->SampleOnce(&context, small, &response).ok());
  EXPECT_LT(PeakMiB(*server), 64) << "nothing was inflated";
  EXPECT_EQ(server->Terminate(), 0);
}

TEST(MemoryBounds, GzipCompressedRequestIsRefusedBeforeItIsInflated) { ExpectGzipBombRefused(Flags(), false); }

TEST(MemoryBounds, GzipCompressedRequestWithTokenIsRefusedBeforeItIsInflated) {
  const std::string tokens = ::testing::TempDir() + "/memory_bounds_tokens_ok";
  std::ofstream(tokens) << "good-token\n";
  ExpectGzipBombRefused(Flags({"--auth_token_file", tokens}), true);
}

TEST(MemoryBounds, GzipCompressedRequestWithoutTokenIsRefusedBeforeItIsInflated) {
  const std::string tokens = ::testing::TempDir() + "/memory_bounds_tokens";
  std::ofstream(tokens) << "good-token\n";
  ExpectGzipBombRefused(Flags({"--auth_token_file", tokens}), false);
}

TEST(MemoryBounds, LongSequenceIdsAreRefusedAndDoNotFillTheSeedTable) {
  std::unique_ptr<ServerProcess> server = ServerProcess::Start(Flags());
  ASSERT_NE(server, nullptr);
  auto stub = Stub(*server);
  grpc::ClientContext context;
  auto stream = stub->Sample(&context);
  // 16 requests x 256 seed-0 steps with 32 KiB ids: 4096 ids, 128 MiB of keys if the table kept them.
  for (int r = 0; r < 16; ++r) {
    v1::SampleRequest request;
    for (int i = 0; i < 256; ++i) {
      v1::Step* step = request.add_steps();
      std::string id(32 << 10, 'a');
      const std::string n = std::to_string(r * 256 + i);
      id.replace(0, n.size(), n);
      step->set_sequence_id(id);
      SetLogits(step);
    }
    ASSERT_TRUE(stream->Write(request));
    v1::SampleResponse response;
    ASSERT_TRUE(stream->Read(&response));
    ASSERT_EQ(response.results_size(), 256);
    for (const v1::StepResult& result : response.results()) {
      ASSERT_EQ(result.error().code(), 3 /* INVALID_ARGUMENT */);
      ASSERT_EQ(result.error().field(), "sequence_id");
    }
  }
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());
  EXPECT_LT(PeakMiB(*server), 128);
  EXPECT_EQ(server->Terminate(), 0);
}

// A stream that once carried a large request and then goes idle must not keep that request's parsed buffers:
// four streams, each sent a 15 MiB request, then a small one, then left open, hold no more than one stream does.
TEST(MemoryBounds, AnIdleStreamDoesNotKeepItsLargestRequest) {
  std::unique_ptr<ServerProcess> server = ServerProcess::Start(Flags());
  ASSERT_NE(server, nullptr);
  auto stub = Stub(*server);
  v1::SampleRequest large, small;
  for (int i = 0; i < 60; ++i) {  // 60 steps of 64,000 logits: 15 MiB, under --max_message_bytes
    v1::Step* step = large.add_steps();
    step->set_sequence_id("large");
    step->set_seed(1);
    step->set_step(static_cast<uint64_t>(i));
    const int64_t shape[] = {64000};
    FillF32Tensor(std::vector<float>(64000, 0.5f), shape, step->mutable_logits());
  }
  ASSERT_LT(large.ByteSizeLong(), static_cast<size_t>(kMaxMessageBytes));
  v1::Step* step = small.add_steps();
  step->set_sequence_id("small");
  step->set_seed(1);
  SetLogits(step);

  struct Stream {
    grpc::ClientContext context;
    std::unique_ptr<grpc::ClientReaderWriter<v1::SampleRequest, v1::SampleResponse>> rpc;
  };
  std::vector<std::unique_ptr<Stream>> open;
  int64_t rss_one = 0;
  for (int s = 0; s < 4; ++s) {
    open.push_back(std::make_unique<Stream>());
    Stream& stream = *open.back();
    stream.rpc = stub->Sample(&stream.context);
    for (const v1::SampleRequest* request : {&large, &small}) {
      ASSERT_TRUE(stream.rpc->Write(*request));
      v1::SampleResponse response;
      ASSERT_TRUE(stream.rpc->Read(&response));
      ASSERT_EQ(response.results_size(), request->steps_size());
    }
    if (s == 0) rss_one = server->StatusKiB("VmRSS") / 1024;
  }
  const int64_t rss_four = server->StatusKiB("VmRSS") / 1024;
  std::fprintf(stderr, "samplerd RSS with one idle stream %lld MiB, with four %lld MiB\n",
               static_cast<long long>(rss_one), static_cast<long long>(rss_four));
  EXPECT_LT(rss_four - rss_one, 24) << "each idle stream kept its 15 MiB request";
  for (const std::unique_ptr<Stream>& stream : open) {
    stream->rpc->WritesDone();
    EXPECT_TRUE(stream->rpc->Finish().ok());
  }
  EXPECT_EQ(server->Terminate(), 0);
}

// Each stream keeps the parsed requests it ran (up to two, pipelined) to parse the next ones into, whether it is
// busy or idle; over all streams they are kept only up to 256 MiB, so --max_streams idle streams cannot hold
// gigabytes (each kept two of 4 MiB: 7 MB a stream, 2.2 GB for 300).
TEST(MemoryBounds, IdleStreamsKeepTheirParsedRequestsOnlyWithinABoundOverAllStreams) {
  std::unique_ptr<ServerProcess> server = ServerProcess::Start(Flags());
  ASSERT_NE(server, nullptr);
  std::vector<std::unique_ptr<v1::Sampler::Stub>> connections;  // --max_streams_per_connection is 100
  for (int c = 0; c < 2; ++c) {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);  // a connection per channel
    connections.push_back(v1::Sampler::NewStub(
        grpc::CreateCustomChannel(server->tcp_target(), grpc::InsecureChannelCredentials(), args)));
  }
  v1::SampleRequest request;  // one step of 750,000 logits: 3 MB, under the 4 MiB a stream keeps
  {
    v1::Step* step = request.add_steps();
    step->set_sequence_id("kept");
    step->set_seed(1);
    const int64_t shape[] = {750000};
    FillF32Tensor(std::vector<float>(750000, 0.5f), shape, step->mutable_logits());
  }
  struct Stream {
    grpc::ClientContext context;
    std::unique_ptr<grpc::ClientReaderWriter<v1::SampleRequest, v1::SampleResponse>> rpc;
  };
  constexpr int kStreams = 180;  // 540 MB if every stream kept one of its requests, and up to twice that
  const int64_t rss_before = server->StatusKiB("VmRSS") / 1024;
  std::vector<std::unique_ptr<Stream>> open;
  for (int s = 0; s < kStreams; ++s) {
    open.push_back(std::make_unique<Stream>());
    Stream& stream = *open.back();
    stream.rpc = connections[static_cast<size_t>(s % 2)]->Sample(&stream.context);
    ASSERT_TRUE(stream.rpc->Write(request));  // two in flight: the stream parses the second into a second message
    ASSERT_TRUE(stream.rpc->Write(request));
    for (int i = 0; i < 2; ++i) {
      v1::SampleResponse response;
      ASSERT_TRUE(stream.rpc->Read(&response));
      ASSERT_EQ(response.results_size(), 1);
      ASSERT_FALSE(response.results(0).has_error()) << response.results(0).error().message();
    }
  }
  const int64_t grown = server->StatusKiB("VmRSS") / 1024 - rss_before;
  std::fprintf(stderr, "samplerd RSS grew by %lld MiB for %d idle streams\n", static_cast<long long>(grown), kStreams);
  EXPECT_LT(grown, 400) << "the idle streams kept every request they parsed";
  for (const std::unique_ptr<Stream>& stream : open) {
    stream->rpc->WritesDone();
    EXPECT_TRUE(stream->rpc->Finish().ok());
  }
  EXPECT_EQ(server->Terminate(), 0);
}

// Unary calls are not Sample streams, so --max_streams does not count them, and each connection may carry
// --max_streams_per_connection of them: many connections of concurrent large SampleOnce calls. The requests waiting
// for the one worker hold their bytes only up to --max_pending_request_bytes; past it a request is answered at
// once, each step RESOURCE_EXHAUSTED, and dropped (or the call ends RESOURCE_EXHAUSTED when even that answer does
// not fit).
TEST(MemoryBounds, ConcurrentSampleOnceCallsPastThePendingBudgetAreRefusedStepByStep) {
  constexpr int64_t kPendingBytes = int64_t{64} << 20;
  std::unique_ptr<ServerProcess> server = StartWithPendingBudget(kPendingBytes);
  ASSERT_NE(server, nullptr);
  v1::SampleRequest request;
  for (int i = 0; i < 8; ++i) {  // 8 steps of 128,256 logits and 32 x 8,192 attention: 12 MiB
    v1::Step* step = request.add_steps();
    step->set_sequence_id("s" + std::to_string(i));
    step->set_seed(1);
    const int64_t vocab[] = {128256};
    FillF32Tensor(std::vector<float>(128256, 0.5f), vocab, step->mutable_logits());
    const int64_t heads[] = {32, 8192};
    FillF32Tensor(std::vector<float>(32 * 8192, 0.25f), heads, step->mutable_attention());
  }
  ASSERT_LT(request.ByteSizeLong(), static_cast<size_t>(kMaxMessageBytes));
  const grpc::Slice slice(request.SerializeAsString());
  const grpc::ByteBuffer wire(&slice, 1);  // one copy on this side, shared by every call

  constexpr int kConnections = 4;
  constexpr int kCallsPerConnection = 60;
  struct Call {
    grpc::ClientContext context;
    grpc::ByteBuffer request;
    grpc::ByteBuffer response;
    grpc::Status status;
  };
  std::mutex mu;
  std::condition_variable cv;
  int finished = 0;
  std::vector<std::unique_ptr<grpc::GenericStub>> stubs;
  std::vector<std::unique_ptr<Call>> calls;
  for (int c = 0; c < kConnections; ++c) {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);  // a connection per channel
    args.SetMaxReceiveMessageSize(-1);
    stubs.push_back(std::make_unique<grpc::GenericStub>(
        grpc::CreateCustomChannel(server->tcp_target(), grpc::InsecureChannelCredentials(), args)));
    for (int i = 0; i < kCallsPerConnection; ++i) {
      calls.push_back(std::make_unique<Call>());
      Call* call = calls.back().get();
      call->request = wire;
      call->context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
      stubs.back()->UnaryCall(&call->context, "/samplerd.v1.Sampler/SampleOnce", grpc::StubOptions(), &call->request,
                              &call->response, [&, call](grpc::Status status) {
                                std::lock_guard<std::mutex> lock(mu);
                                call->status = std::move(status);
                                ++finished;
                                cv.notify_all();
                              });
    }
  }
  {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return finished == static_cast<int>(calls.size()); });
  }
  int answered = 0, refused = 0;
  for (const std::unique_ptr<Call>& call : calls) {
    // A refused request's answer too must fit in the budget; when it does not, the call ends without one.
    if (call->status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) {
      EXPECT_NE(call->status.error_message().find("--max_pending_request_bytes"), std::string::npos);
      ++refused;
      continue;
    }
    ASSERT_TRUE(call->status.ok()) << call->status.error_message();
    v1::SampleResponse response;
    std::vector<grpc::Slice> slices;
    ASSERT_TRUE(call->response.Dump(&slices).ok());
    std::string bytes;
    for (const grpc::Slice& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
    ASSERT_TRUE(response.ParseFromString(bytes));
    ASSERT_EQ(response.results_size(), request.steps_size());
    const bool busy = response.results(0).has_error();
    for (const v1::StepResult& r : response.results()) {
      ASSERT_EQ(r.has_error(), busy) << "a request is answered or refused whole";
      if (busy) {
        EXPECT_EQ(r.error().code(), static_cast<int>(grpc::StatusCode::RESOURCE_EXHAUSTED));
        EXPECT_NE(r.error().message().find("--max_pending_request_bytes"), std::string::npos) << r.error().message();
      }
    }
    ++(busy ? refused : answered);
  }
  std::fprintf(stderr, "%d requests answered, %d refused\n", answered, refused);
  EXPECT_GT(answered, 0);
  EXPECT_GT(refused, 0) << "240 requests of 12 MiB for one worker never passed a budget of 64 MiB";
  // gRPC itself buffers the messages of concurrent calls while they arrive, before samplerd sees them
  // (docs/reliability.md, known gaps), so the peak is reported here and not bounded by the budget alone.
  PeakMiB(*server);

  // Every answered or refused request gave its bytes back: the whole budget is free again.
  grpc::ClientContext context;
  v1::SampleResponse response;
  ASSERT_TRUE(Stub(*server)->SampleOnce(&context, request, &response).ok());
  ASSERT_EQ(response.results_size(), request.steps_size());
  for (const v1::StepResult& r : response.results()) EXPECT_FALSE(r.has_error()) << r.error().message();
  EXPECT_EQ(server->Terminate(), 0);
}

// Nor its answers: a stream keeps one parsed answer per queued response to reuse, and the error answers of 4,096
// empty steps parse to about 1 MB. Forty streams, each sent four such requests at once and then left open, hold
// far less than forty times four of them.
TEST(MemoryBounds, AnIdleStreamDoesNotKeepItsLargestAnswers) {
  std::unique_ptr<ServerProcess> server = ServerProcess::Start(Flags());
  ASSERT_NE(server, nullptr);
  auto stub = Stub(*server);
  v1::SampleRequest empty_steps;
  for (int i = 0; i < 4096; ++i) empty_steps.add_steps();
  struct Stream {
    grpc::ClientContext context;
    std::unique_ptr<grpc::ClientReaderWriter<v1::SampleRequest, v1::SampleResponse>> rpc;
  };
  constexpr int kStreams = 40;
  std::vector<std::unique_ptr<Stream>> open;
  int64_t rss_one = 0;
  for (int s = 0; s < kStreams; ++s) {
    open.push_back(std::make_unique<Stream>());
    Stream& stream = *open.back();
    stream.rpc = stub->Sample(&stream.context);
    for (int i = 0; i < 4; ++i) ASSERT_TRUE(stream.rpc->Write(empty_steps));
    for (int i = 0; i < 4; ++i) {
      v1::SampleResponse response;
      ASSERT_TRUE(stream.rpc->Read(&response));
      ASSERT_EQ(response.results_size(), 4096);
    }
    if (s == 0) rss_one = server->StatusKiB("VmRSS") / 1024;
  }
  const int64_t rss_all = server->StatusKiB("VmRSS") / 1024;
  std::fprintf(stderr, "samplerd RSS with one idle stream %lld MiB, with %d %lld MiB\n",
               static_cast<long long>(rss_one), kStreams, static_cast<long long>(rss_all));
  EXPECT_LT(rss_all - rss_one, 2 * kStreams) << "each idle stream kept its parsed answers";
  for (const std::unique_ptr<Stream>& stream : open) {
    stream->rpc->WritesDone();
    EXPECT_TRUE(stream->rpc->Finish().ok());
  }
  EXPECT_EQ(server->Terminate(), 0);
}

// SampleOnce calls on a raw HTTP/2 connection that never lets the server send a message
// (SETTINGS_INITIAL_WINDOW_SIZE 0, no WINDOW_UPDATE): every answer waits on the server, and only a call that ends
// without one (its trailers alone) completes.
class UnreadCalls {
 public:
  // Connects to `target` and opens `calls` calls of `method` with `message` (serialized); ok() says whether that
  // worked. The message must fit in a stream's initial flow-control window.
  UnreadCalls(const std::string& target, const std::string& method, const std::string& message, int calls) {
    using namespace ::samplerd::testing;  // NOLINT: the frame helpers
    fd_ = ConnectTcp(target, std::chrono::seconds(1));
    if (fd_ < 0) return;
    const timeval read_timeout{0, 200 * 1000};  // what Pump waits for
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &read_timeout, sizeof(read_timeout));
    reader_ = std::make_unique<Http2Reader>(fd_);
    const std::string no_window("\x00\x04\x00\x00\x00\x00", 6);  // SETTINGS_INITIAL_WINDOW_SIZE = 0
    std::string bytes = Http2Preface() + Http2Frame(kHttp2Settings, 0, 0, no_window);
    std::string framed(5, '\0');  // gRPC's prefix: not compressed, then the length, big-endian
    for (int i = 0; i < 4; ++i) framed[1 + i] = static_cast<char>((message.size() >> (24 - 8 * i)) & 0xff);
    framed += message;
    constexpr size_t kMaxFrameBytes = 16384;  // HTTP/2's default SETTINGS_MAX_FRAME_SIZE
    for (int i = 0; i < calls; ++i) {
      const uint32_t stream = 1 + 2 * static_cast<uint32_t>(i);
      bytes += Http2Frame(kHttp2Headers, kHttp2EndHeaders, stream, LiteralHeaderBlock(GrpcCallHeaders(method)));
      for (size_t at = 0; at < framed.size(); at += kMaxFrameBytes) {
        const bool last = at + kMaxFrameBytes >= framed.size();
        bytes += Http2Frame(kHttp2Data, last ? kHttp2EndStream : 0, stream, framed.substr(at, kMaxFrameBytes));
      }
    }
    sent_ = write(fd_, bytes.data(), bytes.size()) == static_cast<ssize_t>(bytes.size());
  }
  ~UnreadCalls() { Close(); }

  bool ok() const { return fd_ >= 0 && sent_; }
  void Close() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }

  // Reads what the server sent for up to 200 ms (acknowledging its SETTINGS); returns the calls ended so far.
  int Pump() {
    if (fd_ >= 0) reader_->ReadOnce();  // the read timeout
    return reader_ == nullptr ? 0 : reader_->ended_streams();
  }

 private:
  int fd_ = -1;
  bool sent_ = false;
  std::unique_ptr<::samplerd::testing::Http2Reader> reader_;
};

// A client that never reads its answers makes the server hold them, and an answer can be 60 times its request (the
// error answers of 4,096 empty steps: 512 KB for an 8 KB request). The answers count against
// --max_pending_request_bytes until written: past it, a call ends RESOURCE_EXHAUSTED without an answer, other
// clients are refused too, and the budget comes back whole when the connection goes.
TEST(MemoryBounds, AnswersNobodyReadsAreHeldOnlyWithinThePendingBudget) {
  constexpr int64_t kPendingBytes = int64_t{4} << 20;
  std::unique_ptr<ServerProcess> server = StartWithPendingBudget(kPendingBytes);
  ASSERT_NE(server, nullptr);
  v1::SampleRequest empty_steps;
  for (int i = 0; i < 4096; ++i) empty_steps.add_steps();
  // Its answer, read: 4,096 errors.
  size_t answer_bytes = 0;
  {
    grpc::ClientContext context;
    v1::SampleResponse response;
    ASSERT_TRUE(Stub(*server)->SampleOnce(&context, empty_steps, &response).ok());
    answer_bytes = response.ByteSizeLong();
  }
  ASSERT_GT(answer_bytes, 10 * empty_steps.ByteSizeLong());
  // 2 connections of 100 unread calls: 20 MB and more of answers if all were held. The budget holds what fits
  // (and the first whatever its size); every other call must end without its answer.
  constexpr int kCalls = 100;
  const int most_held = static_cast<int>(kPendingBytes / static_cast<int64_t>(answer_bytes)) + 1;
  ASSERT_LT(most_held, kCalls);
  std::vector<std::unique_ptr<UnreadCalls>> connections;
  for (int c = 0; c < 2; ++c) {
    connections.push_back(std::make_unique<UnreadCalls>(server->tcp_target(), "/samplerd.v1.Sampler/SampleOnce",
                                                        empty_steps.SerializeAsString(), kCalls));
    ASSERT_TRUE(connections.back()->ok());
  }
  int ended_total = 0;
  for (const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
       ended_total < 2 * kCalls - most_held && std::chrono::steady_clock::now() < deadline;) {
    ended_total = 0;
    for (const auto& connection : connections) ended_total += connection->Pump();
  }
  std::fprintf(stderr, "%d of %d unread calls of %zu-byte answers ended without an answer\n", ended_total, 2 * kCalls,
               answer_bytes);
  EXPECT_GE(ended_total, 2 * kCalls - most_held);
  EXPECT_LT(PeakMiB(*server), kPeakBoundMiB);

  // With the budget full of answers nobody reads, a 1 MiB request is refused rather than taken on: step by step,
  // or the whole call when even that answer does not fit.
  v1::SampleRequest large;
  {
    v1::Step* step = large.add_steps();
    const int64_t vocab[] = {262144};
    FillF32Tensor(std::vector<float>(262144, 0.5f), vocab, step->mutable_logits());
  }
  const auto call = [&](grpc::StatusCode* code) {
    grpc::ClientContext context;
    v1::SampleResponse response;
    const grpc::Status status = Stub(*server)->SampleOnce(&context, large, &response);
    *code = status.error_code();
    if (status.ok() && response.results_size() == 1 && response.results(0).has_error()) {
      *code = static_cast<grpc::StatusCode>(response.results(0).error().code());
    }
  };
  grpc::StatusCode code = grpc::StatusCode::OK;
  call(&code);
  EXPECT_EQ(code, grpc::StatusCode::RESOURCE_EXHAUSTED);
  for (const auto& connection : connections) connection->Close();
  // The connections' calls end with them, and give their answers' bytes back.
  for (int attempt = 0; attempt < 100; ++attempt) {
    call(&code);
    if (code == grpc::StatusCode::OK) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(code, grpc::StatusCode::OK) << "the budget did not come back when the unread calls ended";
  EXPECT_EQ(server->Terminate(), 0);
}

TEST(MemoryBounds, HealthWatchStreamsPastTheLimitAreRefused) {
  constexpr int kLimit = 16;
  std::unique_ptr<ServerProcess> server = ServerProcess::Start(Flags({"--max_health_watches", std::to_string(kLimit)}));
  ASSERT_NE(server, nullptr);
  auto channel = grpc::CreateChannel(server->tcp_target(), grpc::InsecureChannelCredentials());
  auto health = grpc::health::v1::Health::NewStub(channel);
  // 10,000 watches in batches of 500, each batch's refusals awaited: held, they would take ~180 MiB.
  constexpr int kBatch = 500;
  constexpr int kWatches = 20 * kBatch;
  struct Watch {
    grpc::ClientContext context;
    grpc::Status status;
    std::unique_ptr<grpc::ClientAsyncReader<grpc::health::v1::HealthCheckResponse>> reader;
  };
  grpc::CompletionQueue cq;
  std::vector<std::unique_ptr<Watch>> watches;
  int refused = 0;
  int finished = 0;
  void* tag = nullptr;
  bool ok = false;
  for (int batch = 0; batch < kWatches / kBatch; ++batch) {
    for (int i = 0; i < kBatch; ++i) {
      auto w = std::make_unique<Watch>();
      const intptr_t index = static_cast<intptr_t>(watches.size());
      w->reader = health->PrepareAsyncWatch(&w->context, grpc::health::v1::HealthCheckRequest(), &cq);
      w->reader->StartCall(reinterpret_cast<void*>(2 * index));
      w->reader->Finish(&w->status, reinterpret_cast<void*>(2 * index + 1));
      watches.push_back(std::move(w));
    }
    const int expected = static_cast<int>(watches.size()) - kLimit;
    const auto deadline = std::chrono::system_clock::now() + std::chrono::seconds(30);
    while (finished < expected && cq.AsyncNext(&tag, &ok, deadline) == grpc::CompletionQueue::GOT_EVENT) {
      const intptr_t t = reinterpret_cast<intptr_t>(tag);
      if (t % 2 == 0) continue;  // StartCall done
      ++finished;
      if (watches[static_cast<size_t>(t / 2)]->status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) {
        ++refused;
      }
    }
    ASSERT_EQ(refused, expected) << "batch " << batch;
  }
  EXPECT_LT(PeakMiB(*server), 64);
  for (auto& w : watches) w->context.TryCancel();
  const auto deadline = std::chrono::system_clock::now() + std::chrono::seconds(30);
  while (finished < kWatches && cq.AsyncNext(&tag, &ok, deadline) == grpc::CompletionQueue::GOT_EVENT) {
    if (reinterpret_cast<intptr_t>(tag) % 2 == 1) ++finished;
  }
  EXPECT_EQ(finished, kWatches);
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
  // The cancelled watches give their slots back (as gRPC releases their calls).
  bool served = false;
  for (int attempt = 0; attempt < 50 && !served; ++attempt) {
    grpc::ClientContext context;
    auto reader = health->Watch(&context, grpc::health::v1::HealthCheckRequest());
    grpc::health::v1::HealthCheckResponse response;
    served = reader->Read(&response) && response.status() == grpc::health::v1::HealthCheckResponse::SERVING;
    context.TryCancel();
    reader->Finish();
    if (!served) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(served);
  EXPECT_EQ(server->Terminate(), 0);
}

TEST(MemoryBounds, AnErrorAboutAHugeShapeIsShortAndEachBadStepIsAnsweredAlone) {
  std::unique_ptr<ServerProcess> server = ServerProcess::Start(Flags());
  ASSERT_NE(server, nullptr);
  // Two steps whose logits.shape holds 5M ones (5 MB each on the wire): quoting them whole would make a 30 MB
  // response, over the message limit, and fail the call.
  v1::SampleRequest request;
  for (int s = 0; s < 2; ++s) {
    v1::Step* step = request.add_steps();
    step->set_sequence_id("shape-" + std::to_string(s));
    step->mutable_logits()->set_dtype(v1::DTYPE_F32);
    step->mutable_logits()->mutable_shape()->Resize(5000000, 1);
    step->mutable_logits()->set_data(std::string(4, '\0'));
  }
  v1::Step* good = request.add_steps();
  good->set_sequence_id("good");
  good->set_seed(7);
  SetLogits(good);
  auto stub = Stub(*server);
  grpc::ClientContext context;
  v1::SampleResponse response;
  const grpc::Status status = stub->SampleOnce(&context, request, &response);
  ASSERT_TRUE(status.ok()) << status.error_code() << " " << status.error_message().substr(0, 200);
  ASSERT_EQ(response.results_size(), 3);
  for (int s = 0; s < 2; ++s) {
    EXPECT_EQ(response.results(s).error().code(), 3 /* INVALID_ARGUMENT */);
    EXPECT_EQ(response.results(s).error().field(), "logits.shape");
    EXPECT_LT(response.results(s).error().message().size(), 1100u);
  }
  EXPECT_FALSE(response.results(2).has_error());
  EXPECT_LT(response.ByteSizeLong(), 4096u);
  EXPECT_EQ(server->Terminate(), 0);
}

// A unary call whose answer cannot be sent (its client opened no flow-control window) lasts until its connection
// goes. What it holds meanwhile is its answer, counted against --max_pending_request_bytes, and not the bytes of
// its request, which can be many times what they parse to (a field of 48 KB the schema does not define).
TEST(MemoryBounds, UnaryCallsWhoseAnswersCannotBeSentDoNotKeepTheirRequestsBytes) {
  const std::string unknown_bytes = std::string("\x7a", 1) + "\x80\x80\x03" + std::string(48 << 10, 'x');  // field 15
  for (const char* method : {"/samplerd.v1.Sampler/ListProfiles", "/samplerd.v1.Sampler/SampleOnce"}) {
    SCOPED_TRACE(method);
    std::unique_ptr<ServerProcess> server = ServerProcess::Start(Flags());
    ASSERT_NE(server, nullptr);
    const int64_t rss_before_kib = server->StatusKiB("VmRSS");
    constexpr int kConnections = 8;
    constexpr int kCalls = 100;  // --max_streams_per_connection
    std::vector<std::unique_ptr<UnreadCalls>> connections;
    for (int c = 0; c < kConnections; ++c) {
      connections.push_back(std::make_unique<UnreadCalls>(server->tcp_target(), method, unknown_bytes, kCalls));
      ASSERT_TRUE(connections.back()->ok());
    }
    // Every call is received once every byte is: wait until the server's RSS stops growing.
    int64_t rss_kib = 0;
    for (int round = 0; round < 50; ++round) {
      for (const auto& connection : connections) connection->Pump();
      const int64_t now = server->StatusKiB("VmRSS");
      if (round > 1 && now == rss_kib) break;
      rss_kib = now;
    }
    const int64_t grown_mib = (rss_kib - rss_before_kib) / 1024;
    std::fprintf(stderr, "%s: samplerd RSS grew by %lld MiB for %d calls of %zu-byte requests\n", method,
                 static_cast<long long>(grown_mib), kConnections * kCalls, unknown_bytes.size());
    EXPECT_LT(grown_mib, 24) << "the calls kept their requests' " << kConnections * kCalls * 48 / 1024 << " MiB";
    for (const auto& connection : connections) connection->Close();
    EXPECT_EQ(server->Terminate(), 0);
  }
}

// A parse turns a 2-byte empty step into a ~130-byte Step and a 2-byte unknown field into an entry of an
// unknown-field set: requests of nothing else are refused from their wire form, before they are parsed (a 64 MiB
// request of empty steps peaked at 4 GB).
TEST(MemoryBounds, RequestsThatParseToManyTimesTheirSizeAreRefusedBeforeTheParse) {
  // A message just under --max_message_bytes of one empty field, `tag`, over and over.
  const auto message_of = [](char tag) {
    std::string wire;
    for (int64_t i = 0; i < (kMaxMessageBytes - 64) / 2; ++i) wire += std::string{tag, '\0'};
    return wire;
  };
  const std::string empty_steps = message_of('\x0a');     // field 1, length-delimited, empty
  const std::string unknown_fields = message_of('\x10');  // field 2, varint 0
  struct Case {
    const char* method;
    const std::string* wire;
    const char* refusal;
  };
  for (const Case& c :
       {Case{"/samplerd.v1.Sampler/SampleOnce", &empty_steps, "steps: a request may carry at most"},
        Case{"/samplerd.v1.Sampler/SampleOnce", &unknown_fields, "fields that samplerd.v1.SampleRequest"},
        Case{"/samplerd.v1.Sampler/ListProfiles", &unknown_fields, "fields that samplerd.v1.ListProfilesRequest"}}) {
    SCOPED_TRACE(std::string(c.method) + " refused with \"" + c.refusal + "\"");
    std::unique_ptr<ServerProcess> server = ServerProcess::Start(Flags());
    ASSERT_NE(server, nullptr);
    grpc::GenericStub stub(grpc::CreateChannel(server->tcp_target(), grpc::InsecureChannelCredentials()));
    const grpc::Slice slice(*c.wire);
    const grpc::ByteBuffer request(&slice, 1);
    grpc::ByteBuffer response;
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    std::promise<grpc::Status> done;
    stub.UnaryCall(&context, c.method, grpc::StubOptions(), &request, &response,
                   [&](grpc::Status status) { done.set_value(std::move(status)); });
    const grpc::Status status = done.get_future().get();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << status.error_message();
    EXPECT_NE(status.error_message().find(c.refusal), std::string::npos) << status.error_message();
    EXPECT_LT(PeakMiB(*server), kPeakBoundMiB);
    EXPECT_EQ(server->Terminate(), 0);
  }
}

// A connection reuses what it parsed a control packet into, and its answer, for its next packet: connections that
// each sent one large request and then stay idle must not keep what it became. With --max_steps_per_request
// raised to allow them, 65,000 empty steps in 128 KiB parse to 8.8 MB, and their answers (each step's error) to as
// much again, which is then refused as larger than a packet.
TEST(MemoryBounds, IdleShmControlConnectionsDoNotKeepTheLargestRequestTheyParsed) {
  const std::string socket_path = "/tmp/samplerd-memory-bounds-" + std::to_string(getpid()) + ".sock";
  std::unique_ptr<ServerProcess> server =
      ServerProcess::Start(Flags({"--shm_socket", socket_path, "--max_steps_per_request", "65000"}));
  ASSERT_NE(server, nullptr);
  v1::ShmControlRequest empty_steps;
  for (int i = 0; i < 65000; ++i) empty_steps.mutable_sample()->add_steps();
  ASSERT_LE(empty_steps.ByteSizeLong(), client::kShmMaxPacketBytes);
  const int64_t rss_before_kib = server->StatusKiB("VmRSS");
  constexpr int kConnections = 24;
  std::vector<int> idle;
  for (int i = 0; i < kConnections; ++i) {
    absl::StatusOr<int> sock = client::ShmConnect(socket_path);
    ASSERT_TRUE(sock.ok()) << sock.status();
    idle.push_back(*sock);
    absl::StatusOr<v1::ShmControlResponse> answer = client::ShmControlExchange(*sock, empty_steps, -1);
    ASSERT_TRUE(answer.ok()) << answer.status();
    EXPECT_EQ(answer->code(), 8) << answer->message();
    EXPECT_NE(answer->message().find("the answer is"), std::string::npos) << answer->message();
  }
  const int64_t grown_mib = (server->StatusKiB("VmRSS") - rss_before_kib) / 1024;
  std::fprintf(stderr, "samplerd RSS grew by %lld MiB for %d idle connections\n", static_cast<long long>(grown_mib),
               kConnections);
  EXPECT_LT(grown_mib, 64) << "each idle connection keeps about 9 MiB when it keeps the request";
  for (int sock : idle) close(sock);
  EXPECT_EQ(server->Terminate(), 0);
}

}  // namespace
}  // namespace samplerd
