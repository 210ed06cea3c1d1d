// Device names: the one parser every command and the agent config use. Good names give their
// kind and ordinal; each bad one is a Config error that quotes the bad entry.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "common/device.h"
#include "common/error.h"

using solver::Device;
using solver::DeviceKind;
using solver::Error;
using solver::ErrorKind;

namespace {

// Expects parsing `list` to fail with a Config error whose message contains each of `parts`.
void require_rejected(const std::string& list, const std::vector<std::string>& parts) {
  try {
    solver::parse_device_list(list);
    FAIL("\"" << list << "\" was accepted");
  } catch (const Error& error) {
    INFO("message: " << error.what());
    CHECK(error.kind() == ErrorKind::Config);
    for (const std::string& part : parts) CHECK_THAT(error.what(), Catch::Contains(part));
  }
}

}  // namespace

TEST_CASE("Device names parse to their kind and CUDA ordinal, and print as cpu or cuda:N", "[common]") {
  CHECK(solver::parse_device("cpu") == Device{DeviceKind::Cpu, 0});
  CHECK(solver::parse_device("cuda") == Device{DeviceKind::Cuda, 0});
  CHECK(solver::parse_device("cuda:3") == Device{DeviceKind::Cuda, 3});
  CHECK(solver::parse_device("cuda:127") == Device{DeviceKind::Cuda, 127});
  CHECK(solver::parse_device("cuda").name() == "cuda:0");
  CHECK(solver::parse_device("cpu").name() == "cpu");
  CHECK_FALSE(solver::parse_device("cpu").is_cuda());

  CHECK(solver::parse_device_list("cpu") == std::vector<Device>{{DeviceKind::Cpu, 0}});
  CHECK(solver::parse_device_list("cpu,cpu") == std::vector<Device>{{DeviceKind::Cpu, 0}, {DeviceKind::Cpu, 0}});
  CHECK(solver::parse_device_list("cuda:0,cuda:1") == std::vector<Device>{{DeviceKind::Cuda, 0}, {DeviceKind::Cuda, 1}});
}

TEST_CASE("A bad device name or list is a Config error quoting the bad entry", "[common]") {
  require_rejected("tpu", {"device: expected cpu, cuda or cuda:N, got \"tpu\""});
  require_rejected("CPU", {"got \"CPU\""});
  require_rejected("cuda:", {"got \"cuda:\""});
  require_rejected("cuda:x", {"got \"cuda:x\""});
  require_rejected("cuda:-1", {"got \"cuda:-1\""});
  require_rejected("cuda:1 ", {"got \"cuda:1 \""});
  require_rejected("cuda:128", {"\"cuda:128\" is out of range (cuda:0 to cuda:127)"});
  require_rejected("cuda:99999999999", {"\"cuda:99999999999\" is out of range"});
  // In a list, the list and the entry.
  require_rejected("cuda:0,gpu1", {"device list \"cuda:0,gpu1\"", "got \"gpu1\""});
  require_rejected("", {"device list \"\"", "entry 1 is empty"});
  require_rejected("cpu,", {"device list \"cpu,\"", "entry 2 is empty"});
  require_rejected("cuda:0,,cuda:1", {"entry 2 is empty"});
  require_rejected("cpu,cuda:0", {"device list \"cpu,cuda:0\" mixes cpu and cuda:0"});
}
