#include "service/request_wire.h"

#include <cstdint>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "gtest/gtest.h"
#include "samplerd/v1/sampler.pb.h"

namespace samplerd {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using ::testing::HasSubstr;

absl::Status Check(const Descriptor& type, const std::string& wire, int64_t max_steps = 4096) {
  google::protobuf::io::ArrayInputStream stream(wire.data(), static_cast<int>(wire.size()));
  return CheckRequestWire(type, &stream, max_steps);
}
absl::Status Check(const v1::SampleRequest& request, int64_t max_steps = 4096) {
  return Check(*v1::SampleRequest::descriptor(), request.SerializeAsString(), max_steps);
}

std::string Varint(uint64_t value) {
  std::string out;
  for (; value >= 0x80; value >>= 7) out.push_back(static_cast<char>((value & 0x7f) | 0x80));
  out.push_back(static_cast<char>(value));
  return out;
}
std::string LengthDelimited(int field, const std::string& bytes) {
  return Varint(static_cast<uint64_t>(field) << 3 | 2) + Varint(bytes.size()) + bytes;
}
// `count` fields numbered 100 (unknown to every samplerd.v1 message), each a varint 0.
std::string UnknownFields(int count) {
  std::string out;
  for (int i = 0; i < count; ++i) out += Varint(100 << 3) + '\0';
  return out;
}

v1::Step FullStep() {
  v1::Step step;
  step.set_sequence_id("seq");
  step.set_step(3);
  step.mutable_logits()->set_dtype(v1::DTYPE_F32);
  step.mutable_logits()->add_shape(4);
  step.mutable_logits()->set_data(std::string(16, '\0'));
  step.mutable_attention()->add_shape(2);
  step.mutable_attention()->add_shape(2);
  step.mutable_attention()->set_data(std::string(16, '\0'));
  for (int t : {1, 2, 3}) step.add_recent_tokens(t);
  (*step.mutable_params()->mutable_logit_bias())[2] = -1.5f;
  step.mutable_params()->set_temperature(0.7f);
  step.set_profile("entropix");
  step.set_seed(7);
  step.set_top_logprobs(2);
  return step;
}

TEST(CheckRequestWire, AcceptsARequestThatSetsEveryFieldOfItsSteps) {
  v1::SampleRequest request;
  for (int i = 0; i < 3; ++i) *request.add_steps() = FullStep();
  EXPECT_TRUE(Check(request).ok()) << Check(request);
  EXPECT_TRUE(Check(*v1::SampleRequest::descriptor(), "").ok());
}

TEST(CheckRequestWire, RefusesMoreStepsThanTheLimitAtTheFirstOnePastIt) {
  v1::SampleRequest request;
  for (int i = 0; i < 5; ++i) request.add_steps();
  EXPECT_TRUE(Check(request, 5).ok());
  const absl::Status refused = Check(request, 4);
  EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(refused.message()), HasSubstr("steps: a request may carry at most 4 steps"));
  EXPECT_THAT(std::string(refused.message()), HasSubstr("--max_steps_per_request), got more than 4"));
}

TEST(CheckRequestWire, CountsTheStepsOfASampleInsideAControlPacketAcrossItsRepeats) {
  // A singular message field written twice merges: its steps add up.
  std::string sample;
  for (int i = 0; i < 3; ++i) sample += LengthDelimited(1, "");
  const std::string packet = LengthDelimited(3, sample) + LengthDelimited(3, sample);
  EXPECT_TRUE(Check(*v1::ShmControlRequest::descriptor(), packet, 6).ok());
  EXPECT_EQ(Check(*v1::ShmControlRequest::descriptor(), packet, 5), TooManyStepsError(5, "more than 5"));
  v1::ShmControlRequest parsed;
  ASSERT_TRUE(parsed.ParseFromString(packet));
  EXPECT_EQ(parsed.sample().steps_size(), 6);
}

