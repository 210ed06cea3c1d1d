#include "net/url_policy.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <cstring>

#include "common/error.h"

namespace solver::net {
namespace {

// An address as family and bytes (4 or 16 of them used).
struct Address {
  int family = AF_UNSPEC;
  std::array<std::uint8_t, 16> bytes{};
};

Address address_of(const sockaddr* address) {
  Address result;
  if (address->sa_family == AF_INET) {
    result.family = AF_INET;
    const auto* v4 = reinterpret_cast<const sockaddr_in*>(address);
    std::memcpy(result.bytes.data(), &v4->sin_addr, 4);
  } else if (address->sa_family == AF_INET6) {
    result.family = AF_INET6;
    const auto* v6 = reinterpret_cast<const sockaddr_in6*>(address);
    std::memcpy(result.bytes.data(), &v6->sin6_addr, 16);
  }
  return result;
}

bool prefix_matches(const std::uint8_t* address, const std::uint8_t* network, int prefix_length) {
  const int whole = prefix_length / 8;
  if (std::memcmp(address, network, static_cast<std::size_t>(whole)) != 0) return false;
  const int rest = prefix_length % 8;
  if (rest == 0) return true;
  const auto mask = static_cast<std::uint8_t>(0xFF << (8 - rest));
  return (address[whole] & mask) == (network[whole] & mask);
}

std::string address_text(const Address& address) {
  char text[INET6_ADDRSTRLEN] = {};
  ::inet_ntop(address.family, address.bytes.data(), text, sizeof text);
  return text;
}

// The ranges an open market's task has no business reaching (RFC 6890 and its successors).
struct NamedRange {
  IpNetwork network;
  const char* kind;
};

const std::vector<NamedRange>& non_public_ranges() {
  static const std::vector<NamedRange> ranges = [] {
    const std::pair<const char*, const char*> table[] = {
        {"0.0.0.0/8", "\"this network\""},      {"10.0.0.0/8", "private (RFC 1918)"},
        {"100.64.0.0/10", "carrier-grade NAT"}, {"127.0.0.0/8", "loopback"},
        {"169.254.0.0/16", "link-local"},       {"172.16.0.0/12", "private (RFC 1918)"},
        {"192.0.0.0/24", "IETF protocol"},      {"192.0.2.0/24", "documentation"},
        {"192.168.0.0/16", "private (RFC 1918)"}, {"198.18.0.0/15", "benchmarking"},
        {"198.51.100.0/24", "documentation"},   {"203.0.113.0/24", "documentation"},
        {"224.0.0.0/4", "multicast"},           {"240.0.0.0/4", "reserved"},
        {"::/128", "unspecified"},              {"::1/128", "loopback"},
        {"100::/64", "discard"},                {"2001::/32", "Teredo"},
        {"2001:db8::/32", "documentation"},     {"fc00::/7", "unique local"},
        {"fe80::/10", "link-local"},            {"ff00::/8", "multicast"},
    };
    std::vector<NamedRange> parsed;
    for (const auto& [cidr, kind] : table) parsed.push_back({IpNetwork::parse(cidr, "built-in range"), kind});
    return parsed;
  }();
  return ranges;
}

// The IPv4 address an IPv6 one carries, for the forms that reach IPv4 hosts: v4-mapped
// (::ffff:a.b.c.d), NAT64 (64:ff9b::a.b.c.d) and 6to4 (2002:aabb:ccdd::).
std::optional<Address> embedded_ipv4(const Address& address) {
  if (address.family != AF_INET6) return std::nullopt;
  const std::uint8_t* b = address.bytes.data();
  static constexpr std::uint8_t kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF};
  static constexpr std::uint8_t kNat64[12] = {0, 0x64, 0xFF, 0x9B, 0, 0, 0, 0, 0, 0, 0, 0};
  Address v4{.family = AF_INET};
  if (std::memcmp(b, kMapped, 12) == 0 || std::memcmp(b, kNat64, 12) == 0) {
    std::memcpy(v4.bytes.data(), b + 12, 4);
    return v4;
  }
  if (b[0] == 0x20 && b[1] == 0x02) {
    std::memcpy(v4.bytes.data(), b + 2, 4);
    return v4;
  }
  return std::nullopt;
}

std::optional<std::string> non_public_kind(const Address& address) {
  if (const std::optional<Address> v4 = embedded_ipv4(address)) {
    if (std::optional<std::string> kind = non_public_kind(*v4)) return *kind + ", inside " + address_text(address);
    return std::nullopt;
  }
  for (const NamedRange& range : non_public_ranges())
    if (range.network.family == address.family &&
        prefix_matches(address.bytes.data(), range.network.address.data(), range.network.prefix_length))
      return std::string(range.kind) + " (" + range.network.text + ")";
  return std::nullopt;
}

std::string_view scheme_of(std::string_view location) {
  const auto end = location.find("://");
  return end == std::string_view::npos ? std::string_view() : location.substr(0, end);
}

}  // namespace

