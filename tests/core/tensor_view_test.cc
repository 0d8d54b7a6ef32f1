// Pins tensor decoding: exact f16 / bf16 conversion, zero-copy float32 views, and the rejection of every
// malformed shape / dtype / length with the field and the received value.
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "core/field_error.h"
#include "core/tensor_view.h"
#include "gtest/gtest.h"

namespace samplerd {
namespace {

TEST(HalfConversionTest, EveryHalfRoundTripsExactly) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = HalfToFloat(static_cast<uint16_t>(h));
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(HalfToFloat(FloatToHalf(f))));
      continue;
    }
    EXPECT_EQ(FloatToHalf(f), h) << std::hex << h;
  }
  EXPECT_EQ(HalfToFloat(0x3c00), 1.0f);
  EXPECT_EQ(HalfToFloat(0xc000), -2.0f);
  EXPECT_EQ(HalfToFloat(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(HalfToFloat(0x7c00), std::numeric_limits<float>::infinity());
  EXPECT_EQ(FloatToHalf(65520.0f), 0x7c00) << "rounds past the largest half: inf";
  EXPECT_EQ(FloatToHalf(1.0f + std::ldexp(1.0f, -11)), 0x3c00) << "ties to even";
}

TEST(BFloat16ConversionTest, EveryBFloat16RoundTripsExactly) {
  for (uint32_t b = 0; b < 65536; ++b) {
    const float f = BFloat16ToFloat(static_cast<uint16_t>(b));
    if (std::isnan(f)) continue;
    EXPECT_EQ(FloatToBFloat16(f), b) << std::hex << b;
  }
  EXPECT_EQ(FloatToBFloat16(1.0f + std::ldexp(1.0f, -8)), 0x3f80) << "ties to even";
  EXPECT_EQ(FloatToBFloat16(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3f82) << "ties to even (up)";
}

TEST(ValidateTensorTest, Float32IsAViewOverTheBytes) {
  std::vector<float> values = {1.0f, -2.0f, 3.5f};
  const std::string bytes(reinterpret_cast<const char*>(values.data()), 12);
  const int64_t shape[] = {3};
  std::vector<float> scratch;
  absl::StatusOr<FloatView> v = ValidateTensor({1, shape, bytes}, TensorRole::kLogits, {}, "logits", &scratch);
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(reinterpret_cast<const char*>(v->data), bytes.data()) << "no copy for aligned float32";
  EXPECT_TRUE(scratch.empty());
  EXPECT_EQ(v->data[2], 3.5f);
}

TEST(ValidateTensorTest, MisalignedFloat32IsCopiedNotMisread) {
  std::vector<float> values = {1.0f, -2.0f};
  std::string storage(1 + 8, '\0');
  std::memcpy(storage.data() + 1, values.data(), 8);
  const int64_t shape[] = {2};
  std::vector<float> scratch;
  absl::StatusOr<FloatView> v =
      ValidateTensor({1, shape, absl::string_view(storage).substr(1)}, TensorRole::kLogits, {}, "logits", &scratch);
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(v->data, scratch.data());
  EXPECT_EQ(v->data[1], -2.0f);
}

TEST(ValidateTensorTest, HalfAndBFloat16AreConvertedOnceIntoScratch) {
  const uint16_t halves[] = {0x3c00, 0xc000, 0x3800, 0x0000, 0xbc00, 0x4000};  // 1 -2 .5 0 -1 2
  const std::string bytes(reinterpret_cast<const char*>(halves), sizeof(halves));
  const int64_t shape[] = {2, 3};
  std::vector<float> scratch;
  absl::StatusOr<FloatView> v = ValidateTensor({2, shape, bytes}, TensorRole::kAttention, {}, "attention", &scratch);
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(v->rows, 2);
  EXPECT_EQ(v->cols, 3);
  EXPECT_EQ(v->row(1)[2], 2.0f);
  absl::StatusOr<FloatView> b = ValidateTensor({3, shape, bytes}, TensorRole::kAttention, {}, "attention", &scratch);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->data[0], BFloat16ToFloat(0x3c00));
}

TEST(ValidateTensorTest, ThreeDimensionalAttentionIsReadAsRowsOfHeads) {
  std::vector<float> values(2 * 3 * 4, 0.0f);
  const std::string bytes(reinterpret_cast<const char*>(values.data()), values.size() * 4);
  const int64_t shape[] = {2, 3, 4};
  std::vector<float> scratch;
  absl::StatusOr<FloatView> v = ValidateTensor({1, shape, bytes}, TensorRole::kAttention, {}, "attention", &scratch);
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(v->rows, 6);
  EXPECT_EQ(v->cols, 4);
}

struct BadTensor {
  const char* name;
  int dtype;
  std::vector<int64_t> shape;
  size_t bytes;
  TensorRole role;
  absl::StatusCode code;
  const char* field;
  const char* mentions;  // the received value must appear in the message
};

class ValidateTensorRejectsTest : public ::testing::TestWithParam<BadTensor> {};

TEST_P(ValidateTensorRejectsTest, NamesTheFieldAndTheValue) {
  const BadTensor& t = GetParam();
  const std::string bytes(t.bytes, '\0');
  std::vector<float> scratch;
  TensorLimits limits;
  limits.max_vocab = 1000;
  limits.max_attention_elements = 4096;
  limits.max_attention_rows = 256;
  const char* prefix = t.role == TensorRole::kLogits ? "logits" : "attention";
  absl::StatusOr<FloatView> v = ValidateTensor({t.dtype, t.shape, bytes}, t.role, limits, prefix, &scratch);
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.status().code(), t.code) << v.status();
  EXPECT_EQ(ErrorField(v.status()), t.field);
  EXPECT_NE(v.status().message().find(t.mentions), absl::string_view::npos) << v.status();
}

