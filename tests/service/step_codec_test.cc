// step_codec: proto ↔ core translation and the status → wire-error mapping, without a network.
#include "service/step_codec.h"

#include <chrono>
#include <cstring>
#include <vector>

#include "core/field_error.h"
#include "gtest/gtest.h"

namespace samplerd {
namespace {

std::string F32Bytes(const std::vector<float>& values) {
  std::string bytes(values.size() * sizeof(float), '\0');
  std::memcpy(bytes.data(), values.data(), bytes.size());
  return bytes;
}

v1::Step MakeStep() {
  v1::Step step;
  step.set_sequence_id("seq-1");
  step.set_step(41);
  step.mutable_logits()->set_dtype(v1::DTYPE_F32);
  step.mutable_logits()->add_shape(4);
  step.mutable_logits()->set_data(F32Bytes({1, 2, 3, 4}));
  step.add_recent_tokens(3);
  step.add_recent_tokens(1);
  step.set_profile("fixed");
  step.set_seed(99);
  step.set_top_logprobs(2);
  return step;
}

TEST(DecodeStep, BorrowsEveryFieldWithoutCopying) {
  const v1::Step step = MakeStep();
  const StepInput in = DecodeStep(step, /*seed=*/1234);

  EXPECT_EQ(in.sequence_id, "seq-1");
  EXPECT_EQ(in.sequence_id.data(), step.sequence_id().data());
  EXPECT_EQ(in.step, 41u);
  EXPECT_EQ(in.seed, 1234u);  // the resolved seed, not the wire one
  EXPECT_EQ(in.logits.dtype, v1::DTYPE_F32);
  ASSERT_EQ(in.logits.shape.size(), 1u);
  EXPECT_EQ(in.logits.shape[0], 4);
  EXPECT_EQ(in.logits.shape.data(), step.logits().shape().data());
  EXPECT_EQ(in.logits.data.data(), step.logits().data().data());
  EXPECT_EQ(in.logits.data.size(), 16u);
  ASSERT_EQ(in.recent_tokens.size(), 2u);
  EXPECT_EQ(in.recent_tokens.data(), step.recent_tokens().data());
  EXPECT_EQ(in.recent_tokens[0], 3);
  EXPECT_EQ(in.recent_tokens[1], 1);
  EXPECT_EQ(in.profile, "fixed");
  EXPECT_EQ(in.top_logprobs, 2);
}

TEST(DecodeStep, AbsentAttentionAndParamsStayAbsent) {
  const StepInput in = DecodeStep(MakeStep(), 1);
  EXPECT_FALSE(in.attention.has_value());
  EXPECT_EQ(in.overrides, nullptr);
}

TEST(DecodeStep, PresentAttentionAndParamsArePassedThrough) {
  v1::Step step = MakeStep();
  step.mutable_attention()->set_dtype(v1::DTYPE_BF16);
  step.mutable_attention()->add_shape(2);
  step.mutable_attention()->add_shape(3);
  step.mutable_attention()->set_data(std::string(12, '\0'));
  step.mutable_params()->set_top_p(0.5f);

  const StepInput in = DecodeStep(step, 1);
  ASSERT_TRUE(in.attention.has_value());
  EXPECT_EQ(in.attention->dtype, v1::DTYPE_BF16);
  ASSERT_EQ(in.attention->shape.size(), 2u);
  EXPECT_EQ(in.attention->shape[1], 3);
  EXPECT_EQ(in.attention->data.data(), step.attention().data().data());
  EXPECT_EQ(in.overrides, &step.params());
}

TEST(DecodeStep, EmptyParamsMessageIsStillAnOverride) {
  // has_params() with no field set: core validates an empty override set and applies nothing.
  v1::Step step = MakeStep();
  step.mutable_params();
  EXPECT_EQ(DecodeStep(step, 1).overrides, &step.params());
}

StepOutput MakeOutput(const Profile* profile) {
  StepOutput out;
  out.token = 7;
  out.logprob = -0.25f;
  out.regime = v1::REGIME_ADAPTIVE;
  out.drew = true;
  out.applied.temperature = 0.7f;
  out.applied.top_k = 12;
  out.applied.top_p = 0.9f;
  out.applied.min_p = 0.05f;
  out.metrics.logits_entropy = 2.5;
  out.metrics.logits_varentropy = 1.25;
  out.top = {{7, -0.25f}, {2, -1.5f}};
  out.profile = profile;
  return out;
}

TEST(EncodeStepResult, CopiesEveryOutputField) {
  const auto registry = ProfileRegistry::BuiltIn();
  const Profile* entropix = registry->Find("entropix");
  ASSERT_NE(entropix, nullptr);
  const v1::Step step = MakeStep();
  v1::StepResult r;
  EncodeStepResult(step, MakeOutput(entropix), /*seed=*/555, std::chrono::microseconds(1234), &r);

  EXPECT_EQ(r.sequence_id(), "seq-1");
  EXPECT_EQ(r.step(), 41u);
  EXPECT_EQ(r.token(), 7);
  EXPECT_FLOAT_EQ(r.logprob(), -0.25f);
  EXPECT_EQ(r.regime(), v1::REGIME_ADAPTIVE);
  ASSERT_TRUE(r.has_applied());
  EXPECT_FLOAT_EQ(r.applied().temperature(), 0.7f);
  EXPECT_EQ(r.applied().top_k(), 12);
  EXPECT_FLOAT_EQ(r.applied().top_p(), 0.9f);
  EXPECT_FLOAT_EQ(r.applied().min_p(), 0.05f);
  EXPECT_FLOAT_EQ(r.metrics().logits_entropy(), 2.5f);
  EXPECT_FLOAT_EQ(r.metrics().logits_varentropy(), 1.25f);
  ASSERT_EQ(r.top_size(), 2);
  EXPECT_EQ(r.top(1).token(), 2);
  EXPECT_FLOAT_EQ(r.top(1).logprob(), -1.5f);
  EXPECT_EQ(r.seed(), 555u);
  EXPECT_EQ(r.profile(), "entropix");
  EXPECT_EQ(r.server_micros(), 1234u);
  EXPECT_FALSE(r.has_error());
}

TEST(EncodeStepResult, AttentionMetricsOnlyWhenComputed) {
  const v1::Step step = MakeStep();
  StepOutput out = MakeOutput(nullptr);
  v1::StepResult without;
  EncodeStepResult(step, out, 1, {}, &without);
  EXPECT_TRUE(without.metrics().has_logits_entropy());
  EXPECT_FALSE(without.metrics().has_attn_entropy());
  EXPECT_FALSE(without.metrics().has_attn_varentropy());
  EXPECT_FALSE(without.metrics().has_agreement());
  EXPECT_FALSE(without.metrics().has_interaction_strength());

  out.metrics.attention = AttentionMetrics{3.0, 0.5, 0.125, 2.0, 8};
  v1::StepResult with;
  EncodeStepResult(step, out, 1, {}, &with);
  EXPECT_FLOAT_EQ(with.metrics().attn_entropy(), 3.0f);
  EXPECT_FLOAT_EQ(with.metrics().attn_varentropy(), 0.5f);
  EXPECT_FLOAT_EQ(with.metrics().agreement(), 0.125f);
  EXPECT_FLOAT_EQ(with.metrics().interaction_strength(), 2.0f);
}

TEST(EncodeStepResult, NoAppliedParamsWhenNothingWasDrawn) {
  StepOutput out = MakeOutput(nullptr);
  out.regime = v1::REGIME_CLARIFY;
  out.drew = false;
  v1::StepResult r;
  EncodeStepResult(MakeStep(), out, 1, {}, &r);
  EXPECT_EQ(r.regime(), v1::REGIME_CLARIFY);
  EXPECT_FALSE(r.has_applied());
}

TEST(EncodeStepResult, ServerMicrosSaturates) {
  v1::StepResult r;
  EncodeStepResult(MakeStep(), MakeOutput(nullptr), 1, std::chrono::hours(24 * 365), &r);
  EXPECT_EQ(r.server_micros(), 4294967295u);
}

TEST(EncodeStepError, CarriesCodeFieldAndMessage) {
  v1::StepResult r;
  EncodeStepError(MakeStep(), InvalidFieldError("params.top_p", "must be in (0, 1], got 1.5"), &r);
  EXPECT_EQ(r.sequence_id(), "seq-1");
  EXPECT_EQ(r.step(), 41u);
  ASSERT_TRUE(r.has_error());
  EXPECT_EQ(r.error().code(), 3);  // google.rpc.Code INVALID_ARGUMENT
  EXPECT_EQ(r.error().field(), "params.top_p");
  EXPECT_EQ(r.error().message(), "params.top_p: must be in (0, 1], got 1.5");
  EXPECT_EQ(r.token(), 0);
  EXPECT_FALSE(r.has_applied());
  EXPECT_FALSE(r.has_metrics());
}

TEST(EncodeStepError, EchoesNoMoreOfTheSequenceIdThanAValidOneCanHold) {
  v1::Step step = MakeStep();
  step.set_sequence_id(std::string(kMaxSequenceIdBytes, 'a') + std::string(1 << 20, 'b'));
  v1::StepResult r;
  EncodeStepError(step, InvalidFieldError("sequence_id", "too long"), &r);
  EXPECT_EQ(r.sequence_id(), std::string(kMaxSequenceIdBytes, 'a'));
  step.set_sequence_id("short");
  EncodeStepError(step, InvalidFieldError("logits", "missing"), &r);
  EXPECT_EQ(r.sequence_id(), "short");
  // A character across the cut is left out whole: the echo stays valid UTF-8, and so the answer parses.
  step.set_sequence_id(std::string(kMaxSequenceIdBytes - 1, 'a') + "\xc3\xa9" + std::string(100, 'b'));
  EncodeStepError(step, InvalidFieldError("sequence_id", "too long"), &r);
  EXPECT_EQ(r.sequence_id(), std::string(kMaxSequenceIdBytes - 1, 'a'));
  v1::SampleResponse response;
  *response.add_results() = r;
  v1::SampleResponse parsed;
  EXPECT_TRUE(parsed.ParseFromString(response.SerializeAsString()));
}

TEST(EncodeStepError, MapsEveryCoreCodeToItsGoogleRpcNumber) {
  struct Case {
    absl::Status status;
    int code;
    std::string field;
  };
  const Case cases[] = {
      {LimitFieldError("logits.shape", "over the limit"), 8, "logits.shape"},
      {FieldError(absl::StatusCode::kNotFound, "profile", "no profile named \"x\""), 5, "profile"},
      {absl::InternalError("no field attached"), 13, ""},
  };
  for (const Case& c : cases) {
    v1::StepResult r;
    EncodeStepError(MakeStep(), c.status, &r);
    EXPECT_EQ(r.error().code(), c.code) << c.status;
    EXPECT_EQ(r.error().field(), c.field) << c.status;
    EXPECT_EQ(r.error().message(), std::string(c.status.message()));
  }
}

TEST(ToGrpcStatus, KeepsCodeAndMessage) {
  const grpc::Status s = ToGrpcStatus(LimitFieldError("steps", "at most 4 steps, got 5"));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(s.error_message(), "steps: at most 4 steps, got 5");
  EXPECT_TRUE(ToGrpcStatus(absl::OkStatus()).ok());
  EXPECT_EQ(ToGrpcStatus(absl::NotFoundError("x")).error_code(), grpc::StatusCode::NOT_FOUND);
}

}  // namespace
}  // namespace samplerd