IpNetwork IpNetwork::parse(std::string_view cidr, std::string_view field) {
  const auto fail = [&](const std::string& why) -> IpNetwork {
    throw Error(ErrorKind::Config, std::string(field) + ": \"" + std::string(cidr) + "\" " + why);
  };
  const auto slash = cidr.find('/');
  if (slash == std::string_view::npos) return fail("is not a network in CIDR form (e.g. 10.1.0.0/16)");
  IpNetwork network;
  network.text = std::string(cidr);
  const std::string host(cidr.substr(0, slash));
  if (::inet_pton(AF_INET, host.c_str(), network.address.data()) == 1) {
    network.family = AF_INET;
  } else if (::inet_pton(AF_INET6, host.c_str(), network.address.data()) == 1) {
    network.family = AF_INET6;
  } else {
    return fail("does not start with an IPv4 or IPv6 address");
  }
  const std::string_view length = cidr.substr(slash + 1);
  const int max_length = network.family == AF_INET ? 32 : 128;
  if (length.empty() || length.size() > 3 || !std::all_of(length.begin(), length.end(), [](char c) { return c >= '0' && c <= '9'; }) ||
      std::stoi(std::string(length)) > max_length)
    return fail("has no prefix length from 0 to " + std::to_string(max_length));
  network.prefix_length = std::stoi(std::string(length));
  return network;
}

bool IpNetwork::contains(const sockaddr* address) const {
  const Address candidate = address_of(address);
  return candidate.family == family && prefix_matches(candidate.bytes.data(), this->address.data(), prefix_length);
}

void check_location(const UrlPolicy& policy, std::string_view location, std::string_view what) {
  const std::string_view scheme = scheme_of(location);
  const auto refuse = [&](const std::string& why) {
    throw Error(ErrorKind::Input, std::string(what) + ": " + std::string(location) + " refused: " + why);
  };
  if (scheme.empty() || scheme == "file") {
    if (!policy.allow_local_files)
      refuse("a local file (set \"allow_local_files\": true in the agent config to allow local paths and file://)");
  } else if (scheme == "http") {
    if (!policy.allow_http) refuse("plain http (set \"allow_http\": true in the agent config for a private pool)");
  } else if (scheme != "https" && scheme != "ipfs" && scheme != "s3") {
    refuse("unsupported location (expected https://, ipfs://, s3://, or file:// and paths where allowed)");
  }
}

std::optional<std::string> address_refusal(const UrlPolicy& policy, const sockaddr* address) {
  const Address candidate = address_of(address);
  if (candidate.family == AF_UNSPEC) return "the address family " + std::to_string(address->sa_family) + " is not IP";
  if (policy.allow_private_addresses) return std::nullopt;
  for (const IpNetwork& network : policy.allowed_networks)
    if (network.contains(address)) return std::nullopt;
  const std::optional<std::string> kind = non_public_kind(candidate);
  if (!kind) return std::nullopt;
  return address_text(candidate) + " is " + *kind +
         " (set \"allow_private_addresses\": true, or list the network in \"allow_networks\", in the agent config for a "
         "private pool)";
}

}  // namespace solver::net