INSTANTIATE_TEST_SUITE_P(
    Catalogue, ValidateTensorRejectsTest,
    ::testing::Values(
        BadTensor{"unspecified_dtype",
                  0,
                  {4},
                  16,
                  TensorRole::kLogits,
                  absl::StatusCode::kInvalidArgument,
                  "logits.dtype",
                  "got 0"},
        BadTensor{"unknown_dtype",
                  9,
                  {4},
                  16,
                  TensorRole::kLogits,
                  absl::StatusCode::kInvalidArgument,
                  "logits.dtype",
                  "got 9"},
        BadTensor{"logits_rank2",
                  1,
                  {2, 2},
                  16,
                  TensorRole::kLogits,
                  absl::StatusCode::kInvalidArgument,
                  "logits.shape",
                  "[2, 2]"},
        BadTensor{
            "logits_rank0", 1, {}, 0, TensorRole::kLogits, absl::StatusCode::kInvalidArgument, "logits.shape", "[]"},
        BadTensor{
            "empty_vocab", 1, {0}, 0, TensorRole::kLogits, absl::StatusCode::kInvalidArgument, "logits.shape", "[0]"},
        BadTensor{"negative_dim",
                  1,
                  {-4},
                  16,
                  TensorRole::kLogits,
                  absl::StatusCode::kInvalidArgument,
                  "logits.shape",
                  "[-4]"},
        BadTensor{
            "short_data", 1, {4}, 15, TensorRole::kLogits, absl::StatusCode::kInvalidArgument, "logits.data", "got 15"},
        BadTensor{"f32_length_as_f16",
                  2,
                  {4},
                  16,
                  TensorRole::kLogits,
                  absl::StatusCode::kInvalidArgument,
                  "logits.data",
                  "got 16"},
        BadTensor{"vocab_over_limit",
                  1,
                  {1001},
                  4004,
                  TensorRole::kLogits,
                  absl::StatusCode::kResourceExhausted,
                  "logits.shape",
                  "1001"},
        BadTensor{"vocab_beyond_int32_ids",
                  1,
                  {1LL << 31},
                  0,
                  TensorRole::kLogits,
                  absl::StatusCode::kInvalidArgument,
                  "logits.shape",
                  "token ids are int32"},
        BadTensor{"attention_rank1",
                  1,
                  {8},
                  32,
                  TensorRole::kAttention,
                  absl::StatusCode::kInvalidArgument,
                  "attention.shape",
                  "[8]"},
        BadTensor{"attention_rank4",
                  1,
                  {1, 1, 1, 1},
                  4,
                  TensorRole::kAttention,
                  absl::StatusCode::kInvalidArgument,
                  "attention.shape",
                  "[1, 1, 1, 1]"},
        BadTensor{"attention_overflow",
                  1,
                  {1LL << 40, 1LL << 40},
                  0,
                  TensorRole::kAttention,
                  absl::StatusCode::kInvalidArgument,
                  "attention.shape",
                  "overflows"},
        BadTensor{"attention_over_limit",
                  1,
                  {64, 65},
                  64 * 65 * 4,
                  TensorRole::kAttention,
                  absl::StatusCode::kResourceExhausted,
                  "attention.shape",
                  "4160"},
        BadTensor{"attention_rows_over_limit",
                  1,
                  {1, 257, 1},
                  257 * 4,
                  TensorRole::kAttention,
                  absl::StatusCode::kResourceExhausted,
                  "attention.shape",
                  "257 rows"},
        BadTensor{"attention_rows_over_limit_2d",
                  1,
                  {300, 2},
                  600 * 4,
                  TensorRole::kAttention,
                  absl::StatusCode::kResourceExhausted,
                  "attention.shape",
                  "300 rows"}),
    [](const ::testing::TestParamInfo<BadTensor>& info) { return std::string(info.param.name); });

TEST(ValidateTensorTest, AnErrorQuotesAHugeShapeShort) {
  const std::vector<int64_t> shape(1000000, 1);
  std::vector<float> scratch;
  absl::StatusOr<FloatView> v =
      ValidateTensor({1, shape, absl::string_view()}, TensorRole::kLogits, TensorLimits{}, "logits", &scratch);
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(ErrorField(v.status()), "logits.shape");
  EXPECT_LT(v.status().message().size(), 200u) << v.status().message();
  EXPECT_NE(v.status().message().find("(1000000 dimensions)"), absl::string_view::npos) << v.status().message();
}

}  // namespace
}  // namespace samplerd
