// The multiformats pieces IPFS addresses are made of: unsigned varints, sha2-256 multihashes,
// CIDs (v0: base58btc multihash; v1: varint version, varint codec, multihash, in base32 lowercase
// with the 'b' multibase prefix) and the two bases. Private to net/: unixfs and ipfs use them.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "common/sha256.h"

namespace solver::net::detail {

inline constexpr std::uint64_t kCodecRaw = 0x55;
inline constexpr std::uint64_t kCodecDagPb = 0x70;
inline constexpr std::uint8_t kMultihashSha256 = 0x12;

// Appends `value` as an unsigned LEB128 varint (protobuf and multiformats use the same one).
void append_varint(std::string& out, std::uint64_t value);

std::string base32_lower(std::span<const std::uint8_t> bytes);  // RFC 4648, no padding
std::string base58btc(std::span<const std::uint8_t> bytes);     // the Bitcoin alphabet

struct Cid {
  int version = 1;
  std::uint64_t codec = kCodecRaw;
  Digest digest{};  // sha2-256, the only hash solver makes or accepts

  // The binary form, as a dag-pb link's Hash field holds it.
  std::string bytes() const;
  // The text form: "Qm..." for v0, "b..." (base32) for v1.
  std::string text() const;
};

// Parses a CIDv0 ("Qm...") or a CIDv1 in base32 ("b...") or base58btc ("z..."); sha2-256
// multihashes only.
// Throws Error(Input) naming the text and what was wrong.
Cid parse_cid(std::string_view text);

}  // namespace solver::net::detail
