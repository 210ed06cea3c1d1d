// The solver's Ed25519 identity (OpenSSL): it signs bundle manifests and market requests. Stored as a PKCS#8 PEM file with mode 0600; a key readable by group or others is
// refused, because anyone who reads it can sign work in the solver's name.
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

namespace solver {

class SigningKey {
 public:
  static SigningKey generate();
  // Loads a PEM key. Throws Error(Config) if missing, not Ed25519, or readable by others.
  static SigningKey load(const std::filesystem::path& path);

  SigningKey(SigningKey&&) noexcept;
  SigningKey& operator=(SigningKey&&) noexcept;
  ~SigningKey();

  // Writes the key as PEM with mode 0600, creating parent folders. Refuses to overwrite.
  void save(const std::filesystem::path& path) const;
  std::string public_key_hex() const;                   // 32 bytes as 64 hex digits
  std::string sign_hex(std::string_view message) const;  // 64-byte signature as hex

 private:
  struct Impl;
  explicit SigningKey(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// False for a bad signature or malformed key/signature hex; never throws.
bool verify_signature(std::string_view public_key_hex, std::string_view message, std::string_view signature_hex);

}  // namespace solver
