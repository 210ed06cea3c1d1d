#include "net/detail/multiformats.h"

#include <fmt/format.h>

#include <algorithm>
#include <vector>

#include "common/error.h"

namespace solver::net::detail {
namespace {

constexpr std::string_view kBase32Alphabet = "abcdefghijklmnopqrstuvwxyz234567";
constexpr std::string_view kBase58Alphabet = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";

[[noreturn]] void bad_cid(std::string_view text, const std::string& problem) {
  throw Error(ErrorKind::Input, "\"" + std::string(text.substr(0, 100)) + "\" is not a CID solver accepts: " + problem);
}

std::vector<std::uint8_t> decode_base32_lower(std::string_view text, std::string_view cid_text) {
  std::vector<std::uint8_t> bytes;
  std::uint32_t buffer = 0;
  int bits = 0;
  for (const char c : text) {
    const auto value = kBase32Alphabet.find(c);
    if (value == std::string_view::npos)
      bad_cid(cid_text, std::string("'") + c + "' is not a base32 (lowercase) digit");
    buffer = (buffer << 5) | static_cast<std::uint32_t>(value);
    bits += 5;
    if (bits >= 8) {
      bits -= 8;
      bytes.push_back(static_cast<std::uint8_t>(buffer >> bits));
      buffer &= (1u << bits) - 1;
    }
  }
  return bytes;
}

std::vector<std::uint8_t> decode_base58btc(std::string_view text, std::string_view cid_text) {
  // Big-number conversion, base 58 to base 256, most significant digit first.
  std::vector<std::uint8_t> bytes;
  for (const char c : text) {
    const auto value = kBase58Alphabet.find(c);
    if (value == std::string_view::npos) bad_cid(cid_text, std::string("'") + c + "' is not a base58btc digit");
    std::uint32_t carry = static_cast<std::uint32_t>(value);
    for (auto it = bytes.rbegin(); it != bytes.rend(); ++it) {
      carry += 58u * *it;
      *it = static_cast<std::uint8_t>(carry & 0xff);
      carry >>= 8;
    }
    for (; carry > 0; carry >>= 8) bytes.insert(bytes.begin(), static_cast<std::uint8_t>(carry & 0xff));
  }
  const auto leading_ones = std::find_if(text.begin(), text.end(), [](char c) { return c != '1'; }) - text.begin();
  bytes.insert(bytes.begin(), static_cast<std::size_t>(leading_ones), 0);
  return bytes;
}

std::uint64_t read_varint(std::span<const std::uint8_t>& bytes, std::string_view cid_text) {
  std::uint64_t value = 0;
  for (int shift = 0; shift < 63; shift += 7) {
    if (bytes.empty()) bad_cid(cid_text, "it ends inside a varint");
    const std::uint8_t byte = bytes.front();
    bytes = bytes.subspan(1);
    value |= static_cast<std::uint64_t>(byte & 0x7f) << shift;
    if ((byte & 0x80) == 0) return value;
  }
  bad_cid(cid_text, "a varint longer than 9 bytes");
}

Digest read_sha256_multihash(std::span<const std::uint8_t> bytes, std::string_view cid_text) {
  const std::uint64_t function = read_varint(bytes, cid_text);
  const std::uint64_t length = read_varint(bytes, cid_text);
  if (function != kMultihashSha256 || length != 32)
    bad_cid(cid_text, fmt::format("multihash function 0x{:x} of {} bytes (expected sha2-256, 0x12 of 32 bytes)",
                                  function, length));
  if (bytes.size() != 32) bad_cid(cid_text, std::to_string(bytes.size()) + " digest bytes (expected 32)");
  Digest digest{};
  std::copy(bytes.begin(), bytes.end(), digest.begin());
  return digest;
}

}  // namespace

void append_varint(std::string& out, std::uint64_t value) {
  while (value >= 0x80) {
    out.push_back(static_cast<char>((value & 0x7f) | 0x80));
    value >>= 7;
  }
  out.push_back(static_cast<char>(value));
}

std::string base32_lower(std::span<const std::uint8_t> bytes) {
  std::string text;
  text.reserve((bytes.size() * 8 + 4) / 5);
  std::uint32_t buffer = 0;
  int bits = 0;
  for (const std::uint8_t byte : bytes) {
    buffer = (buffer << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      bits -= 5;
      text.push_back(kBase32Alphabet[(buffer >> bits) & 31]);
    }
    buffer &= (1u << bits) - 1;
  }
  if (bits > 0) text.push_back(kBase32Alphabet[(buffer << (5 - bits)) & 31]);
  return text;
}

std::string base58btc(std::span<const std::uint8_t> bytes) {
  // Big-number conversion, base 256 to base 58, least significant digit first.
  std::vector<std::uint8_t> digits;
  for (const std::uint8_t byte : bytes) {
    std::uint32_t carry = byte;
    for (std::uint8_t& digit : digits) {
      carry += static_cast<std::uint32_t>(digit) << 8;
      digit = static_cast<std::uint8_t>(carry % 58);
      carry /= 58;
    }
    for (; carry > 0; carry /= 58) digits.push_back(static_cast<std::uint8_t>(carry % 58));
  }
  const auto leading_zeros =
      std::find_if(bytes.begin(), bytes.end(), [](std::uint8_t b) { return b != 0; }) - bytes.begin();
  std::string text(static_cast<std::size_t>(leading_zeros), '1');
  for (auto it = digits.rbegin(); it != digits.rend(); ++it) text.push_back(kBase58Alphabet[*it]);
  return text;
}

std::string Cid::bytes() const {
  std::string out;
  if (version == 1) {
    append_varint(out, 1);
    append_varint(out, codec);
  }
  out.push_back(static_cast<char>(kMultihashSha256));
  out.push_back(static_cast<char>(digest.size()));
  out.append(reinterpret_cast<const char*>(digest.data()), digest.size());
  return out;
}

std::string Cid::text() const {
  const std::string binary = bytes();
  const std::span<const std::uint8_t> view(reinterpret_cast<const std::uint8_t*>(binary.data()), binary.size());
  if (version == 0) return base58btc(view);
  std::string text = "b";  // the multibase prefix of base32 lowercase
  text += base32_lower(view);
  return text;
}

Cid parse_cid(std::string_view text) {
  Cid cid;
  if (text.size() == 46 && text.starts_with("Qm")) {
    cid.version = 0;
    cid.codec = kCodecDagPb;
    cid.digest = read_sha256_multihash(decode_base58btc(text, text), text);
    return cid;
  }
  // Multibase prefixes: 'b' base32 lowercase (what solver writes), 'z' base58btc (what some
  // node replies use for CIDv1).
  std::vector<std::uint8_t> binary;
  if (text.starts_with("b")) {
    binary = decode_base32_lower(text.substr(1), text);
  } else if (text.starts_with("z")) {
    binary = decode_base58btc(text.substr(1), text);
  } else {
    bad_cid(text, "expected a CIDv0 (Qm...) or a CIDv1 in base32 (b...) or base58btc (z...)");
  }
  std::span<const std::uint8_t> rest(binary);
  const std::uint64_t version = read_varint(rest, text);
  if (version != 1) bad_cid(text, "version " + std::to_string(version) + " (expected 1)");
  cid.version = 1;
  cid.codec = read_varint(rest, text);
  if (cid.codec != kCodecRaw && cid.codec != kCodecDagPb)
    bad_cid(text, fmt::format("codec 0x{:x} (expected raw 0x55 or dag-pb 0x70)", cid.codec));
  cid.digest = read_sha256_multihash(rest, text);
  return cid;
}

}  // namespace solver::net::detail
