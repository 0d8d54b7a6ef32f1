// The shared-memory plane without a network: ShmRegistry's admission of memfds (seals, limits, sessions),
// the lifetime of a mapping a step still holds, and the tensor references of a step through
// SamplerService::StartRequest: answers equal to the same tensors sent as bytes, and every bad reference
// answered with that step's INVALID_ARGUMENT naming the field while the other steps are answered.
#include "service/shm_registry.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "core/field_error.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "service/sampler_service.h"
#include "tests/service/run_request.h"

namespace samplerd {
namespace {

using ::testing::HasSubstr;

// A memfd of `size` bytes with `seals` added, mapped read-write at `*data` (when not null).
int MakeMemfd(uint64_t size, int seals, char** data = nullptr) {
  const int fd = memfd_create("shm_registry_test", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  EXPECT_GE(fd, 0);
  EXPECT_EQ(ftruncate(fd, static_cast<off_t>(size)), 0);
  if (data != nullptr) {
    void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    EXPECT_NE(p, MAP_FAILED);
    *data = static_cast<char*>(p);
  }
  if (seals != 0) {
    EXPECT_EQ(fcntl(fd, F_ADD_SEALS, seals), 0);
  }
  return fd;
}

constexpr int kSeals = F_SEAL_SHRINK | F_SEAL_SEAL;

TEST(ShmRegistry, RefusesAMemfdWithoutBothSeals) {
  ShmRegistry registry({});
  const std::string session = *registry.OpenSession();
  for (const int seals : {0, F_SEAL_SHRINK, F_SEAL_SEAL}) {
    const int fd = MakeMemfd(4096, seals);
    absl::StatusOr<ShmRegistry::Registered> r = registry.Register(session, fd, "test");
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << seals;
    EXPECT_THAT(r.status().message(), HasSubstr("F_SEAL_SHRINK and F_SEAL_SEAL")) << seals;
    close(fd);
  }
  EXPECT_EQ(registry.stats().regions_mapped, 0);
  EXPECT_EQ(registry.stats().registrations_refused, 3);
}

TEST(ShmRegistry, RefusesAnFdThatIsNotAMemfdAndAnEmptyOne) {
  ShmRegistry registry({});
  const std::string session = *registry.OpenSession();
  int pipe_fds[2];
  ASSERT_EQ(pipe(pipe_fds), 0);
  absl::StatusOr<ShmRegistry::Registered> r = registry.Register(session, pipe_fds[0], "pipe");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("not a sealable memfd"));
  close(pipe_fds[0]);
  close(pipe_fds[1]);
  const int empty = MakeMemfd(0, kSeals);
  EXPECT_EQ(registry.Register(session, empty, "empty").status().code(), absl::StatusCode::kInvalidArgument);
  close(empty);
}

TEST(ShmRegistry, EnforcesThePerClientLimits) {
  ShmRegistry registry({/*max_clients=*/2, /*max_regions_per_client=*/2, /*max_bytes_per_client=*/3 * 4096});
  const std::string a = *registry.OpenSession();
  const std::string b = *registry.OpenSession();
  EXPECT_EQ(registry.OpenSession().status().code(), absl::StatusCode::kResourceExhausted);
  const int page = MakeMemfd(4096, kSeals);
  const int big = MakeMemfd(4 * 4096, kSeals);
  EXPECT_EQ(registry.Register(a, big, "big").status().code(), absl::StatusCode::kResourceExhausted);
  ASSERT_TRUE(registry.Register(a, page, "1").ok());
  ASSERT_TRUE(registry.Register(a, page, "2").ok());
  EXPECT_EQ(registry.Register(a, page, "3").status().code(), absl::StatusCode::kResourceExhausted);
  // The other client's budget is its own.
  EXPECT_TRUE(registry.Register(b, page, "b").ok());
  EXPECT_EQ(registry.stats().regions_registered, 3);
  registry.CloseSession(a);
  EXPECT_TRUE(registry.OpenSession().ok());
  EXPECT_EQ(registry.stats().regions_registered, 1);
  close(page);
  close(big);
}

TEST(ShmRegistry, ARegionIsFoundOnlyWithItsOwnSession) {
  ShmRegistry registry({});
  const std::string a = *registry.OpenSession();
  const std::string b = *registry.OpenSession();
  const int fd = MakeMemfd(4096, kSeals);
  const ShmRegistry::Registered r = *registry.Register(a, fd, "a");
  close(fd);
  EXPECT_EQ(r.region.size(), 32u);
  EXPECT_NE(r.region, a);
  EXPECT_TRUE(registry.Find(a, r.region).ok());
  EXPECT_EQ(registry.Find(b, r.region).status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(registry.Find(b, r.region).status().message(), HasSubstr("another client"));
  EXPECT_EQ(registry.Find(a, "0123").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(registry.Unregister(b, r.region).code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(registry.Unregister(a, r.region).ok());
  EXPECT_EQ(registry.Find(a, r.region).status().code(), absl::StatusCode::kNotFound);
}

// An error quotes at most kMaxQuotedBytes of an id the client sent, so a control answer stays within its packet
// limit however long the id.
TEST(ShmRegistry, AnUnknownRegionIdIsQuotedShort) {
  ShmRegistry registry({});
  const std::string session = *registry.OpenSession();
  const std::string long_id(131060, 'a');
  const absl::Status unregistered = registry.Unregister(session, long_id);
  EXPECT_EQ(unregistered.code(), absl::StatusCode::kNotFound);
  EXPECT_LT(unregistered.message().size(), kMaxQuotedBytes + 100) << unregistered.message().size();
  EXPECT_THAT(unregistered.message(), HasSubstr("(131060 bytes)"));
  const absl::Status not_found = registry.Find(session, long_id).status();
  EXPECT_EQ(not_found.code(), absl::StatusCode::kNotFound);
  EXPECT_LT(not_found.message().size(), kMaxQuotedBytes + 200) << not_found.message().size();
}

// A descriptor the server cannot map is the client's mistake, told as such, not an INTERNAL server fault.
TEST(ShmRegistry, AWriteOnlyDescriptorIsInvalidArgumentNamingTheReason) {
  ShmRegistry registry({});
  const std::string session = *registry.OpenSession();
  const int fd = MakeMemfd(4096, kSeals);
  const int write_only = open(("/proc/self/fd/" + std::to_string(fd)).c_str(), O_WRONLY | O_CLOEXEC);
  ASSERT_GE(write_only, 0) << std::strerror(errno);
  absl::StatusOr<ShmRegistry::Registered> r = registry.Register(session, write_only, "write-only");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
  EXPECT_THAT(r.status().message(), HasSubstr("open for reading"));
  close(write_only);
  close(fd);
}

// A hole punched in a hugetlbfs file gives its pages and their reservation back to the pool, and a read of the
// hole then dies of SIGBUS when the pool is empty: only a write seal forbids the punch there.
TEST(ShmRegistry, AHugetlbMemfdWithoutAWriteSealIsRefused) {
  const int fd = memfd_create("shm_registry_test", MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_HUGETLB);
  if (fd < 0) GTEST_SKIP() << "no MFD_HUGETLB here: " << std::strerror(errno);
  ASSERT_EQ(ftruncate(fd, 2 << 20), 0) << std::strerror(errno);
  ASSERT_EQ(fcntl(fd, F_ADD_SEALS, kSeals), 0);
  ShmRegistry registry({});
  const std::string session = *registry.OpenSession();
  absl::StatusOr<ShmRegistry::Registered> r = registry.Register(session, fd, "hugetlb");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
  EXPECT_THAT(r.status().message(), HasSubstr("F_SEAL_FUTURE_WRITE"));
  EXPECT_EQ(registry.stats().regions_mapped, 0);
  close(fd);
}

TEST(ShmRegistry, AHugetlbMemfdTheKernelCannotBackIsResourceExhausted) {
  const int fd = memfd_create("shm_registry_test", MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_HUGETLB);
  if (fd < 0) GTEST_SKIP() << "no MFD_HUGETLB here: " << std::strerror(errno);
  constexpr off_t kSize = 2 << 20;
  ASSERT_EQ(ftruncate(fd, kSize), 0) << std::strerror(errno);
  ASSERT_EQ(fcntl(fd, F_ADD_SEALS, kSeals | F_SEAL_FUTURE_WRITE), 0);
  void* probe = mmap(nullptr, kSize, PROT_READ, MAP_SHARED, fd, 0);
  if (probe != MAP_FAILED) {
    munmap(probe, kSize);
    close(fd);
    GTEST_SKIP() << "this machine has huge pages to back the memfd";
  }
  ASSERT_EQ(errno, ENOMEM);
  ShmRegistry registry({});
  const std::string session = *registry.OpenSession();
  absl::StatusOr<ShmRegistry::Registered> r = registry.Register(session, fd, "hugetlb");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted) << r.status();
  close(fd);
}

TEST(ShmRegistry, AHeldRegionStaysMappedAfterItsSessionClosesUntilReleased) {
  ShmRegistry registry({});
  const std::string session = *registry.OpenSession();
  char* data = nullptr;
  const int fd = MakeMemfd(8192, kSeals, &data);
  std::memcpy(data, "abc", 3);
  const ShmRegistry::Registered r = *registry.Register(session, fd, "held");
  close(fd);
  std::shared_ptr<const ShmRegion> held = *registry.Find(session, r.region);
  registry.CloseSession(session);
  EXPECT_EQ(registry.stats().clients, 0);
  EXPECT_EQ(registry.stats().regions_registered, 0);
  EXPECT_EQ(registry.stats().regions_mapped, 1);
  EXPECT_EQ(registry.stats().bytes_mapped, 8192);
  EXPECT_EQ(std::string(held->data(), 3), "abc");  // still readable
  held.reset();
  EXPECT_EQ(registry.stats().regions_mapped, 0);
  EXPECT_EQ(registry.stats().bytes_mapped, 0);
  munmap(data, 8192);
}

// --- tensor references through the service ---

constexpr int kVocab = 3000;

class ShmStepTest : public ::testing::Test {
 protected:
  void SetUp() override {
    shm_ = std::make_shared<ShmRegistry>(ShmRegistry::Limits{});
    session_ = *shm_->OpenSession();
    const int fd = MakeMemfd(kRegionBytes, kSeals, &data_);
    region_ = shm_->Register(session_, fd, "test")->region;
    close(fd);
    SamplerService::Options options;
    options.config.workers = 1;
    options.profiles = ProfileRegistry::BuiltIn();
    options.shm = shm_;
    service_ = *SamplerService::Create(std::move(options));
    std::mt19937 rng(7);
    std::normal_distribution<float> normal(0.0f, 2.0f);
    logits_.resize(kVocab);
    for (float& z : logits_) z = normal(rng);
    attention_.resize(2 * 4 * 64);
    for (float& a : attention_) a = normal(rng);
    std::memcpy(data_ + kLogitsOffset, logits_.data(), logits_.size() * sizeof(float));
    std::memcpy(data_ + kAttentionOffset, attention_.data(), attention_.size() * sizeof(float));
  }
  void TearDown() override { munmap(data_, kRegionBytes); }

  v1::Step BytesStep() const {
    v1::Step s;
    s.set_sequence_id("seq");
    s.set_step(3);
    s.set_seed(99);
    s.set_top_logprobs(3);
    s.add_recent_tokens(5);
    s.mutable_logits()->set_dtype(v1::DTYPE_F32);
    s.mutable_logits()->add_shape(kVocab);
    s.mutable_logits()->set_data(std::string(reinterpret_cast<const char*>(logits_.data()), kVocab * 4));
    v1::Tensor* a = s.mutable_attention();
    a->set_dtype(v1::DTYPE_F32);
    for (int64_t d : {2, 4, 64}) a->add_shape(d);
    a->set_data(std::string(reinterpret_cast<const char*>(attention_.data()), attention_.size() * 4));
    return s;
  }

  v1::Step RefStep() const {
    v1::Step s = BytesStep();
    s.clear_logits();
    s.clear_attention();
    v1::TensorRef* l = s.mutable_logits_ref();
    l->set_region(region_);
    l->set_offset(kLogitsOffset);
    l->set_dtype(v1::DTYPE_F32);
    l->add_shape(kVocab);
    v1::TensorRef* a = s.mutable_attention_ref();
    a->set_region(region_);
    a->set_offset(kAttentionOffset);
    a->set_dtype(v1::DTYPE_F32);
    for (int64_t d : {2, 4, 64}) a->add_shape(d);
    return s;
  }

  v1::SampleResponse Answer(const std::vector<v1::Step>& steps, absl::string_view session) {
    v1::SampleRequest request;
    for (const v1::Step& s : steps) *request.add_steps() = s;
    SeedTable seeds;
    v1::SampleResponse response;
    EXPECT_TRUE(RunRequest(*service_, request, &seeds, &response, session).ok());
    for (v1::StepResult& r : *response.mutable_results()) r.clear_server_micros();  // timing, not the answer
    return response;
  }

  static constexpr uint64_t kRegionBytes = 64 * 1024;
  static constexpr uint64_t kLogitsOffset = 4096;
  static constexpr uint64_t kAttentionOffset = 32 * 1024;
  std::shared_ptr<ShmRegistry> shm_;
  std::string session_;
  std::string region_;
  char* data_ = nullptr;
  std::unique_ptr<SamplerService> service_;
  std::vector<float> logits_;
  std::vector<float> attention_;
};

TEST_F(ShmStepTest, ReferencesAnswerExactlyAsTheSameBytes) {
  const v1::SampleResponse by_bytes = Answer({BytesStep()}, "");
  const v1::SampleResponse by_ref = Answer({RefStep()}, session_);
  ASSERT_EQ(by_ref.results_size(), 1);
  EXPECT_FALSE(by_ref.results(0).has_error()) << by_ref.results(0).error().message();
  EXPECT_TRUE(by_ref.results(0).metrics().has_agreement());
  EXPECT_EQ(by_ref.SerializeAsString(), by_bytes.SerializeAsString());
  // Mixed: inline logits, referenced attention.
  v1::Step mixed = RefStep();
  *mixed.mutable_logits() = BytesStep().logits();
  mixed.clear_logits_ref();
  EXPECT_EQ(Answer({mixed}, session_).SerializeAsString(), by_bytes.SerializeAsString());
}

TEST_F(ShmStepTest, BadReferencesAreThatStepsInvalidArgumentNamingTheField) {
  struct Case {
    std::string name;
    std::function<void(v1::Step*)> mutate;
    std::string field;
    std::string message;
    std::string session = "";  // empty = the test's session
  };
  const std::string other_session = *shm_->OpenSession();
  const std::vector<Case> cases = {
      {"unknown region", [](v1::Step* s) { s->mutable_logits_ref()->set_region("feedface"); }, "logits_ref.region",
       "no shared-memory region"},
      {"another client's region", [](v1::Step*) {}, "logits_ref.region", "belongs to another client", other_session},
      {"no session metadata", [](v1::Step*) {}, "logits_ref.region", "no samplerd-shm-session", "none"},
      {"misaligned offset", [](v1::Step* s) { s->mutable_logits_ref()->set_offset(kLogitsOffset + 2); },
       "logits_ref.offset", "multiple of the item size 4"},
      {"past the end", [](v1::Step* s) { s->mutable_logits_ref()->set_offset(kRegionBytes - 4); }, "logits_ref.offset",
       "past the end of the region"},
      {"offset beyond the region", [](v1::Step* s) { s->mutable_attention_ref()->set_offset(uint64_t{1} << 62); },
       "attention_ref.offset", "past the end"},
      {"overflowing shape",
       [](v1::Step* s) {
         s->mutable_attention_ref()->clear_shape();
         for (int64_t d : {int64_t{1} << 40, int64_t{1} << 30, int64_t{4}}) s->mutable_attention_ref()->add_shape(d);
       },
       "attention_ref.shape", "overflows"},
      {"both the tensor and its ref", [this](v1::Step* s) { *s->mutable_logits() = BytesStep().logits(); },
       "logits_ref", "not both"},
      {"pages never written (between the logits and the attention)",
       [](v1::Step* s) { s->mutable_logits_ref()->set_offset(20480); }, "logits_ref", "never written"},
      {"bad dtype is core's check, under the tensor's name",
       [](v1::Step* s) { s->mutable_logits_ref()->set_dtype(static_cast<v1::DType>(9)); }, "logits.dtype", ""},
      {"a dimension < 1 is core's check", [](v1::Step* s) { s->mutable_logits_ref()->set_shape(0, 0); }, "logits.shape",
       ""},
  };
  const v1::StepResult good = Answer({RefStep()}, session_).results(0);
  for (const Case& c : cases) {
    v1::Step bad = RefStep();
    c.mutate(&bad);
    const std::string session = c.session.empty() ? session_ : c.session == "none" ? "" : c.session;
    const v1::SampleResponse response = Answer({bad, RefStep()}, session);
    ASSERT_EQ(response.results_size(), 2) << c.name;
    EXPECT_EQ(response.results(0).error().code(), 3) << c.name;
    EXPECT_EQ(response.results(0).error().field(), c.field) << c.name;
    EXPECT_THAT(response.results(0).error().message(), HasSubstr(c.message)) << c.name;
    if (c.session.empty()) {
      EXPECT_EQ(response.results(1).SerializeAsString(), good.SerializeAsString()) << c.name;
    }
  }
}

TEST(ShmStep, AServerWithoutThePlaneRefusesReferences) {
  SamplerService::Options options;
  options.config.workers = 1;
  options.profiles = ProfileRegistry::BuiltIn();
  std::unique_ptr<SamplerService> service = *SamplerService::Create(std::move(options));
  v1::SampleRequest request;
  v1::Step* s = request.add_steps();
  s->mutable_logits_ref()->set_region("0123456789abcdef0123456789abcdef");
  s->mutable_logits_ref()->set_dtype(v1::DTYPE_F32);
  s->mutable_logits_ref()->add_shape(10);
  SeedTable seeds;
  v1::SampleResponse response;
  ASSERT_TRUE(RunRequest(*service, request, &seeds, &response, "whatever").ok());
  EXPECT_EQ(response.results(0).error().field(), "logits_ref.region");
  EXPECT_THAT(response.results(0).error().message(), HasSubstr("--shm_socket"));
}

}  // namespace
}  // namespace samplerd
