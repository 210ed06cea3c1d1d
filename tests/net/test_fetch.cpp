// net/fetch.h: task inputs fetched over HTTP from a real server on 127.0.0.1 into the cache,
// checked against their hash, refused when local and not allowed, evicted least recently used.
#include <catch2/catch.hpp>
#include <httplib.h>

#include <atomic>

#include "common/error.h"
#include "common/files.h"
#include "common/sha256.h"
#include "net/fetch.h"
#include "tests/local_http_server.h"
#include "tests/test_support.h"

namespace solver::net {
namespace {

class FileServer {
 public:
  FileServer() {
    server_.routes().Get(R"(/files/(\w+))", [this](const httplib::Request& request, httplib::Response& response) {
      ++requests;
      const auto file = files.find(request.matches[1]);
      if (file == files.end()) {
        response.status = 404;
        return;
      }
      response.set_content(file->second, "application/octet-stream");
    });
  }
  std::string url(const std::string& name) const { return path_url("/files/" + name); }
  std::string path_url(const std::string& path) const { return server_.url(path); }
  // A remote input as a task declares it: its URL, hash and size.
  FileRef ref(const std::string& name) { return FileRef{url(name), sha256_hex(files[name]), files[name].size()}; }
  httplib::Server& routes() { return server_.routes(); }

  std::map<std::string, std::string> files;
  std::atomic<int> requests{0};

