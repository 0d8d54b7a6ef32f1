// Soak test of samplerd (issue 7): many concurrent Sample streams of workload S (vocab 32000, attention
// [8, 1024], float32) against a real samplerd process, with random cancellations, for a long time.
//
// Passes (exit 0) when:
//   - no unexpected error: every answer has one result, for the step just sent, without StepResult.error; the
//     only non-OK stream status is CANCELLED, and only on streams this driver cancelled;
//   - answers come in order: with several requests in flight per stream, each answer echoes the sequence and
//     step of the oldest unanswered request; after a cancellation the last answered step is resent on the new
//     stream and must draw the same token (the draws are a function of (seed, sequence, step));
//   - the server's resident memory (VmRSS of /proc/PID/status, sampled every second) never exceeds its level at
//     the end of the warm-up by more than --rss_tolerance (10 %).
//
//   soak_driver --streams 64 --steps 2000                       # the full run (docs/reliability.md)
//   soak_driver --streams 64 --steps 2000 --max_seconds 100     # CI: stops each stream after 100 s
//
// It starts its own samplerd (tests/service/server_process.h), or uses --target with --server_pid.
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"
#include "grpcpp/grpcpp.h"
#include "samplerd/v1/sampler.grpc.pb.h"
#include "tests/service/server_process.h"

namespace samplerd::soak {
namespace {

using Clock = std::chrono::steady_clock;
using SampleStream = grpc::ClientReaderWriter<v1::SampleRequest, v1::SampleResponse>;

struct Flags {
  int streams = 64;
  int steps = 2000;
  double max_seconds = 0;             // 0 = no limit; else each stream stops after this long
  double warmup_seconds = 20;         // RSS baseline taken at this point
  double cancel_probability = 0.003;  // per step, per stream
  int pipeline = 2;                   // requests in flight per stream
  int vocab = 32000;
  int heads = 8;
  int kv_len = 1024;
  int channels = 8;  // separate HTTP/2 connections the streams are spread over
  double rss_tolerance = 0.10;
  std::string target;  // empty = start a samplerd
  int server_pid = 0;
  std::vector<std::string> server_args;
  std::string json_out;  // a summary as JSON, for docs/reliability.md
  uint32_t seed = 1;
};

int64_t ReadRssKiB(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoll(line.substr(6));
  }
  return -1;
}

// Precomputed payloads: a step's tensors are picked from these by (stream, step), so the client spends its
// time on the wire, not on random numbers.
struct Payloads {
  std::vector<std::string> logits;
  std::vector<std::string> attention;
};

Payloads MakePayloads(const Flags& f) {
  Payloads p;
  std::mt19937 rng(f.seed);
  for (int v = 0; v < 16; ++v) {
    // Alternate sharp and flat distributions so that every regime, and so every code path, is exercised.
    std::normal_distribution<float> normal(0.0f, 0.5f + 0.5f * static_cast<float>(v % 5));
    std::vector<float> logits(static_cast<size_t>(f.vocab));
    for (float& z : logits) z = normal(rng);
    if (v % 4 == 0) logits[static_cast<size_t>(v * 97 % f.vocab)] += 30.0f;
    p.logits.emplace_back(reinterpret_cast<const char*>(logits.data()), logits.size() * sizeof(float));
    std::vector<float> attention(static_cast<size_t>(f.heads) * f.kv_len);
    for (float& a : attention) a = normal(rng);
    if (v % 3 == 0) {
      for (int k = f.kv_len * 3 / 4; k < f.kv_len; ++k) attention[static_cast<size_t>(k)] = -INFINITY;  // masked
    }
    p.attention.emplace_back(reinterpret_cast<const char*>(attention.data()), attention.size() * sizeof(float));
  }
  return p;
}

struct Totals {
  std::atomic<int64_t> steps{0};
  std::atomic<int64_t> cancellations{0};
  std::atomic<int64_t> unexpected{0};
  std::atomic<int64_t> resent_checked{0};
  std::mutex mu;
  std::vector<std::string> errors;   // the first few unexpected errors
  std::vector<double> latencies_ms;  // per answered step, merged at the end

