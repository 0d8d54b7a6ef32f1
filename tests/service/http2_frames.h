// Raw HTTP/2 for tests that speak below gRPC: the client preface, frames, and a header block of literal fields
// (RFC 7541 section 6.2.2, no indexing and no Huffman coding), enough to open a gRPC call by hand.
//
//   std::string bytes = Http2Preface() + Http2Frame(kHttp2Settings, 0, 0, "");
//   bytes += Http2Frame(kHttp2Headers, kHttp2EndHeaders, 1, LiteralHeaderBlock({{":method", "POST"}, ...}));
#ifndef SAMPLERD_TESTS_SERVICE_HTTP2_FRAMES_H_
#define SAMPLERD_TESTS_SERVICE_HTTP2_FRAMES_H_

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

}  // namespace samplerd::testing

#endif  // SAMPLERD_TESTS_SERVICE_HTTP2_FRAMES_H_