 private:
  test::LocalHttpServer server_;  // declared last: stopped before the files it serves go
};

// The test server is plain http on 127.0.0.1, which the default policy refuses: allowed here, as
// a private pool would (tests/net/test_url_policy.cpp tests the policy itself).
FetchOptions options_for(const test::ScratchDir& scratch, std::uint64_t max_bytes = 1 << 30) {
  return FetchOptions{.cache_dir = scratch / "cache",
                      .max_cache_bytes = max_bytes,
                      .policy = UrlPolicy{.allow_http = true,
                                          .allowed_networks = {IpNetwork::parse("127.0.0.1/32", "test")}},
                      .retry = RetryPolicy{.max_attempts = 2, .initial_delay = std::chrono::milliseconds(10)},
                      .eviction_grace = std::chrono::seconds(0)};
}

TEST_CASE("fetch: an https/http input lands in the cache under its hash, and is served from there next time", "[net][fetch]") {
  test::ScratchDir scratch("fetch-http");
  FileServer server;
  server.files["data"] = std::string(300'000, 'x');
  FileCache cache(options_for(scratch));
  const FileRef ref = server.ref("data");
  const auto path = cache.fetch(ref, "dataset.train_images");
  CHECK(path == scratch / "cache" / ref.sha256);
  CHECK(read_file(path) == server.files["data"]);
  CHECK(cache.fetch(ref, "dataset.train_images") == path);
  CHECK(server.requests == 1);
}

TEST_CASE("fetch: bytes that do not match the task's hash are refused and not cached", "[net][fetch]") {
  test::ScratchDir scratch("fetch-mismatch");
  FileServer server;
  server.files["data"] = "what the server says";
  FileCache cache(options_for(scratch));
  const FileRef ref{server.url("data"), sha256_hex("what the task says"), server.files["data"].size()};
  CHECK_THROWS_WITH(cache.fetch(ref, "dataset.test_labels"),
                    Catch::Contains("dataset.test_labels") && Catch::Contains(sha256_hex("what the server says")));
  CHECK_FALSE(std::filesystem::exists(scratch / "cache" / ref.sha256));
  CHECK(test::error_kind_of([&] { cache.fetch(ref, "x"); }) == ErrorKind::Input);
}

TEST_CASE("fetch: a missing file is a network error after retries, and unknown schemes and unset stores are named", "[net][fetch]") {
  test::ScratchDir scratch("fetch-errors");
  FileServer server;
  FileCache cache(options_for(scratch));
  CHECK(test::error_kind_of([&] { cache.fetch({server.url("absent"), sha256_hex(""), 0}, "x"); }) == ErrorKind::Network);
  CHECK_THROWS_WITH(cache.fetch({"ftp://example/data", sha256_hex(""), 0}, "model.file"), Catch::Contains("unsupported location"));
  CHECK_THROWS_WITH(cache.fetch({"ipfs://bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku", sha256_hex(""), 0}, "x"),
                    Catch::Contains("needs an ipfs store"));
  CHECK_THROWS_WITH(cache.fetch({server.url("absent"), sha256_hex("")}, "x"), Catch::Contains("declares no size"));
}

TEST_CASE("fetch: local paths and file:// are refused unless the config allows them", "[net][fetch]") {
  test::ScratchDir scratch("fetch-local");
  test::write_text(scratch / "local.bin", "local bytes");
  const FileRef path_ref{(scratch / "local.bin").string(), sha256_hex("local bytes")};
  const FileRef url_ref{"file://" + (scratch / "local.bin").string(), sha256_hex("local bytes")};
  FileCache strict(options_for(scratch));
  CHECK_THROWS_WITH(strict.fetch(path_ref, "dataset.train_images"), Catch::Contains("allow_local_files"));
  CHECK_THROWS_WITH(strict.fetch(url_ref, "dataset.train_images"), Catch::Contains("allow_local_files"));
  FetchOptions permissive = options_for(scratch);
  permissive.policy.allow_local_files = true;
  FileCache lenient(permissive);
  CHECK(lenient.fetch(path_ref, "x") == scratch / "local.bin");
  CHECK(lenient.fetch(url_ref, "x") == scratch / "local.bin");
}

TEST_CASE("fetch: past the cap, the least recently used inputs go, never those of the task at hand", "[net][fetch]") {
  test::ScratchDir scratch("fetch-evict");
  FileServer server;
  for (const char* name : {"a", "b", "c", "d", "e"}) server.files[name] = std::string(100'000, name[0]);
  FileCache cache(options_for(scratch, 250'000));
  auto ref = [&](const std::string& name) { return server.ref(name); };
  Task first;
  first.model.kind = ModelKind::Mlp;
  first.dataset.train_images = ref("a");
  first.dataset.train_labels = ref("b");
  first.dataset.test_images = ref("c");
  first.dataset.test_labels = ref("d");
  cache.resolve(first);  // 400 kB, over the cap, but all four are this task's: none is evicted
  for (const FileRef* file : {&first.dataset.train_images, &first.dataset.train_labels, &first.dataset.test_images,
                              &first.dataset.test_labels})
    CHECK(std::filesystem::exists(file->local_copy));

  Task second = first;
  second.dataset.test_labels = ref("e");  // a, b, c still needed; d is the only one unused
  cache.resolve(second);
  CHECK_FALSE(std::filesystem::exists(first.dataset.test_labels.local_copy));
  CHECK(std::filesystem::exists(second.dataset.test_labels.local_copy));
  CHECK(std::filesystem::exists(second.dataset.train_images.local_copy));
}

TEST_CASE("fetch: a token-data task gets its train and test token files, and a TorchScript model its file", "[net][fetch]") {
  test::ScratchDir scratch("fetch-tokens");
  FileServer server;
  for (const char* name : {"train", "test", "model"}) server.files[name] = std::string(1000, name[1]);
  FileCache cache(options_for(scratch));
  auto ref = [&](const std::string& name) { return server.ref(name); };
  Task task;
  task.model.kind = ModelKind::TorchScript;
  task.model.file = ref("model");
  task.dataset.format = DatasetFormat::Tokens;
  task.dataset.train_tokens = ref("train");
  task.dataset.test_tokens = ref("test");
  cache.resolve(task);
  CHECK(read_file(task.dataset.train_tokens.local_copy) == server.files["train"]);
  CHECK(read_file(task.dataset.test_tokens.local_copy) == server.files["test"]);
  CHECK(read_file(task.model.file.local_copy) == server.files["model"]);
  CHECK(task.dataset.train_images.local_copy.empty());
}

TEST_CASE("fetch: a server that never stops sending is cut off at the declared size, leaving nothing behind", "[net][fetch]") {
  test::ScratchDir scratch("fetch-endless");
  FileServer server;
  std::atomic<std::uint64_t> sent{0};
  // Claims nothing about its length (chunked) and sends until the client hangs up.
  server.routes().Get("/endless", [&](const httplib::Request&, httplib::Response& response) {
    response.set_chunked_content_provider("application/octet-stream", [&](std::size_t, httplib::DataSink& sink) {
      const std::string chunk(64 * 1024, 'z');
      sent += chunk.size();
      return sink.write(chunk.data(), chunk.size());
    });
  });
  FileCache cache(options_for(scratch));
  const FileRef declared{server.path_url("/endless"), std::string(64, 'a'), 1'000'000};
  const std::optional<Error> error = test::error_of([&] { cache.fetch(declared, "dataset.train_images"); });
  REQUIRE(error);
  CHECK(error->kind() == ErrorKind::Input);  // the task's fault: its URL serves more than it declares
  CHECK_THAT(error->what(), Catch::Contains("larger than the 1000000 bytes"));
  CHECK(sent < 100'000'000);
  std::vector<std::filesystem::path> left;
  for (const auto& entry : std::filesystem::directory_iterator(scratch / "cache")) left.push_back(entry.path());
  CHECK(left.empty());
}

TEST_CASE("fetch: fewer bytes than declared are refused, and a file larger than the whole cache is not fetched at all", "[net][fetch]") {
  test::ScratchDir scratch("fetch-sizes");
  FileServer server;
  server.files["short"] = "twelve bytes";
  FileCache cache(options_for(scratch, 1'000'000));
  FileRef longer = server.ref("short");
  longer.size = 20;
  const std::optional<Error> short_error = test::error_of([&] { cache.fetch(longer, "dataset.test_images"); });
  REQUIRE(short_error);
  CHECK(short_error->kind() == ErrorKind::Input);
  CHECK_THAT(short_error->what(), Catch::Contains("served 12 bytes, the task says 20"));

  FileRef huge = server.ref("short");
  huge.size = 1ull << 40;  // 1 TB, declared honestly: this rig cannot hold it
  const int requests_before = server.requests;
  CHECK(test::error_kind_of([&] { cache.fetch(huge, "dataset.train_images"); }) == ErrorKind::Capacity);
  CHECK(server.requests == requests_before);
  CHECK(std::filesystem::is_empty(scratch / "cache"));
}

}  // namespace
}  // namespace solver::net
