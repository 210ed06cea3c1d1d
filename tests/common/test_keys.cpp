// Ed25519 keys: signatures verify only for the unchanged message under the signer's key, and
// key files are private (mode 0600), never overwritten, and refused when others can read them.
#include <catch2/catch.hpp>

#include <sys/stat.h>

#include <functional>

#include "common/error.h"
#include "common/keys.h"
#include "tests/test_support.h"

namespace solver {
namespace {

using Catch::Matchers::Contains;

// A P-256 key in PKCS#8 PEM: a valid private key of the wrong algorithm.
constexpr const char* kEcKeyPem =
    "-----BEGIN PRIVATE KEY-----\n"
    "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgDOo8h+BhQ2DpKcxW\n"
    "rAjA2wTO9p91DeCNa3dsOPNsqBqhRANCAAR6sEiDIpk1egJPINJciJ9SxKlyE63L\n"
    "mbeMpnlq+Cdkuu3U71/pX5rKpEJnuQveGjCGkERdlb0QIhA0B8oJLcpq\n"
    "-----END PRIVATE KEY-----\n";


unsigned mode_of(const std::filesystem::path& path) {
  struct stat info {};
  REQUIRE(::stat(path.c_str(), &info) == 0);
  return info.st_mode & 0777;
}

TEST_CASE("A signature verifies only for the unchanged message under the signer's key", "[proof]") {
  const SigningKey key = SigningKey::generate();
  const std::string public_key = key.public_key_hex();
  REQUIRE(public_key.size() == 64);
  const std::string message = "{\"schema\":\"solver.pol-bundle/1\"}";
  const std::string signature = key.sign_hex(message);
  REQUIRE(signature.size() == 128);

  CHECK(verify_signature(public_key, message, signature));
  CHECK_FALSE(verify_signature(public_key, message + " ", signature));
  std::string tampered = signature;
  tampered[10] = tampered[10] == '0' ? '1' : '0';
  CHECK_FALSE(verify_signature(public_key, message, tampered));
  CHECK_FALSE(verify_signature(SigningKey::generate().public_key_hex(), message, signature));
  CHECK_FALSE(verify_signature("not hex", message, signature));
  CHECK_FALSE(verify_signature(public_key, message, signature.substr(2)));
  CHECK_FALSE(verify_signature(public_key, message, ""));
}

TEST_CASE("A saved key is private to its owner and loads back as the same identity", "[proof]") {
  test::ScratchDir scratch("keys");
  const std::filesystem::path path = scratch / "nested/config/solver.key";
  const SigningKey key = SigningKey::generate();
  key.save(path);
  CHECK(mode_of(path) == 0600);

  const SigningKey loaded = SigningKey::load(path);
  CHECK(loaded.public_key_hex() == key.public_key_hex());
  CHECK(verify_signature(key.public_key_hex(), "hello", loaded.sign_hex("hello")));
}

TEST_CASE("Loading a key that others can read is refused with the chmod fix", "[proof]") {
  test::ScratchDir scratch("keys");
  const std::filesystem::path path = scratch / "solver.key";
  SigningKey::generate().save(path);
  REQUIRE(::chmod(path.c_str(), 0644) == 0);
  CHECK_THROWS_WITH(SigningKey::load(path), Contains("key file " + path.string() + " is readable by others (mode 0644): run chmod 600 " + path.string()));
  CHECK(test::error_kind_of([&] { SigningKey::load(path); }) == ErrorKind::Config);
}

TEST_CASE("Saving a key never overwrites an existing one", "[proof]") {
  test::ScratchDir scratch("keys");
  const std::filesystem::path path = scratch / "solver.key";
  const SigningKey first = SigningKey::generate();
  first.save(path);
  CHECK_THROWS_WITH(SigningKey::generate().save(path), Contains(path.string()) && Contains("already exists"));
  CHECK(test::error_kind_of([&] { SigningKey::generate().save(path); }) == ErrorKind::Config);
  CHECK(SigningKey::load(path).public_key_hex() == first.public_key_hex());
}

TEST_CASE("Loading a missing, malformed or non-Ed25519 key says what is wrong", "[proof]") {
  test::ScratchDir scratch("keys");
  CHECK_THROWS_WITH(SigningKey::load(scratch / "absent.key"), Contains("does not exist") && Contains("solver keygen"));
  CHECK(test::error_kind_of([&] { SigningKey::load(scratch / "absent.key"); }) == ErrorKind::Config);

  const std::filesystem::path garbage = scratch / "garbage.key";
  test::write_text(garbage, "not a key\n");
  REQUIRE(::chmod(garbage.c_str(), 0600) == 0);
  CHECK_THROWS_WITH(SigningKey::load(garbage), Contains("is not a PEM private key"));

  const std::filesystem::path ec = scratch / "ec.key";
  test::write_text(ec, kEcKeyPem);
  REQUIRE(::chmod(ec.c_str(), 0600) == 0);
  CHECK_THROWS_WITH(SigningKey::load(ec), Contains("EC key") && Contains("Ed25519"));
  CHECK(test::error_kind_of([&] { SigningKey::load(ec); }) == ErrorKind::Config);
}

}  // namespace
}  // namespace solver
