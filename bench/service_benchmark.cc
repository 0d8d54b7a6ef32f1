// The service's share of a request, without a network (issue 3's workloads S, L, XL, B):
//   BM_Request/<workload>/<workers>/<share>  StartRequest on a pool of that many workers (decode + core + encode
//                                    of every step, spread over the pool; a lone step runs on the caller,
//                                    TryRunHere), steps shared with an idle worker or not (--share_steps): B on 1
//                                    vs 2 workers is the pool's speed-up, S/L/XL on 2 workers share 1 vs 0 what
//                                    sharing a step gains; items_per_second = steps/s.
//   BM_PoolHop                       ParallelFor of one empty task: the cost of handing a request to a worker
//                                    and hearing back (a futex wake each way).
//   BM_ParseRequest/<workload>       protobuf parse of a serialized request (the copy of the tensors out of
//                                    gRPC's buffers that every server pays), and BM_SerializeRequest, the
//                                    client's.
// Run: build/bench/service_benchmark --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>

#include "benchmark/benchmark.h"
#include "clients/cpp/load_generator.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "service/request_wire.h"
#include "service/sampler_service.h"
#include "service/seed_table.h"
#include "service/worker_pool.h"
#include "spdlog/spdlog.h"

namespace samplerd {
namespace {

using client::Workload;

const Workload kWorkloads[] = {Workload::kS, Workload::kL, Workload::kXL, Workload::kB};

const v1::SampleRequest& Request(int index) {
  static v1::SampleRequest* cache[4] = {nullptr, nullptr, nullptr, nullptr};
  if (cache[index] == nullptr) {
    cache[index] = new v1::SampleRequest(client::BuildRequest(kWorkloads[index], v1::DTYPE_F32));
    for (int i = 0; i < cache[index]->steps_size(); ++i) {
      cache[index]->mutable_steps(i)->set_sequence_id("bench-" + std::to_string(i));
    }
  }
  return *cache[index];
}

std::unique_ptr<SamplerService> MakeService(int workers, bool share_steps = true) {
  spdlog::set_level(spdlog::level::warn);  // no start-up line per benchmark run
  SamplerService::Options options;
  options.config.workers = workers;
  options.config.share_steps = share_steps;
  options.profiles = ProfileRegistry::BuiltIn();
  return *SamplerService::Create(std::move(options));
}

// Blocks until StartRequest's `done`.
class Waiter {
 public:
  std::function<void(absl::Status)> Callback() {
    return [this](absl::Status) {
      std::lock_guard<std::mutex> lock(mu_);
      done_ = true;
      cv_.notify_one();
    };
  }
  void Wait() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return done_; });
    done_ = false;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
};

void BM_Request(benchmark::State& state) {
  const int index = static_cast<int>(state.range(0));
  const v1::SampleRequest& request = Request(index);
  state.SetLabel(std::string(client::WorkloadName(kWorkloads[index])));
  std::unique_ptr<SamplerService> service =
      MakeService(static_cast<int>(state.range(1)), /*share_steps=*/state.range(2) != 0);
  SeedTable seeds;
  v1::SampleResponse response;
  Waiter waiter;
  for (auto _ : state) {
    service->StartRequest(request, &seeds, &response, waiter.Callback());
    waiter.Wait();
  }
  state.SetItemsProcessed(state.iterations() * request.steps_size());
}
// Real time: the caller sleeps while the workers run.
BENCHMARK(BM_Request)->ArgsProduct({{0, 1, 2, 3}, {1, 2}, {0, 1}})->UseRealTime()->Unit(benchmark::kMicrosecond);

void BM_PoolHop(benchmark::State& state) {
  std::unique_ptr<WorkerPool> pool = *WorkerPool::Create({static_cast<int>(state.range(0))});
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  for (auto _ : state) {
    pool->ParallelFor(
        1, [](int, WorkerPool::WorkerState*) {},
        [&] {
          std::lock_guard<std::mutex> lock(mu);
          done = true;
          cv.notify_one();
        });
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return done; });
    done = false;
  }
}
BENCHMARK(BM_PoolHop)->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMicrosecond);

