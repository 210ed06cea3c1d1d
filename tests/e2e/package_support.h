// The Debian package built from this build tree, shared by the tests that inspect it and the
// tests that install it.
#pragma once

#include <filesystem>
#include <string>

#include "tests/test_support.h"

namespace solver::test {

inline const std::string kUnitPath = "/lib/systemd/system/solver.service";

struct BuiltPackage {
  ScratchDir dir{"package"};
  CommandResult cpack;
  std::filesystem::path deb;
  std::filesystem::path root;  // the package's files, unpacked

  BuiltPackage();
};

// One package for every test case of the run: cpack and dpkg-deb -x, once. Requires that cpack
// succeeded.
const BuiltPackage& built_package();

}  // namespace solver::test
