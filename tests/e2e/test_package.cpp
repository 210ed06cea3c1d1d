// The Debian package and its systemd unit (packaging/, docs/operators.md): cpack builds
// solver_<version>_amd64.deb from this build; dpkg-deb shows what it holds, at which paths and
// modes, which files are conffiles and what it depends on; systemd-analyze checks the unit it
// ships (no running systemd needed) and rates its hardening.
#include <catch2/catch.hpp>

#include <fstream>
#include <map>
#include <regex>
#include <sstream>

#include "tests/e2e/e2e_support.h"
#include "tests/e2e/package_support.h"

using namespace solver::test;
namespace fs = std::filesystem;

namespace {

std::string dpkg_deb(const std::vector<std::string>& arguments) {
  std::vector<std::string> argv{"/usr/bin/dpkg-deb"};
  argv.insert(argv.end(), arguments.begin(), arguments.end());
  const CommandResult result = run_command(argv);
  INFO(result.output);
  REQUIRE(result.exit_code == 0);
  return result.output;
}

// `dpkg-deb --contents` lines by path ("./usr/bin/solver" as "/usr/bin/solver"): mode and owner.
std::map<std::string, std::string> contents_by_path(const fs::path& deb) {
  std::map<std::string, std::string> entries;
  std::istringstream lines(dpkg_deb({"--contents", deb.string()}));
  const std::regex line(R"(^(\S+)\s+(\S+)\s+\d+\s+\S+\s+\S+\s+\.(/\S*?)/?$)");
  for (std::string text; std::getline(lines, text);) {
    std::smatch match;
    if (std::regex_match(text, match, line)) entries[match[3]] = std::string(match[1]) + " " + std::string(match[2]);
  }
  return entries;
}

// The shipped unit with ExecStart naming the unpacked binary, which systemd-analyze requires to exist.
fs::path unit_against_unpacked_binary(const BuiltPackage& built) {
  std::ifstream in(built.root / kUnitPath.substr(1));
  std::stringstream text;
  text << in.rdbuf();
  const std::string installed = "ExecStart=/usr/bin/solver ";
  std::string unit = text.str();
  const std::size_t at = unit.find(installed);
  REQUIRE(at != std::string::npos);
  unit.replace(at, installed.size(), "ExecStart=" + (built.root / "usr/bin/solver").string() + " ");
  const fs::path path = built.dir / "unit" / "solver.service";
  write_text(path, unit);
  return path;
}

}  // namespace

TEST_CASE("package: cpack builds solver_VERSION_amd64.deb with the binary, unit, config and docs at their paths and modes", "[e2e]") {
  const BuiltPackage& built = built_package();
  CHECK(std::regex_match(built.deb.filename().string(), std::regex(R"(solver_\d+\.\d+\.\d+_amd64\.deb)")));

  const std::map<std::string, std::string> entries = contents_by_path(built.deb);
  INFO(dpkg_deb({"--contents", built.deb.string()}));
  const std::map<std::string, std::string> expected{
      {"/usr/bin/solver", "-rwxr-xr-x root/root"},
      {kUnitPath, "-rw-r--r-- root/root"},
      {"/etc/solver/agent.json", "-rw-r--r-- root/root"},
      {"/usr/share/doc/solver/copyright", "-rw-r--r-- root/root"},
      {"/usr/share/doc/solver/operators.md", "-rw-r--r-- root/root"},
      {"/usr/share/doc/solver/security.md", "-rw-r--r-- root/root"}};
  for (const auto& [path, mode] : expected) {
    INFO(path);
    REQUIRE(entries.count(path) == 1);
    CHECK(entries.at(path) == mode);
  }
  // State, cache and key are made on the rig (postinst, the agent), never shipped: dpkg must not
  // own them, or a removal or an upgrade would touch them.
  for (const auto& [path, mode] : entries) {
    INFO(path);
    CHECK_FALSE(path.starts_with("/var/"));
    CHECK(path.find(".key") == std::string::npos);
  }

  // The packaged binary runs.
  const CommandResult version = run_command({(built.root / "usr/bin/solver").string(), "version"});
  INFO(version.output);
  CHECK(version.exit_code == 0);
}

TEST_CASE("package: the config is a conffile, the maintainer scripts are there, and Depends names what the binary links", "[e2e]") {
  const BuiltPackage& built = built_package();
  CHECK(dpkg_deb({"--info", built.deb.string(), "conffiles"}) == "/etc/solver/agent.json\n");
  for (const std::string script : {"postinst", "prerm", "postrm"}) {
    INFO(script);
    CHECK_FALSE(dpkg_deb({"--info", built.deb.string(), script}).empty());
  }

  CHECK(dpkg_deb({"-f", built.deb.string(), "Package"}) == "solver\n");
  CHECK(dpkg_deb({"-f", built.deb.string(), "Architecture"}) == "amd64\n");
  const std::string depends = dpkg_deb({"-f", built.deb.string(), "Depends"});
  INFO(depends);
  CHECK(depends.find("adduser") != std::string::npos);  // postinst's system user
  CHECK(depends.find("libc6") != std::string::npos);    // dpkg-shlibdeps ran over the binary
  CHECK(depends.find("libtorch") != std::string::npos);
  CHECK(depends.find("libcurl") != std::string::npos);

  // The shipped config is one the agent reads: JSON with comments, the system paths.
  const std::string config = (built.root / "etc/solver/agent.json").string();
  const CommandResult status = run_command({solver_binary().string(), "status", "--config", config, "--json"});
  INFO(status.output);
  CHECK(status.exit_code != 78);  // not a configuration error
  CHECK(status.output.find("/var/lib/solver") != std::string::npos);
}

TEST_CASE("package: systemd-analyze verify accepts the shipped unit", "[e2e]") {
  const BuiltPackage& built = built_package();
  const fs::path unit = unit_against_unpacked_binary(built);
  const CommandResult verify = run_command({"/usr/bin/systemd-analyze", "verify", unit.string()});
  INFO(verify.output);
  CHECK(verify.exit_code == 0);
  CHECK(verify.output.empty());  // no warning either
}

TEST_CASE("package: systemd-analyze security rates the shipped unit's exposure at most 2.5", "[e2e]") {
  const BuiltPackage& built = built_package();
  const fs::path unit = unit_against_unpacked_binary(built);
  const CommandResult security =
      run_command({"/usr/bin/systemd-analyze", "security", "--offline=yes", "--no-pager", unit.string()});
  INFO(security.output);
  std::smatch match;
  REQUIRE(std::regex_search(security.output, match, std::regex(R"(Overall exposure level for solver\.service: (\d+\.\d+))")));
  const double exposure = std::stod(match[1]);
  WARN("systemd-analyze security: exposure " << exposure);
  CHECK(exposure <= 2.5);
}
