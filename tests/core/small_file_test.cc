#include "core/small_file.h"

#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <string>

#include "gtest/gtest.h"

namespace samplerd {
namespace {

std::string WriteTempFile(const std::string& name, const std::string& contents) {
  const std::string path = ::testing::TempDir() + name;
  std::ofstream(path, std::ios::binary | std::ios::trunc) << contents;
  return path;
}

TEST(ReadSmallFile, AFileIsReadWholeByteForByte) {
  const std::string contents("a\0b\n\xff", 5);
  const absl::StatusOr<std::string> text = ReadSmallFile(WriteTempFile("small-file-bytes", contents), 64);
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(*text, contents);
}

TEST(ReadSmallFile, AnEmptyFileIsEmptyText) {
  const absl::StatusOr<std::string> text = ReadSmallFile(WriteTempFile("small-file-empty", ""), 64);
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_TRUE(text->empty());
}

TEST(ReadSmallFile, AFileOfExactlyTheLimitIsReadAndOneByteMoreIsRefused) {
  const absl::StatusOr<std::string> at_limit = ReadSmallFile(WriteTempFile("small-file-at", "abcd"), 4);
  ASSERT_TRUE(at_limit.ok()) << at_limit.status();
  EXPECT_EQ(*at_limit, "abcd");

  const absl::Status over = ReadSmallFile(WriteTempFile("small-file-over", "abcde"), 4).status();
  EXPECT_EQ(over.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(over.message().find("is 5 bytes, over the 4 allowed"), absl::string_view::npos) << over;
}

TEST(ReadSmallFile, NothingAtThePathIsNotFound) {
  EXPECT_EQ(ReadSmallFile(::testing::TempDir() + "small-file-none/x", 64).status().code(), absl::StatusCode::kNotFound);
}

// Opening a FIFO for reading waits for a writer unless it is opened non-blocking: a hang here is the failure.
TEST(ReadSmallFile, AFifoADeviceAndADirectoryAreRefusedWithoutWaiting) {
  const std::string fifo = ::testing::TempDir() + "small-file.fifo";
  unlink(fifo.c_str());
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  for (const std::string& path : {fifo, std::string("/dev/zero"), ::testing::TempDir()}) {
    const absl::Status status = ReadSmallFile(path, 64).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << path << ": " << status;
    EXPECT_EQ(status.message(), "is not a regular file") << path;
  }
  unlink(fifo.c_str());
}

}  // namespace
}  // namespace samplerd