  void Unexpected(const std::string& what) {
    unexpected.fetch_add(1);
    std::lock_guard<std::mutex> lock(mu);
    if (errors.size() < 20) errors.push_back(what);
  }
};

class StreamWorker {
 public:
  StreamWorker(int index, const Flags& flags, const Payloads& payloads, v1::Sampler::Stub* stub, Totals* totals,
               Clock::time_point deadline)
      : index_(index),
        flags_(flags),
        payloads_(payloads),
        stub_(stub),
        totals_(totals),
        deadline_(deadline),
        rng_(flags.seed * 7919u + static_cast<uint32_t>(index)),
        id_("soak-" + std::to_string(index)) {}

  void Run() {
    std::vector<double> latencies;
    latencies.reserve(static_cast<size_t>(flags_.steps));
    std::uniform_real_distribution<double> unit(0.0, 1.0);
    uint64_t next_to_send = 0;  // next step index to write
    uint64_t next_answer = 0;   // step the next answer must be for
    Open();
    std::vector<Clock::time_point> sent_at(static_cast<size_t>(flags_.steps));
    while (next_answer < static_cast<uint64_t>(flags_.steps)) {
      if (flags_.max_seconds > 0 && Clock::now() > deadline_) break;
      // Keep `pipeline` requests in flight.
      bool broken = false;
      while (next_to_send < static_cast<uint64_t>(flags_.steps) &&
             next_to_send < next_answer + static_cast<uint64_t>(flags_.pipeline)) {
        sent_at[next_to_send] = Clock::now();
        if (!stream_->Write(Request(next_to_send))) {
          broken = true;
          break;
        }
        ++next_to_send;
      }
      if (!broken && unit(rng_) < flags_.cancel_probability) {
        // Cancel with requests in flight; the unanswered steps are resent on a new stream.
        context_->TryCancel();
        totals_->cancellations.fetch_add(1);
        v1::SampleResponse late;
        while (stream_->Read(&late)) Check(late, &next_answer, nullptr);
        const grpc::Status status = stream_->Finish();
        if (status.error_code() != grpc::StatusCode::CANCELLED && !status.ok()) {
          totals_->Unexpected(id_ + ": status " + std::to_string(status.error_code()) +
                              " after a cancel: " + status.error_message());
        }
        // Resend from the last answered step too: its answer on the new stream must be the same token.
        if (next_answer > 0) --next_answer;
        next_to_send = next_answer;
        Open();
        continue;
      }
      v1::SampleResponse response;
      if (broken || !stream_->Read(&response)) {
        const grpc::Status status = stream_->Finish();
        totals_->Unexpected(id_ + ": stream ended at step " + std::to_string(next_answer) + ": " +
                            std::to_string(status.error_code()) + " " + status.error_message());
        next_to_send = next_answer;
        Open();
        continue;
      }
      const uint64_t step = next_answer;
      Check(response, &next_answer, nullptr);
      latencies.push_back(std::chrono::duration<double, std::milli>(Clock::now() - sent_at[step]).count());
    }
    stream_->WritesDone();
    v1::SampleResponse extra;
    while (stream_->Read(&extra)) Check(extra, &next_answer, nullptr);
    const grpc::Status status = stream_->Finish();
    if (!status.ok()) totals_->Unexpected(id_ + ": final status " + status.error_message());
    std::lock_guard<std::mutex> lock(totals_->mu);
    totals_->latencies_ms.insert(totals_->latencies_ms.end(), latencies.begin(), latencies.end());
  }

 private:
  void Open() {
    context_ = std::make_unique<grpc::ClientContext>();
    stream_ = stub_->Sample(context_.get());
  }

