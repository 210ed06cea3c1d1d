#pragma once
#include <compare>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>
namespace solver {
std::string_view solver_version();  // the project version, e.g. "0.1.0"

// A dotted version of numeric components, "0.2.0": compared component by component as numbers
// (0.10.0 is above 0.9.0), a missing component counting as 0 (1.2 equals 1.2.0).
class Version {
 public:
  // Throws Error(Input) "<what>: \"<text>\" is not a version (...)" unless `text` is 1 to 8
  // components of 1 to 9 digits each, joined by dots: versions come from markets, which are strangers.
  static Version parse(std::string_view text, std::string_view what);
  const std::string& text() const { return text_; }
  std::strong_ordering operator<=>(const Version& other) const;
  bool operator==(const Version& other) const { return (*this <=> other) == 0; }

 private:
  std::string text_;
  std::vector<std::uint32_t> parts_;
};
}