void BM_ParseRequest(benchmark::State& state) {
  const int index = static_cast<int>(state.range(0));
  const std::string bytes = Request(index).SerializeAsString();
  state.SetLabel(std::string(client::WorkloadName(kWorkloads[index])));
  v1::SampleRequest parsed;  // reused, as the server reuses its requests
  for (auto _ : state) benchmark::DoNotOptimize(parsed.ParseFromString(bytes));
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(bytes.size()));
}
BENCHMARK(BM_ParseRequest)->DenseRange(0, 3)->Unit(benchmark::kMicrosecond);

// What the service pays before each parse to refuse requests that would parse to many times their size.
void BM_CheckRequestWire(benchmark::State& state) {
  const int index = static_cast<int>(state.range(0));
  const std::string bytes = Request(index).SerializeAsString();
  state.SetLabel(std::string(client::WorkloadName(kWorkloads[index])));
  for (auto _ : state) {
    google::protobuf::io::ArrayInputStream wire(bytes.data(), static_cast<int>(bytes.size()));
    benchmark::DoNotOptimize(CheckRequestWire(*v1::SampleRequest::descriptor(), &wire, 4096));
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(bytes.size()));
}
BENCHMARK(BM_CheckRequestWire)->DenseRange(0, 3)->Unit(benchmark::kMicrosecond);

// What StartRequest pays to count a request against --max_pending_request_bytes.
void BM_RequestSpaceUsed(benchmark::State& state) {
  const int index = static_cast<int>(state.range(0));
  v1::SampleRequest parsed;
  parsed.ParseFromString(Request(index).SerializeAsString());
  state.SetLabel(std::string(client::WorkloadName(kWorkloads[index])));
  for (auto _ : state) benchmark::DoNotOptimize(parsed.SpaceUsedLong());
}
BENCHMARK(BM_RequestSpaceUsed)->DenseRange(0, 3)->Unit(benchmark::kMicrosecond);

// What a stream pays per answer to decide whether to keep its parsed form (kAnswerKeepBytes).
void BM_ResponseSpaceUsed(benchmark::State& state) {
  const int index = static_cast<int>(state.range(0));
  std::unique_ptr<SamplerService> service = MakeService(1);
  SeedTable seeds;
  v1::SampleResponse response;
  Waiter waiter;
  service->StartRequest(Request(index), &seeds, &response, waiter.Callback());
  waiter.Wait();
  state.SetLabel(std::string(client::WorkloadName(kWorkloads[index])));
  for (auto _ : state) benchmark::DoNotOptimize(response.SpaceUsedLong());
}
BENCHMARK(BM_ResponseSpaceUsed)->DenseRange(0, 3)->Unit(benchmark::kMicrosecond);

// A seed picked for each of 4,096 new sequences with seed 0, as for a request of that many.
void BM_SeedTableFreshSeeds(benchmark::State& state) {
  std::vector<std::string> ids;
  for (int i = 0; i < 4096; ++i) ids.push_back("sequence-" + std::to_string(i));
  for (auto _ : state) {
    SeedTable seeds;
    for (const std::string& id : ids) benchmark::DoNotOptimize(seeds.Resolve(id, 0));
  }
  state.SetItemsProcessed(state.iterations() * 4096);
}
BENCHMARK(BM_SeedTableFreshSeeds)->Unit(benchmark::kMicrosecond);

void BM_SerializeRequest(benchmark::State& state) {
  const int index = static_cast<int>(state.range(0));
  const v1::SampleRequest& request = Request(index);
  state.SetLabel(std::string(client::WorkloadName(kWorkloads[index])));
  std::string bytes;
  for (auto _ : state) {
    request.SerializeToString(&bytes);
    benchmark::DoNotOptimize(bytes.data());
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(bytes.size()));
}
BENCHMARK(BM_SerializeRequest)->DenseRange(0, 3)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace samplerd