  v1::SampleRequest Request(uint64_t step) {
    v1::SampleRequest request;
    v1::Step* s = request.add_steps();
    s->set_sequence_id(id_);
    s->set_step(step);
    s->set_seed(1000 + static_cast<uint64_t>(index_));
    const size_t pick = static_cast<size_t>((step * 31 + static_cast<uint64_t>(index_) * 7) % payloads_.logits.size());
    s->mutable_logits()->set_dtype(v1::DTYPE_F32);
    s->mutable_logits()->add_shape(flags_.vocab);
    s->mutable_logits()->set_data(payloads_.logits[pick]);
    s->mutable_attention()->set_dtype(v1::DTYPE_F32);
    s->mutable_attention()->add_shape(flags_.heads);
    s->mutable_attention()->add_shape(flags_.kv_len);
    s->mutable_attention()->set_data(payloads_.attention[(pick + step / 3) % payloads_.attention.size()]);
    // The tokens drawn so far, as a model host sends them: those of the steps certainly answered before this one
    // was first sent (so a resent step carries the same ones), the last 64.
    const size_t known = std::min(
        history_.size(), static_cast<size_t>(std::max<int64_t>(0, static_cast<int64_t>(step) + 1 - flags_.pipeline)));
    for (size_t i = known > 64 ? known - 64 : 0; i < known; ++i) s->add_recent_tokens(history_[i]);
    return request;
  }

  // Checks that `r` answers step *next_answer of this stream's sequence, then advances.
  void Check(const v1::SampleResponse& r, uint64_t* next_answer, void*) {
    const uint64_t want = *next_answer;
    if (r.results_size() != 1) {
      totals_->Unexpected(id_ + ": " + std::to_string(r.results_size()) + " results for one step");
      return;
    }
    const v1::StepResult& result = r.results(0);
    if (result.sequence_id() != id_ || result.step() != want) {
      totals_->Unexpected(id_ + ": answer for (" + result.sequence_id() + ", " + std::to_string(result.step()) +
                          ") where step " + std::to_string(want) + " was due: out of order");
      return;
    }
    if (result.has_error()) {
      totals_->Unexpected(id_ + ": step " + std::to_string(want) + " rejected: " + result.error().message());
    } else if (result.token() < 0 || result.token() >= flags_.vocab) {
      totals_->Unexpected(id_ + ": token " + std::to_string(result.token()) + " out of range");
    } else if (want == history_.size()) {
      history_.push_back(result.token());
    } else {
      // A step answered before its stream was cancelled, answered again on the new stream.
      totals_->resent_checked.fetch_add(1);
      if (history_[want] != result.token()) {
        totals_->Unexpected(id_ + ": step " + std::to_string(want) + " drew " + std::to_string(result.token()) +
                            " after drawing " + std::to_string(history_[want]));
      }
    }
    ++*next_answer;
    totals_->steps.fetch_add(1);
  }

  const int index_;
  const Flags& flags_;
  const Payloads& payloads_;
  v1::Sampler::Stub* const stub_;
  Totals* const totals_;
  const Clock::time_point deadline_;
  std::mt19937 rng_;
  const std::string id_;
  std::unique_ptr<grpc::ClientContext> context_;
  std::unique_ptr<SampleStream> stream_;
  std::vector<int32_t> history_;  // token drawn at each step answered so far
};

double Percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[static_cast<size_t>(q * static_cast<double>(v.size() - 1))];
}

