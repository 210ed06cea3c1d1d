// Dotted versions: compared numerically component by component, missing components as 0, and
// anything else a market might send refused with an error naming where it came from and the value.
#include <catch2/catch.hpp>

#include "common/error.h"
#include "common/version.h"

namespace solver {
namespace {

using Catch::Matchers::Contains;

Version v(std::string_view text) { return Version::parse(text, "test"); }

TEST_CASE("versions compare numerically, component by component", "[unit]") {
  CHECK(v("0.1.0") < v("0.2.0"));
  CHECK(v("0.9.0") < v("0.10.0"));
  CHECK(v("1.0.0") > v("0.99.99"));
  CHECK(v("2") > v("1.9.9"));
  CHECK(v("0.1.0") == v("0.1.0"));
  CHECK(v("99.0.0") > v("0.1.0"));
}

TEST_CASE("a missing version component counts as 0", "[unit]") {
  CHECK(v("1.2") == v("1.2.0"));
  CHECK(v("1.2") < v("1.2.1"));
  CHECK(v("1") == v("1.0.0.0"));
}

TEST_CASE("the running solver's version is a valid version", "[unit]") {
  CHECK(Version::parse(solver_version(), "solver_version").text() == solver_version());
}

TEST_CASE("a malformed version is refused naming where it came from and the value", "[unit]") {
  for (const char* bad : {"", "1..2", ".1", "1.", "v1.2.0", "1.2.0-rc1", "1.-2", " 1.2", "1.2.x", "1234567890.0",
                          "1.2.3.4.5.6.7.8.9"}) {
    INFO(bad);
    CHECK_THROWS_WITH(Version::parse(bad, "market health.min_agent_version"),
                      Contains("market health.min_agent_version: \"" + std::string(bad) + "\" is not a version"));
  }
  CHECK_THROWS_AS(Version::parse("x", "field"), Error);
  CHECK_THROWS_WITH(Version::parse("1.2.x", "field"), Contains("not all digits") && Contains("such as 0.2.0"));
}

}  // namespace
}  // namespace solver
