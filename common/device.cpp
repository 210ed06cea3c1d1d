#include "common/device.h"

#include <charconv>

#include "common/error.h"

namespace solver {
namespace {

constexpr std::string_view kExpected = "expected cpu, cuda or cuda:N";

}  // namespace

std::string Device::name() const { return is_cuda() ? "cuda:" + std::to_string(index) : "cpu"; }

Device parse_device(std::string_view text) {
  if (text == "cpu") return Device{DeviceKind::Cpu, 0};
  if (text == "cuda") return Device{DeviceKind::Cuda, 0};
  constexpr std::string_view kCudaPrefix = "cuda:";
  const std::string_view digits = text.starts_with(kCudaPrefix) ? text.substr(kCudaPrefix.size()) : std::string_view();
  if (!digits.empty() && digits.find_first_not_of("0123456789") == std::string_view::npos) {
    int index = 0;
    const std::errc error = std::from_chars(digits.data(), digits.data() + digits.size(), index).ec;
    if (error == std::errc() && index <= kMaxCudaIndex) return Device{DeviceKind::Cuda, index};
    throw Error(ErrorKind::Config, "device: \"" + std::string(text) + "\" is out of range (cuda:0 to cuda:" +
                                       std::to_string(kMaxCudaIndex) + ")");
  }
  throw Error(ErrorKind::Config, "device: " + std::string(kExpected) + ", got \"" + std::string(text) + "\"");
}

std::vector<Device> parse_device_list(std::string_view text) {
  const std::string list_name = "device list \"" + std::string(text) + "\"";
  std::vector<std::string_view> entries;
  for (std::size_t start = 0;;) {
    const std::size_t comma = text.find(',', start);
    entries.push_back(text.substr(start, comma == std::string_view::npos ? std::string_view::npos : comma - start));
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  std::vector<Device> devices;
  for (std::size_t i = 0; i < entries.size(); ++i) {
    if (entries[i].empty())
      throw Error(ErrorKind::Config, list_name + ": entry " + std::to_string(i + 1) + " is empty; " + std::string(kExpected) +
                                         ", or a comma list of them");
    try {
      devices.push_back(parse_device(entries[i]));
    } catch (const Error& error) {
      if (entries.size() == 1) throw;
      throw error.with_context(list_name);
    }
  }
  for (const Device& device : devices)
    if (device.kind != devices.front().kind)
      throw Error(ErrorKind::Config, list_name + " mixes " + devices.front().name() + " and " + device.name() +
                                         "; the devices of one task must all be cpu or all be cuda");
  return devices;
}

}  // namespace solver