int Run(const Flags& flags) {
  std::unique_ptr<testing::ServerProcess> server;
  std::string target = flags.target;
  int pid = flags.server_pid;
  if (target.empty()) {
    std::vector<std::string> args = {"--max_streams", "1024"};
    args.insert(args.end(), flags.server_args.begin(), flags.server_args.end());
    server = testing::ServerProcess::Start(args);
    if (server == nullptr) {
      std::fprintf(stderr, "soak: samplerd did not start\n");
      return 1;
    }
    target = server->tcp_target();
    pid = server->pid();
  }
  if (pid <= 0 || ReadRssKiB(pid) < 0) {
    std::fprintf(stderr, "soak: cannot read VmRSS of the server (pid %d): give --server_pid\n", pid);
    return 1;
  }

  const Payloads payloads = MakePayloads(flags);
  std::vector<std::unique_ptr<v1::Sampler::Stub>> stubs;
  for (int c = 0; c < flags.channels; ++c) {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);  // one connection per channel
    args.SetInt("samplerd.soak.channel", c);
    const std::shared_ptr<grpc::Channel> channel =
        grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
    // Every connection up before the streams start: a stream's call fails fast while its channel's first connect
    // attempt is still being retried, which is the client's start-up, not the server under load.
    if (!channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(30))) {
      std::fprintf(stderr, "soak: connection %d to %s not ready after 30 s\n", c, target.c_str());
      return 1;
    }
    stubs.push_back(v1::Sampler::NewStub(channel));
  }

  Totals totals;
  const auto start = Clock::now();
  const auto deadline = start + std::chrono::milliseconds(static_cast<int64_t>(flags.max_seconds * 1000));
  std::vector<std::thread> threads;
  std::vector<std::unique_ptr<StreamWorker>> workers;
  for (int s = 0; s < flags.streams; ++s) {
    workers.push_back(std::make_unique<StreamWorker>(
        s, flags, payloads, stubs[static_cast<size_t>(s % flags.channels)].get(), &totals, deadline));
    threads.emplace_back([w = workers.back().get()] { w->Run(); });
  }

  // RSS sampling, once a second, until every stream is done.
  std::atomic<bool> done{false};
  int64_t baseline = -1, peak_after_warmup = -1, rss_at_start = ReadRssKiB(pid);
  int64_t steps_at_warmup = 0;
  std::vector<std::pair<double, int64_t>> samples;
  std::thread sampler([&] {
    while (!done.load()) {
      std::this_thread::sleep_for(std::chrono::seconds(1));
      const double t = std::chrono::duration<double>(Clock::now() - start).count();
      const int64_t rss = ReadRssKiB(pid);
      samples.emplace_back(t, rss);
      if (baseline < 0 && t >= flags.warmup_seconds) {
        baseline = rss;
        steps_at_warmup = totals.steps.load();
      }
      if (baseline >= 0) peak_after_warmup = std::max(peak_after_warmup, rss);
      if (static_cast<int>(t) % 10 == 0) {
        std::printf("soak: %5.0f s  %8lld steps  %5lld cancellations  %3lld unexpected  rss %lld KiB\n", t,
                    static_cast<long long>(totals.steps.load()), static_cast<long long>(totals.cancellations.load()),
                    static_cast<long long>(totals.unexpected.load()), static_cast<long long>(rss));
        std::fflush(stdout);
      }
    }
  });
  for (std::thread& t : threads) t.join();
  const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  done.store(true);
  sampler.join();
  const int64_t final_rss = ReadRssKiB(pid);

  const int64_t steps = totals.steps.load();
  const double p50 = Percentile(totals.latencies_ms, 0.5), p99 = Percentile(totals.latencies_ms, 0.99);
  std::printf("soak: %d streams x up to %d steps of vocab %d + attention [%d, %d], pipeline %d, %d connections\n",
              flags.streams, flags.steps, flags.vocab, flags.heads, flags.kv_len, flags.pipeline, flags.channels);
  std::printf("soak: %lld steps answered in %.1f s (%.0f steps/s), latency p50 %.2f ms p99 %.2f ms\n",
              static_cast<long long>(steps), elapsed, static_cast<double>(steps) / elapsed, p50, p99);
  std::printf("soak: %lld cancellations, %lld resent steps re-checked, %lld unexpected errors\n",
              static_cast<long long>(totals.cancellations.load()), static_cast<long long>(totals.resent_checked.load()),
              static_cast<long long>(totals.unexpected.load()));
  for (const std::string& e : totals.errors) std::printf("soak: unexpected: %s\n", e.c_str());
  std::printf(
      "soak: server VmRSS %lld KiB at start, %lld KiB after the %.0f s warm-up (%lld steps), peak after it "
      "%lld KiB, %lld KiB at the end\n",
      static_cast<long long>(rss_at_start), static_cast<long long>(baseline), flags.warmup_seconds,
      static_cast<long long>(steps_at_warmup), static_cast<long long>(peak_after_warmup),
      static_cast<long long>(final_rss));

  bool ok = true;
  if (totals.unexpected.load() != 0) ok = false;
  if (baseline <= 0) {
    std::printf("soak: FAIL: the run ended before the warm-up did (%.0f s); no RSS baseline\n", flags.warmup_seconds);
    ok = false;
  } else {
    const double limit = static_cast<double>(baseline) * (1.0 + flags.rss_tolerance);
    const double growth =
        static_cast<double>(std::max(peak_after_warmup, final_rss)) / static_cast<double>(baseline) - 1;
    std::printf("soak: RSS growth after warm-up %.1f %% (limit %.0f %%)\n", 100 * growth, 100 * flags.rss_tolerance);
    if (static_cast<double>(peak_after_warmup) > limit || static_cast<double>(final_rss) > limit) ok = false;
  }
  const int64_t expected_min = flags.max_seconds > 0 ? 1 : static_cast<int64_t>(flags.streams) * flags.steps;
  if (steps < expected_min) {
    std::printf("soak: FAIL: %lld steps answered, want %lld\n", static_cast<long long>(steps),
                static_cast<long long>(expected_min));
    ok = false;
  }
  if (server != nullptr && server->Terminate() != 0) {
    std::printf("soak: FAIL: samplerd did not exit 0 on SIGTERM\n");
    ok = false;
  }
  if (!flags.json_out.empty()) {
    std::ofstream out(flags.json_out);
    out << "{\"streams\": " << flags.streams << ", \"steps_per_stream\": " << flags.steps
        << ", \"steps_answered\": " << steps << ", \"seconds\": " << elapsed
        << ", \"steps_per_second\": " << static_cast<double>(steps) / elapsed << ", \"latency_ms_p50\": " << p50
        << ", \"latency_ms_p99\": " << p99 << ", \"cancellations\": " << totals.cancellations.load()
        << ", \"unexpected_errors\": " << totals.unexpected.load() << ", \"rss_kib_start\": " << rss_at_start
        << ", \"rss_kib_after_warmup\": " << baseline << ", \"rss_kib_peak_after_warmup\": " << peak_after_warmup
        << ", \"rss_kib_final\": " << final_rss << ", \"passed\": " << (ok ? "true" : "false")
        << ", \"rss_samples\": [";
    for (size_t i = 0; i < samples.size(); ++i) {
      out << (i ? ", " : "") << "[" << samples[i].first << ", " << samples[i].second << "]";
    }
    out << "]}\n";
  }
  std::printf("soak: %s\n", ok ? "PASS" : "FAIL");
  return ok ? 0 : 1;
}

}  // namespace
}  // namespace samplerd::soak

