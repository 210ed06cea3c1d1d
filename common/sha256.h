// SHA-256 (OpenSSL EVP) over bytes, strings and files, as lowercase hex: the one hash
// every manifest, task and chain in solver uses.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <string_view>

namespace solver {

using Digest = std::array<std::uint8_t, 32>;

// Incremental hasher. Not thread-safe; one per stream.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void update(std::span<const std::byte> bytes);
  void update(std::string_view text);
  Digest finish();  // the hasher cannot be updated afterwards

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

std::string to_hex(std::span<const std::uint8_t> bytes);
std::string sha256_hex(std::span<const std::byte> bytes);
std::string sha256_hex(std::string_view text);
// Both stream the file; they throw Error(Io) naming the path when it cannot be read.
Digest sha256_file(const std::filesystem::path& path);
std::string sha256_file_hex(const std::filesystem::path& path);
// Exactly `digits` lowercase hex digits (keys, nonces, signatures); is_sha256_hex: 64 of them.
bool is_lower_hex(std::string_view text, std::size_t digits);
bool is_sha256_hex(std::string_view text);

}  // namespace solver
