// RunRequest(): SamplerService::StartRequest, waited for, for tests and fuzz targets that want one request's
// answer on the calling thread.
//
//   SeedTable seeds;
//   v1::SampleResponse response;
//   absl::Status status = RunRequest(*service, request, &seeds, &response);
#ifndef SAMPLERD_TESTS_SERVICE_RUN_REQUEST_H_
#define SAMPLERD_TESTS_SERVICE_RUN_REQUEST_H_

#include <condition_variable>
#include <memory>
#include <mutex>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "samplerd/v1/sampler.pb.h"
#include "service/sampler_service.h"
#include "service/seed_table.h"

namespace samplerd {

// The status StartRequest's `done` got, once it has run; `response` then holds the answer.
inline absl::Status RunRequest(const SamplerService& service, const v1::SampleRequest& request, SeedTable* seeds,
                               v1::SampleResponse* response, absl::string_view shm_session = {}) {
  // Shared with the callback: the worker may still be inside `done` when the wait below returns.
  struct Done {
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    absl::Status status;
  };
  auto state = std::make_shared<Done>();
  service.StartRequest(
      request, seeds, response,
      [state](absl::Status status) {
        std::lock_guard<std::mutex> lock(state->mu);
        state->status = std::move(status);
        state->done = true;
        state->cv.notify_one();
      },
      shm_session);
  std::unique_lock<std::mutex> lock(state->mu);
  state->cv.wait(lock, [&] { return state->done; });
  return state->status;
}

}  // namespace samplerd

#endif  // SAMPLERD_TESTS_SERVICE_RUN_REQUEST_H_
