// Where a download chosen by a stranger may go: a task's inputs and model, a bundle to verify.
// An open market's defaults: https only, public addresses only, no local files. Otherwise a task
// could make the rig fetch from the cloud metadata service (169.254.169.254), the operator's
// router or any service on its LAN or loopback, and read the answer back through the loss or
// the failure reason. A private pool opens what it needs in the agent config.
//
// The address rule is checked on the address each connection is about to use (net/http.cpp
// checks it in libcurl's socket callback), after DNS and on every redirect, so neither a DNS
// answer nor a redirect can lead past it.
#pragma once

#include <sys/socket.h>

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace solver::net {

// An IPv4 or IPv6 network in CIDR form, "10.1.0.0/16" or "fd00::/8".
struct IpNetwork {
  int family = AF_INET;  // AF_INET or AF_INET6
  std::array<std::uint8_t, 16> address{};
  int prefix_length = 0;
  std::string text;

  // Throws Error(Config) naming `field` for anything that is not an address with a prefix.
  static IpNetwork parse(std::string_view cidr, std::string_view field);
  bool contains(const sockaddr* address) const;
};

struct UrlPolicy {
  bool allow_local_files = false;        // local paths and file:// (your own tasks)
  bool allow_http = false;               // plain http:// besides https://
  bool allow_private_addresses = false;  // loopback, RFC 1918, link-local, CGNAT, ULA and other non-public ranges
  std::vector<IpNetwork> allowed_networks;  // reachable even when private addresses are not (a pool's own subnet)
};

// Throws Error(Input) naming `what` and the URL when its scheme is not https (or http, when
// allowed), or when it is a local path or file:// and local files are not allowed. ipfs:// and
// s3:// pass: they are fetched through the operator's own node and endpoint.
void check_location(const UrlPolicy& policy, std::string_view location, std::string_view what);

// nullopt when a connection to `address` is allowed; otherwise why not, e.g.
// "169.254.169.254 is link-local (169.254.0.0/16)".
std::optional<std::string> address_refusal(const UrlPolicy& policy, const sockaddr* address);

}  // namespace solver::net
