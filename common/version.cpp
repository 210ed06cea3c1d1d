#include "common/version.h"

#include <algorithm>

#include "common/error.h"
#include "common/log.h"

namespace solver {
namespace {
constexpr std::size_t kMaxComponents = 8;
constexpr std::size_t kMaxDigits = 9;  // fits a uint32_t
}  // namespace

std::string_view solver_version() { return SOLVER_VERSION; }

Version Version::parse(std::string_view text, std::string_view what) {
  const auto refuse = [&](std::string_view why) -> Version {
    throw Error(ErrorKind::Input, std::string(what) + ": \"" + escape_log_text(text.substr(0, 64)) + "\" is not a version (" +
                                      std::string(why) + "; expected digits joined by dots, such as 0.2.0)");
  };
  Version version;
  std::size_t start = 0;
  while (true) {
    const std::size_t dot = std::min(text.find('.', start), text.size());
    const std::string_view part = text.substr(start, dot - start);
    if (part.empty()) return refuse("an empty component");
    if (part.size() > kMaxDigits) return refuse("a component longer than 9 digits");
    if (!std::all_of(part.begin(), part.end(), [](char c) { return c >= '0' && c <= '9'; }))
      return refuse("a component that is not all digits");
    if (version.parts_.size() == kMaxComponents) return refuse("more than 8 components");
    std::uint32_t value = 0;
    for (const char c : part) value = value * 10 + static_cast<std::uint32_t>(c - '0');
    version.parts_.push_back(value);
    if (dot == text.size()) break;
    start = dot + 1;
  }
  version.text_ = std::string(text);
  return version;
}

std::strong_ordering Version::operator<=>(const Version& other) const {
  const std::size_t count = std::max(parts_.size(), other.parts_.size());
  for (std::size_t i = 0; i < count; ++i) {
    const std::uint32_t mine = i < parts_.size() ? parts_[i] : 0;
    const std::uint32_t theirs = i < other.parts_.size() ? other.parts_[i] : 0;
    if (mine != theirs) return mine <=> theirs;
  }
  return std::strong_ordering::equal;
}

}  // namespace solver
