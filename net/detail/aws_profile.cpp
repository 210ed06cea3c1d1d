#include "net/detail/aws_profile.h"

#include <fstream>
#include <string_view>
#include <utility>

#include "common/error.h"

namespace solver::net::detail {
namespace {

using IniFile = std::map<std::string, std::map<std::string, std::string>>;

std::string trim(std::string_view text) {
  const std::size_t begin = text.find_first_not_of(" \t\r\n");
  if (begin == std::string_view::npos) return "";
  return std::string(text.substr(begin, text.find_last_not_of(" \t\r\n") - begin + 1));
}

// AWS's INI dialect: [section], key = value, comments from '#' or ';' at the line's start;
// indented lines continue a nested setting (such as "s3 =" blocks) and are not needed here.
IniFile read_ini(const std::filesystem::path& path) {
  IniFile ini;
  if (path.empty()) return ini;
  std::ifstream in(path);
  if (!in) return ini;
  std::string line;
  std::string section;
  for (int number = 1; std::getline(in, line); ++number) {
    if (!line.empty() && (line.front() == ' ' || line.front() == '\t')) continue;
    const std::string text = trim(line);
    if (text.empty() || text.front() == '#' || text.front() == ';') continue;
    if (text.front() == '[') {
      if (text.back() != ']')
        throw Error(ErrorKind::Config, path.string() + ":" + std::to_string(number) + ": a section header lacks its ']'");
      section = trim(std::string_view(text).substr(1, text.size() - 2));
      ini[section];
      continue;
    }
    const std::size_t equals = text.find('=');
    if (equals == std::string::npos || section.empty())
      throw Error(ErrorKind::Config, path.string() + ":" + std::to_string(number) +
                                         ": expected 'name = value' inside a [section], got a line without one");
    ini[section][trim(std::string_view(text).substr(0, equals))] = trim(std::string_view(text).substr(equals + 1));
  }
  return ini;
}

std::optional<std::string> ini_value(const IniFile& ini, const std::string& section, const std::string& name) {
  const auto found = ini.find(section);
  if (found == ini.end()) return std::nullopt;
  const auto value = found->second.find(name);
  if (value == found->second.end() || value->second.empty()) return std::nullopt;
  return value->second;
}

std::optional<sigv4::Credentials> ini_credentials(const IniFile& ini, const std::string& section) {
  const auto key_id = ini_value(ini, section, "aws_access_key_id");
  const auto secret = ini_value(ini, section, "aws_secret_access_key");
  if (!key_id || !secret) return std::nullopt;
  return sigv4::Credentials{*key_id, *secret, ini_value(ini, section, "aws_session_token").value_or("")};
}

}  // namespace

AwsProfile::AwsProfile(std::string name, std::filesystem::path credentials_file, std::filesystem::path config_file)
    : name_(std::move(name)), credentials_file_(std::move(credentials_file)), config_file_(std::move(config_file)) {}

const AwsProfile::IniFile& AwsProfile::credentials_ini() {
  if (!credentials_ini_) credentials_ini_ = read_ini(credentials_file_);
  return *credentials_ini_;
}

const AwsProfile::IniFile& AwsProfile::config_ini() {
  if (!config_ini_) config_ini_ = read_ini(config_file_);
  return *config_ini_;
}

std::optional<sigv4::Credentials> AwsProfile::credentials() {
  if (auto from_credentials_file = ini_credentials(credentials_ini(), name_)) return from_credentials_file;
  return ini_credentials(config_ini(), name_ == "default" ? name_ : "profile " + name_);
}

std::optional<std::string> AwsProfile::setting(const std::string& name) {
  return ini_value(config_ini(), name_ == "default" ? name_ : "profile " + name_, name);
}

std::string AwsProfile::describe() const {
  return "profile \"" + name_ + "\" of " + credentials_file_.string() + " or " + config_file_.string();
}

}  // namespace solver::net::detail
