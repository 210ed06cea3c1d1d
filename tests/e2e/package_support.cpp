#include "tests/e2e/package_support.h"

#include <catch2/catch.hpp>

namespace solver::test {

namespace fs = std::filesystem;

BuiltPackage::BuiltPackage() {
  const fs::path build_dir = solver_binary().parent_path();  // cli/ puts solver at the build's top
  cpack = run_command({"/usr/bin/cpack", "--config", (build_dir / "CPackConfig.cmake").string(), "-B",
                       (dir / "out").string()});
  for (const fs::directory_entry& entry : fs::directory_iterator(dir / "out"))
    if (entry.path().extension() == ".deb") deb = entry.path();
  root = dir / "root";
  if (!deb.empty()) run_command({"/usr/bin/dpkg-deb", "-x", deb.string(), root.string()});
}

const BuiltPackage& built_package() {
  static const BuiltPackage built;
  INFO(built.cpack.output);
  REQUIRE(built.cpack.exit_code == 0);
  REQUIRE_FALSE(built.deb.empty());
  return built;
}

}  // namespace solver::test
