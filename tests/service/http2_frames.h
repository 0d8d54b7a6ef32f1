// Raw HTTP/2 for tests that speak below gRPC: the client preface, frames, a header block of literal fields
// (RFC 7541 section 6.2.2, no indexing and no Huffman coding), enough to open a gRPC call by hand, and a reader of
// what the server sends back.
//
//   std::string bytes = Http2Preface() + Http2Frame(kHttp2Settings, 0, 0, "");
//   bytes += Http2Frame(kHttp2Headers, kHttp2EndHeaders, 1, LiteralHeaderBlock(GrpcCallHeaders("/pkg.S/M")));
//   bytes += Http2Frame(kHttp2Data, kHttp2EndStream, 1, std::string(5, '\0'));  // one empty message
//   write(fd, bytes.data(), bytes.size());
//   Http2Reader reader(fd);
//   while (reader.ended_streams() < 1 && reader.ReadOnce() > 0) {}
#ifndef SAMPLERD_TESTS_SERVICE_HTTP2_FRAMES_H_
#define SAMPLERD_TESTS_SERVICE_HTTP2_FRAMES_H_

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace samplerd::testing {

inline constexpr uint8_t kHttp2Data = 0;
inline constexpr uint8_t kHttp2Headers = 1;
inline constexpr uint8_t kHttp2RstStream = 3;
inline constexpr uint8_t kHttp2Settings = 4;
inline constexpr uint8_t kHttp2WindowUpdate = 8;
inline constexpr uint8_t kHttp2EndStream = 0x1;
inline constexpr uint8_t kHttp2EndHeaders = 0x4;

inline std::string Http2Preface() { return "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"; }

inline std::string Http2Frame(uint8_t type, uint8_t flags, uint32_t stream, const std::string& payload) {
  std::string f;
  const uint32_t len = static_cast<uint32_t>(payload.size());
  f.push_back(static_cast<char>(len >> 16));
  f.push_back(static_cast<char>(len >> 8));
  f.push_back(static_cast<char>(len));
  f.push_back(static_cast<char>(type));
  f.push_back(static_cast<char>(flags));
  const uint32_t id = stream & 0x7fffffff;  // the reserved bit clear
  for (int shift = 24; shift >= 0; shift -= 8) f.push_back(static_cast<char>((id >> shift) & 0xff));
  return f + payload;
}

// A string literal: its length as an HPACK integer with a 7-bit prefix (RFC 7541 section 5.1), then its bytes.
inline std::string HpackString(const std::string& text) {
  std::string encoded;
  size_t length = text.size();
  if (length < 127) {
    encoded.push_back(static_cast<char>(length));
  } else {
    encoded.push_back(static_cast<char>(127));
    for (length -= 127; length >= 128; length >>= 7) encoded.push_back(static_cast<char>(0x80 | (length & 0x7f)));
    encoded.push_back(static_cast<char>(length));
  }
  return encoded + text;
}

// Names and values of any length; the block must still fit the one frame it is sent in (16 KiB by default).
inline std::string LiteralHeaderBlock(const std::vector<std::pair<std::string, std::string>>& fields) {
  std::string block;
  for (const auto& [name, value] : fields) {
    block.push_back('\0');
    block += HpackString(name);
    block += HpackString(value);
  }
  return block;
}

// The request headers of a gRPC call to `path`, as a gRPC client sends them.
inline std::vector<std::pair<std::string, std::string>> GrpcCallHeaders(const std::string& path) {
  return {{":method", "POST"},
          {":scheme", "http"},
          {":path", path},
          {":authority", "samplerd"},
          {"content-type", "application/grpc"},
          {"te", "trailers"}};
}

// The frames a server sends on one raw connection, read as they arrive: it acknowledges the server's SETTINGS (or
// the server would close the connection) and counts the streams the server ended (a call ends with its trailers,
// a HEADERS frame that ends the stream).
class Http2Reader {
 public:
  explicit Http2Reader(int fd) : fd_(fd) {}

  // One read(2) of the connection (it blocks, up to the socket's receive timeout), then every whole frame it
  // completed; returns what read returned.
  ssize_t ReadOnce() {
    char buffer[16384];
    const ssize_t n = read(fd_, buffer, sizeof(buffer));
    if (n > 0) received_.append(buffer, static_cast<size_t>(n));
    while (pos_ + 9 <= received_.size()) {
      const size_t length = (static_cast<size_t>(static_cast<uint8_t>(received_[pos_])) << 16) |
                            (static_cast<size_t>(static_cast<uint8_t>(received_[pos_ + 1])) << 8) |
                            static_cast<uint8_t>(received_[pos_ + 2]);
      if (pos_ + 9 + length > received_.size()) break;
      const uint8_t type = static_cast<uint8_t>(received_[pos_ + 3]);
      const uint8_t flags = static_cast<uint8_t>(received_[pos_ + 4]);
      if (type == kHttp2Settings && (flags & 1) == 0) {
        const std::string ack = Http2Frame(kHttp2Settings, 1, 0, "");
        if (write(fd_, ack.data(), ack.size()) != static_cast<ssize_t>(ack.size())) return -1;
      }
      if (type == kHttp2Headers && (flags & kHttp2EndStream) != 0) ++ended_streams_;
      pos_ += 9 + length;
    }
    return n;
  }

  int ended_streams() const { return ended_streams_; }

 private:
  int fd_;
  std::string received_;
  size_t pos_ = 0;
  int ended_streams_ = 0;
};

}  // namespace samplerd::testing

#endif  // SAMPLERD_TESTS_SERVICE_HTTP2_FRAMES_H_
