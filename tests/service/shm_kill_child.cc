// A model host that dies mid-stream, for shm_integration_test's kill tests: it registers a region on the control
// socket (argv[1]), opens a Sample stream on the gRPC target (argv[2]) with its session, keeps writing requests
// whose steps reference the region without waiting for answers, prints "streaming" once the first answer came
// back (so steps are in flight from then on), and never stops: the test SIGKILLs it. With argv[3] "control" it
// sends the requests on the control socket instead (ShmPlane::Sample), one after the other, a request in flight
// nearly all the time.
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "clients/cpp/shm_plane.h"
#include "grpcpp/grpcpp.h"
#include "samplerd/v1/sampler.grpc.pb.h"

int main(int argc, char** argv) {
  if (argc != 3 && !(argc == 4 && std::strcmp(argv[3], "control") == 0)) {
    std::fprintf(stderr, "usage: shm_kill_child SHM_SOCKET TARGET [control]\n");
    return 2;
  }
  constexpr int kVocab = 32000;
  constexpr int kSlots = 4;
  auto plane = samplerd::client::ShmPlane::Connect(argv[1], uint64_t{kSlots} * kVocab * 4, "kill-child");
  if (!plane.ok()) {
    std::fprintf(stderr, "%s\n", plane.status().ToString().c_str());
    return 1;
  }
  std::mt19937 rng(static_cast<uint32_t>(getpid()));
  std::normal_distribution<float> normal(0.0f, 2.0f);
  std::vector<float> logits(kVocab);
  samplerd::v1::SampleRequest request;
  for (int slot = 0; slot < kSlots; ++slot) {
    for (float& z : logits) z = normal(rng);
    samplerd::v1::Step* step = request.add_steps();
    step->set_sequence_id("victim-" + std::to_string(slot));
    step->set_seed(1);
    const int64_t shape[] = {kVocab};
    (*plane)->WriteF32(uint64_t{static_cast<uint64_t>(slot)} * kVocab * 4, logits, shape, step->mutable_logits_ref());
  }
  if (argc == 4) {
    samplerd::v1::SampleResponse response;
    for (uint64_t i = 0;; ++i) {
      for (samplerd::v1::Step& step : *request.mutable_steps()) step.set_step(i);
      if (!(*plane)->Sample(request, &response).ok()) return 1;
      if (i == 0) {
        std::printf("streaming\n");
        std::fflush(stdout);
      }
    }
  }
  auto stub = samplerd::v1::Sampler::NewStub(grpc::CreateChannel(argv[2], grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  (*plane)->Attach(&context);
  auto stream = stub->Sample(&context);
  // Answers are read on another thread so that the writes never wait for them.
  std::thread reader([&] {
    samplerd::v1::SampleResponse response;
    bool announced = false;
    while (stream->Read(&response)) {
      if (!announced) {
        std::printf("streaming\n");
        std::fflush(stdout);
        announced = true;
      }
    }
  });
  for (uint64_t i = 0;; ++i) {
    for (samplerd::v1::Step& step : *request.mutable_steps()) step.set_step(i);
    if (!stream->Write(request)) break;
  }
  reader.join();
  return 0;
}
