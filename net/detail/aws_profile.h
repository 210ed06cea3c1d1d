// One profile of the AWS CLI's files: its keys from the shared credentials file
// (~/.aws/credentials, section [name]), then from the config file (~/.aws/config, section
// [profile name], or [default]), and its other settings (region, endpoint_url) from the config
// file. Each file is read on first use, so a broken file matters only when it is needed.
#pragma once

#include <filesystem>
#include <map>
#include <optional>
#include <string>

#include "net/sigv4.h"

namespace solver::net::detail {

class AwsProfile {
 public:
  // Either path may be empty: that file is then taken as empty.
  AwsProfile(std::string name, std::filesystem::path credentials_file, std::filesystem::path config_file);

  // Throw Error(Config) naming the file and line when a file it reads is malformed.
  std::optional<sigv4::Credentials> credentials();
  std::optional<std::string> setting(const std::string& name);  // from the config file; empty counts as absent

  // "profile \"<name>\" of <credentials file> or <config file>", for errors.
  std::string describe() const;

 private:
  using IniFile = std::map<std::string, std::map<std::string, std::string>>;
  const IniFile& credentials_ini();
  const IniFile& config_ini();

  std::string name_;
  std::filesystem::path credentials_file_;
  std::filesystem::path config_file_;
  std::optional<IniFile> credentials_ini_;
  std::optional<IniFile> config_ini_;
};

}  // namespace solver::net::detail
