// confined_path and remove_confined: the one check between a stranger's name and the disk.
#include <catch2/catch.hpp>

#include <filesystem>

#include "common/files.h"
#include "tests/test_support.h"

namespace solver::test {
namespace {

TEST_CASE("is_plain_relative_path accepts names and nested names, nothing that climbs or is absolute", "[unit][files]") {
  CHECK(is_plain_relative_path("a"));
  CHECK(is_plain_relative_path("checkpoints/step-100.safetensors"));
  CHECK(is_plain_relative_path("..a"));
  CHECK_FALSE(is_plain_relative_path(""));
  CHECK_FALSE(is_plain_relative_path("/etc"));
  CHECK_FALSE(is_plain_relative_path(".."));
  CHECK_FALSE(is_plain_relative_path("../x"));
  CHECK_FALSE(is_plain_relative_path("a/../../x"));
  CHECK_FALSE(is_plain_relative_path("a/./b"));
  CHECK_FALSE(is_plain_relative_path("a//b"));
  CHECK_FALSE(is_plain_relative_path("a/"));
  CHECK_FALSE(is_plain_relative_path(std::string_view("a\0b", 3)));
}

TEST_CASE("confined_path keeps paths under the root and refuses symlinks that lead out", "[unit][files]") {
  ScratchDir dir("confined");
  const auto root = dir / "work";
  const auto outside = dir / "outside";
  std::filesystem::create_directories(root / "tasks");
  std::filesystem::create_directories(outside);

  CHECK(confined_path(root, "tasks/abc") == root / "tasks/abc");  // need not exist yet
  CHECK(error_kind_of([&] { confined_path(root, "../outside"); }) == ErrorKind::Input);
  CHECK(error_kind_of([&] { confined_path(root, outside); }) == ErrorKind::Input);  // absolute

  // A symlink inside the root that points out of it, as the last part or on the way.
  std::filesystem::create_directory_symlink(outside, root / "tasks" / "escape");
  const auto refused = error_of([&] { confined_path(root, "tasks/escape"); });
  REQUIRE(refused);
  CHECK(refused->kind() == ErrorKind::Input);
  CHECK_THAT(refused->what(), Catch::Contains("outside"));
  CHECK(error_kind_of([&] { confined_path(root, "tasks/escape/state.json"); }) == ErrorKind::Input);

  // A symlink that stays inside is fine.
  std::filesystem::create_directory_symlink(root / "tasks", root / "alias");
  CHECK(confined_path(root, "alias/abc") == root / "alias/abc");
}

TEST_CASE("remove_confined removes a folder under the root and nothing a symlink or a climb leads to", "[unit][files]") {
  ScratchDir dir("remove-confined");
  const auto root = dir / "tasks";
  const auto canary = dir / "canary";
  write_text(root / "t1" / "state.json", "{}");
  write_text(canary / "keep.txt", "precious");
  std::filesystem::create_directory_symlink(canary, root / "t2");

  remove_confined(root, root / "t1");
  CHECK_FALSE(std::filesystem::exists(root / "t1"));
  CHECK(error_kind_of([&] { remove_confined(root, root / "t2"); }) == ErrorKind::Input);
  CHECK(error_kind_of([&] { remove_confined(root, root / ".." / "canary"); }) == ErrorKind::Input);
  CHECK(error_kind_of([&] { remove_confined(root, canary); }) == ErrorKind::Input);
  CHECK(error_kind_of([&] { remove_confined(root, root); }) == ErrorKind::Input);
  CHECK(std::filesystem::exists(canary / "keep.txt"));
}

}  // namespace
}  // namespace solver::test
