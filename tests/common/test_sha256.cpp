// SHA-256: the published test vectors, agreement with coreutils' sha256sum on a file, and
// streaming in pieces equal to hashing in one go (checkpoints are hashed as they are written).
#include <catch2/catch.hpp>

#include <string>

#include "common/error.h"
#include "common/sha256.h"
#include "tests/test_support.h"

TEST_CASE("SHA-256 gives the published digests of the empty string and \"abc\"", "[common]") {
  CHECK(solver::sha256_hex(std::string_view("")) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(solver::sha256_hex(std::string_view("abc")) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  // FIPS 180-2's two-block message.
  CHECK(solver::sha256_hex(std::string_view("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")) ==
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

TEST_CASE("Hashing a file gives what sha256sum prints for it", "[common]") {
  solver::test::ScratchDir scratch("sha256-file");
  // Over one read buffer (1 MiB) so the streaming loop runs more than once.
  std::string content;
  for (int i = 0; content.size() < (1u << 20) + 12345; ++i) content += "line " + std::to_string(i) + "\n";
  const std::filesystem::path path = scratch / "data.txt";
  solver::test::write_text(path, content);

  const solver::test::CommandResult result = solver::test::run_command({"/usr/bin/sha256sum", path.string()});
  REQUIRE(result.exit_code == 0);
  const std::string expected = result.output.substr(0, 64);
  REQUIRE(solver::is_sha256_hex(expected));
  CHECK(solver::sha256_file_hex(path) == expected);
  CHECK(solver::sha256_hex(content) == expected);
}

TEST_CASE("Hashing in pieces equals hashing in one go", "[common]") {
  std::string message;
  for (int i = 0; i < 1000; ++i) message += static_cast<char>(i * 7 + 3);
  const std::string whole = solver::sha256_hex(message);
  for (const std::size_t piece : {std::size_t{1}, std::size_t{63}, std::size_t{64}, std::size_t{65}, std::size_t{999}}) {
    INFO("piece size " << piece);
    solver::Sha256 hasher;
    for (std::size_t at = 0; at < message.size(); at += piece) hasher.update(std::string_view(message).substr(at, piece));
    CHECK(solver::to_hex(hasher.finish()) == whole);
  }
}

TEST_CASE("Hashing a missing file is an Io error naming the path", "[common]") {
  try {
    solver::sha256_file_hex("/nonexistent/solver-test.bin");
    FAIL("hashing a missing file succeeded");
  } catch (const solver::Error& error) {
    CHECK(error.kind() == solver::ErrorKind::Io);
    CHECK_THAT(error.what(), Catch::Contains("/nonexistent/solver-test.bin"));
  }
}

TEST_CASE("is_sha256_hex accepts exactly 64 lowercase hex digits", "[common]") {
  CHECK(solver::is_sha256_hex(std::string(64, 'a')));
  CHECK_FALSE(solver::is_sha256_hex(std::string(64, 'A')));
  CHECK_FALSE(solver::is_sha256_hex(std::string(63, '0')));
  CHECK_FALSE(solver::is_sha256_hex(std::string(63, '0') + "g"));
}
