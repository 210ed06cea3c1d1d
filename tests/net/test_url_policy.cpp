// net/url_policy.h as a task's submitter would try it: plain http, loopback and internal
// addresses, names that resolve to them, redirects to them, and error pages that would carry an
// internal server's words to the market. Everything that is not loopback runs inside network
// and mount namespaces the test makes (a loopback-only network, its own /etc/hosts), so no
// packet can leave the machine even if the policy failed.
#include <catch2/catch.hpp>
#include <httplib.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <net/if.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <functional>

#include "common/error.h"
#include "common/files.h"
#include "common/sha256.h"
#include "net/fetch.h"
#include "net/url_policy.h"
#include "tests/local_http_server.h"
#include "tests/test_support.h"

namespace solver::net {
namespace {

sockaddr_storage address(const std::string& text) {
  sockaddr_storage storage{};
  if (::inet_pton(AF_INET, text.c_str(), &reinterpret_cast<sockaddr_in*>(&storage)->sin_addr) == 1) {
    storage.ss_family = AF_INET;
  } else {
    REQUIRE(::inet_pton(AF_INET6, text.c_str(), &reinterpret_cast<sockaddr_in6*>(&storage)->sin6_addr) == 1);
    storage.ss_family = AF_INET6;
  }
  return storage;
}

std::optional<std::string> refusal(const UrlPolicy& policy, const std::string& text) {
  const sockaddr_storage storage = address(text);
  return address_refusal(policy, reinterpret_cast<const sockaddr*>(&storage));
}

// Runs `body` in a child process with its own network namespace (only a loopback interface, up)
// and mount namespace (/etc/hosts replaced by `hosts`), and returns what it returned. The child
// reports through a pipe: it must not use Catch's assertions.
std::string in_private_network(const std::string& hosts, const std::function<std::string()>& body) {
  int pipe_fds[2];
  REQUIRE(::pipe(pipe_fds) == 0);
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    ::close(pipe_fds[0]);
    std::string result;
    try {
      if (::unshare(CLONE_NEWNET | CLONE_NEWNS) != 0) throw std::runtime_error("unshare: " + std::string(std::strerror(errno)));
      if (::mount("none", "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0)
        throw std::runtime_error("mount --make-rprivate /: " + std::string(std::strerror(errno)));
      const std::string hosts_file = "/tmp/solver-test-hosts-" + std::to_string(::getpid());
      write_file_durably(hosts_file, hosts);
      if (::mount(hosts_file.c_str(), "/etc/hosts", nullptr, MS_BIND, nullptr) != 0)
        throw std::runtime_error("bind-mounting /etc/hosts: " + std::string(std::strerror(errno)));
      std::filesystem::remove(hosts_file);  // the mount keeps it alive
      const int fd = ::socket(AF_INET, SOCK_DGRAM, 0);
      ifreq request{};
      std::strcpy(request.ifr_name, "lo");
      request.ifr_flags = IFF_UP | IFF_LOOPBACK | IFF_RUNNING;
      if (fd < 0 || ::ioctl(fd, SIOCSIFFLAGS, &request) != 0)
        throw std::runtime_error("bringing lo up: " + std::string(std::strerror(errno)));
      ::close(fd);
      result = body();
    } catch (const std::exception& error) {
      result = std::string("child failed: ") + error.what();
    }
    const ssize_t ignored = ::write(pipe_fds[1], result.data(), result.size());
    (void)ignored;
    ::_exit(0);
  }
  ::close(pipe_fds[1]);
  std::string result;
  char buffer[4096];
  for (ssize_t n; (n = ::read(pipe_fds[0], buffer, sizeof buffer)) > 0;) result.append(buffer, static_cast<std::size_t>(n));
  ::close(pipe_fds[0]);
  int status = 0;
  ::waitpid(child, &status, 0);
  INFO(result);
  REQUIRE(WIFEXITED(status));
  return result;
}

// What fetching `url` (declared as 5 bytes of "hello") under `policy` ends in: "fetched", or the
// error's kind and message.
std::string fetch_outcome(const UrlPolicy& policy, const std::filesystem::path& cache_dir, const std::string& url) {
  FileCache cache(FetchOptions{.cache_dir = cache_dir,
                               .policy = policy,
                               .retry = RetryPolicy{.max_attempts = 1}});
  try {
    cache.fetch(FileRef{url, sha256_hex("hello"), 5}, "dataset.train_images");
    return "fetched";
  } catch (const Error& error) {
    return std::string(error_kind_name(error.kind())) + ": " + error.what();
  }
}

TEST_CASE("url policy: loopback, private, link-local and other non-public addresses are refused, public ones allowed",
          "[net][policy]") {
  const UrlPolicy strict;
  for (const char* text : {"127.0.0.1", "127.3.2.1", "10.1.2.3", "172.16.0.1", "172.31.255.255", "192.168.1.1",
                           "169.254.169.254", "100.64.0.1", "0.0.0.0", "224.0.0.1", "255.255.255.255", "::1", "::",
                           "fe80::1", "fd00::5", "fc12::1", "ff02::1", "::ffff:127.0.0.1", "::ffff:169.254.169.254",
                           "64:ff9b::a00:1", "2002:a00:1::1", "2001:db8::1"}) {
    INFO(text);
    CHECK(refusal(strict, text).has_value());
  }
  CHECK_THAT(*refusal(strict, "169.254.169.254"), Catch::Contains("link-local") && Catch::Contains("allow_private_addresses"));
  for (const char* text : {"93.184.216.34", "8.8.8.8", "172.32.0.1", "2606:4700::1111", "::ffff:8.8.8.8"}) {
    INFO(text);
    CHECK_FALSE(refusal(strict, text).has_value());
  }
  UrlPolicy pool;
  pool.allowed_networks = {IpNetwork::parse("10.1.0.0/16", "test"), IpNetwork::parse("fd00::/8", "test")};
  CHECK_FALSE(refusal(pool, "10.1.200.3").has_value());
  CHECK_FALSE(refusal(pool, "fd00::5").has_value());
  CHECK(refusal(pool, "10.2.0.1").has_value());
  CHECK(refusal(pool, "169.254.169.254").has_value());
  UrlPolicy open;
  open.allow_private_addresses = true;
  CHECK_FALSE(refusal(open, "127.0.0.1").has_value());

  for (const char* bad : {"10.0.0.0", "10.0.0.0/33", "10.0.0.0/", "fd00::/129", "host/8", "10.0.0.0/8x"})
    CHECK(test::error_kind_of([&] { IpNetwork::parse(bad, "config.allow_networks"); }) == ErrorKind::Config);
}

TEST_CASE("url policy: plain http, local files and unknown schemes are refused by default, naming the setting", "[net][policy]") {
  const UrlPolicy strict;
  CHECK_THROWS_WITH(check_location(strict, "http://data.example/x", "dataset.train_images"),
                    Catch::Contains("dataset.train_images") && Catch::Contains("allow_http"));
  CHECK_THROWS_WITH(check_location(strict, "/etc/hostname", "model.file"), Catch::Contains("allow_local_files"));
  CHECK_THROWS_WITH(check_location(strict, "file:///etc/hostname", "model.file"), Catch::Contains("allow_local_files"));
  CHECK_THROWS_WITH(check_location(strict, "gopher://x/y", "model.file"), Catch::Contains("unsupported location"));
  CHECK_NOTHROW(check_location(strict, "https://data.example/x", "x"));
  CHECK_NOTHROW(check_location(strict, "ipfs://bafy", "x"));
  CHECK_NOTHROW(check_location(strict, "s3://bucket/key", "x"));
}

TEST_CASE("url policy: a name is checked after it resolves, every redirect is checked, and an error page is not echoed",
          "[net][policy]") {
  test::ScratchDir scratch("url-policy-loopback");
  test::LocalHttpServer server;
  server.routes().Get("/data", [](const httplib::Request&, httplib::Response& res) { res.set_content("hello", "text/plain"); });
  server.routes().Get("/internal-error", [](const httplib::Request&, httplib::Response& res) {
    res.status = 500;
    res.set_content("SECRET: db password hunter2", "text/plain");
  });
  const std::string port = std::to_string(server.port());
  // 127.0.0.2 is loopback too, and reachable: only the policy stops the redirect there.
  server.routes().Get("/to-other-loopback", [&](const httplib::Request&, httplib::Response& res) {
    res.set_redirect("http://127.0.0.2:" + port + "/data");
  });
  server.routes().Get("/to-data", [](const httplib::Request&, httplib::Response& res) { res.set_redirect("/data"); });

  UrlPolicy http_only;
  http_only.allow_http = true;
  // "localhost" resolves to a loopback address: refused after resolution, before connecting.
  CHECK_THAT(fetch_outcome(http_only, scratch / "a", "http://localhost:" + port + "/data"),
             Catch::StartsWith("input: ") && Catch::Contains("refused by the download policy") && Catch::Contains("loopback"));
  CHECK_THAT(fetch_outcome(UrlPolicy{}, scratch / "b", server.url("/data")), Catch::Contains("allow_http"));

  UrlPolicy pool = http_only;  // a private pool that opened this one address
  pool.allowed_networks = {IpNetwork::parse("127.0.0.1/32", "test")};
  CHECK(fetch_outcome(pool, scratch / "c", server.url("/data")) == "fetched");
  CHECK(fetch_outcome(pool, scratch / "d", server.url("/to-data")) == "fetched");  // redirects inside the policy are followed
  CHECK_THAT(fetch_outcome(pool, scratch / "e", server.url("/to-other-loopback")),
             Catch::StartsWith("input: ") && Catch::Contains("127.0.0.2 is loopback"));
  const std::string error_page = fetch_outcome(pool, scratch / "f", server.url("/internal-error"));
  CHECK_THAT(error_page, Catch::Contains("HTTP 500"));
  CHECK_THAT(error_page, !Catch::Contains("SECRET") && !Catch::Contains("hunter2"));
}

TEST_CASE("url policy: inside a loopback-only network, internal addresses and names that resolve to them are refused, "
          "directly and through redirects",
          "[net][policy][netns]") {
  const std::string hosts =
      "127.0.0.1 localhost\n"
      "169.254.169.254 metadata.test\n"
      "10.0.0.5 lan.test\n"
      "fd00::5 v6lan.test\n";
  const std::string outcome = in_private_network(hosts, [] {
    test::ScratchDir scratch("url-policy-netns");
    test::LocalHttpServer server;
    server.routes().Get("/to-metadata", [](const httplib::Request&, httplib::Response& res) {
      res.set_redirect("http://metadata.test/latest/meta-data/iam/security-credentials/");
    });
    server.routes().Get("/to-lan-https", [](const httplib::Request&, httplib::Response& res) {
      res.set_redirect("https://10.0.0.5/admin");
    });
    UrlPolicy pool;  // http allowed and the test server's own address: nothing else
    pool.allow_http = true;
    pool.allowed_networks = {IpNetwork::parse("127.0.0.1/32", "test")};
    std::string lines;
    int i = 0;
    for (const std::string& url :
         {std::string("http://169.254.169.254/latest/meta-data/"), std::string("http://metadata.test/latest/meta-data/"),
          std::string("http://lan.test:8080/"), std::string("http://10.0.0.5/"), std::string("http://100.64.0.1/"),
          std::string("http://[fd00::5]/"), std::string("http://v6lan.test/"), std::string("http://[::ffff:10.0.0.1]/"),
          server.url("/to-metadata"), server.url("/to-lan-https")})
      lines += url + " => " + fetch_outcome(pool, scratch / std::to_string(i++), url) + "\n";
    return lines;
  });
  INFO(outcome);
  REQUIRE_THAT(outcome, !Catch::Contains("child failed"));
  std::size_t refused = 0;
  for (std::size_t at = 0; (at = outcome.find("refused by the download policy", at)) != std::string::npos; ++at) ++refused;
  CHECK(refused == 10);  // every one refused by the policy, not merely unreachable
  CHECK_THAT(outcome, Catch::Contains("169.254.169.254 is link-local") && Catch::Contains("10.0.0.5 is private") &&
                          Catch::Contains("fd00::5 is unique local") && Catch::Contains("100.64.0.1 is carrier-grade NAT"));
  CHECK_THAT(outcome, !Catch::Contains("fetched"));
}

}  // namespace
}  // namespace solver::net