int main(int argc, char** argv) {
  samplerd::soak::Flags f;
  CLI::App app{"soak_driver: concurrent Sample streams of workload S against samplerd, with random cancellations"};
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);  // run.sh's defaults, then yours
  app.add_option("--streams", f.streams, "Concurrent Sample streams")->capture_default_str();
  app.add_option("--steps", f.steps, "Steps per stream")->capture_default_str();
  app.add_option("--max_seconds", f.max_seconds, "Stop each stream after this long (0 = run every step)")
      ->capture_default_str();
  app.add_option("--warmup_seconds", f.warmup_seconds, "The RSS baseline is taken after this long")
      ->capture_default_str();
  app.add_option("--cancel_probability", f.cancel_probability, "Chance per step that a stream is cancelled")
      ->capture_default_str();
  app.add_option("--pipeline", f.pipeline, "Requests in flight per stream")->capture_default_str();
  app.add_option("--channels", f.channels, "Connections the streams are spread over")->capture_default_str();
  app.add_option("--vocab", f.vocab, "Logits per step")->capture_default_str();
  app.add_option("--kv_len", f.kv_len, "Attention positions per head (8 heads)")->capture_default_str();
  app.add_option("--rss_tolerance", f.rss_tolerance, "Allowed RSS growth after the warm-up (fraction)")
      ->capture_default_str();
  app.add_option("--target", f.target, "An already running samplerd (then --server_pid is required)");
  app.add_option("--server_pid", f.server_pid, "PID of the --target server, for its VmRSS");
  app.add_option("--server_arg", f.server_args, "Extra flag for the samplerd this driver starts (repeatable)")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  app.add_option("--json", f.json_out, "Write a JSON summary here");
  app.add_option("--seed", f.seed, "Seed of the payloads and cancellations")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  signal(SIGPIPE, SIG_IGN);
  return samplerd::soak::Run(f);
}