TEST(CheckRequestWire, RefusesMoreUnknownFieldsThanTheLimitWhereverTheyAre) {
  const Descriptor& type = *v1::SampleRequest::descriptor();
  EXPECT_TRUE(Check(type, UnknownFields(kMaxUnknownFields)).ok());
  const absl::Status top = Check(type, UnknownFields(kMaxUnknownFields + 1));
  EXPECT_EQ(top.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(top.message()), HasSubstr("more than 1024 fields that samplerd.v1.SampleRequest"));
  // Inside a step, inside its logits, inside a map entry of its params: all count together.
  const int quarter = static_cast<int>(kMaxUnknownFields / 4);
  const std::string map_entry = LengthDelimited(8, Varint(1 << 3) + Varint(5) + UnknownFields(quarter));
  const std::string step =
      UnknownFields(quarter) + LengthDelimited(3, UnknownFields(quarter)) + LengthDelimited(6, map_entry);
  // One step allows kUnknownFieldsPerStep more.
  const int at_top = quarter + static_cast<int>(kUnknownFieldsPerStep);
  EXPECT_TRUE(Check(type, UnknownFields(at_top) + LengthDelimited(1, step)).ok());
  EXPECT_EQ(Check(type, UnknownFields(at_top + 1) + LengthDelimited(1, step)).code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(Check(*v1::ListProfilesRequest::descriptor(), UnknownFields(kMaxUnknownFields + 1)).code(),
            absl::StatusCode::kResourceExhausted);
}

// A client on a newer schema sends a field or two this one does not define in every step, of a batch of any size.
TEST(CheckRequestWire, UnknownFieldsAreAllowedInProportionToTheSteps) {
  const std::string step = LengthDelimited(1, UnknownFields(static_cast<int>(kUnknownFieldsPerStep)));
  std::string request;
  for (int i = 0; i < 4096; ++i) request += step;
  EXPECT_TRUE(Check(*v1::SampleRequest::descriptor(), request).ok());
  const absl::Status refused = Check(*v1::SampleRequest::descriptor(), request + UnknownFields(kMaxUnknownFields + 1));
  EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted) << refused;
  EXPECT_THAT(std::string(refused.message()), HasSubstr("1024 and 32 per step"));
}

TEST(CheckRequestWire, AKnownFieldWithAnotherWireTypeCountsAsUnknown) {
  // Step.step (a varint) written as fixed32: protobuf keeps it as an unknown field.
  std::string step;
  for (int64_t i = 0; i <= kMaxUnknownFields + kUnknownFieldsPerStep; ++i) {
    step += Varint(2 << 3 | 5) + std::string(4, '\0');
  }
  const absl::Status refused = Check(*v1::SampleRequest::descriptor(), LengthDelimited(1, step));
  EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted) << refused;
}

TEST(CheckRequestWire, RepeatedScalarsArePackedOrNotAndNeitherIsUnknown) {
  std::string unpacked;
  for (int64_t i = 0; i <= 2 * kMaxUnknownFields; ++i) unpacked += Varint(5 << 3) + Varint(7);
  EXPECT_TRUE(Check(*v1::SampleRequest::descriptor(), LengthDelimited(1, unpacked)).ok());
  v1::SampleRequest packed;
  for (int i = 0; i < 5000; ++i) packed.add_steps();
  for (int i = 0; i < 5000; ++i) packed.mutable_steps(0)->add_recent_tokens(i);
  EXPECT_TRUE(Check(packed, 5000).ok());
}

TEST(CheckRequestWire, RefusesTheGroupWireType) {
  const std::string group = Varint(100 << 3 | 3) + Varint(100 << 3 | 4);
  const absl::Status refused = Check(*v1::SampleRequest::descriptor(), LengthDelimited(1, group));
  EXPECT_EQ(refused.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(refused.message()), HasSubstr("group wire type"));
}

TEST(CheckRequestWire, LeavesBytesThatDoNotParseToTheParse) {
  for (const std::string& garbage :
       {std::string(64, '\xff'), std::string("\x0a\x80\x80\x80\x80\x10", 6), std::string("\x0a\x05\x12\x01", 4),
        LengthDelimited(1, std::string("\x1a\x09", 2))}) {
    EXPECT_TRUE(Check(*v1::SampleRequest::descriptor(), garbage).ok());
    EXPECT_FALSE(v1::SampleRequest().ParseFromString(garbage));
  }
}

// The walk counts every element of a repeated message field (other than maps) as a step. That holds while
// `steps` is the only such field a request can reach; a new one needs its own limit in CheckRequestWire.
void CollectRepeatedMessages(const Descriptor& type, std::vector<const Descriptor*>* seen,
                             std::vector<std::string>* fields) {
  for (const Descriptor* done : *seen) {
    if (done == &type) return;
  }
  seen->push_back(&type);
  for (int i = 0; i < type.field_count(); ++i) {
    const FieldDescriptor& field = *type.field(i);
    if (field.type() != FieldDescriptor::TYPE_MESSAGE) continue;
    if (field.is_repeated() && !field.is_map()) fields->push_back(field.full_name());
    CollectRepeatedMessages(*field.message_type(), seen, fields);
  }
}

TEST(CheckRequestWire, StepsAreTheOnlyRepeatedMessageFieldOfTheRequests) {
  for (const Descriptor* request :
       {v1::SampleRequest::descriptor(), v1::ShmControlRequest::descriptor(), v1::ListProfilesRequest::descriptor()}) {
    std::vector<const Descriptor*> seen;
    std::vector<std::string> fields;
    CollectRepeatedMessages(*request, &seen, &fields);
    for (const std::string& field : fields) EXPECT_EQ(field, "samplerd.v1.SampleRequest.steps") << request->name();
  }
}

}  // namespace
}  // namespace samplerd
