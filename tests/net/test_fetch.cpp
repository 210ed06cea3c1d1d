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
  std::string url(const std::string& name) const { return server_.url("/files/" + name); }

  std::map<std::string, std::string> files;
  std::atomic<int> requests{0};

 private:
  test::LocalHttpServer server_;  // declared last: stopped before the files it serves go
};

FetchOptions options_for(const test::ScratchDir& scratch, std::uint64_t max_bytes = 1 << 30) {
  return FetchOptions{.cache_dir = scratch / "cache",
                      .max_cache_bytes = max_bytes,
                      .retry = RetryPolicy{.max_attempts = 2, .initial_delay = std::chrono::milliseconds(10)},
                      .eviction_grace = std::chrono::seconds(0)};
}

TEST_CASE("fetch: an https/http input lands in the cache under its hash, and is served from there next time", "[net][fetch]") {
  test::ScratchDir scratch("fetch-http");
  FileServer server;
  server.files["data"] = std::string(300'000, 'x');
  FileCache cache(options_for(scratch));
  const FileRef ref{server.url("data"), sha256_hex(server.files["data"])};
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
  const FileRef ref{server.url("data"), sha256_hex("what the task says")};
  CHECK_THROWS_WITH(cache.fetch(ref, "dataset.test_labels"),
                    Catch::Contains("dataset.test_labels") && Catch::Contains(sha256_hex("what the server says")));
  CHECK_FALSE(std::filesystem::exists(scratch / "cache" / ref.sha256));
  CHECK(test::error_kind_of([&] { cache.fetch(ref, "x"); }) == ErrorKind::Input);
}

TEST_CASE("fetch: a missing file is a network error after retries, and unknown schemes and unset stores are named", "[net][fetch]") {
  test::ScratchDir scratch("fetch-errors");
  FileServer server;
  FileCache cache(options_for(scratch));
  CHECK(test::error_kind_of([&] { cache.fetch({server.url("absent"), sha256_hex("")}, "x"); }) == ErrorKind::Network);
  CHECK_THROWS_WITH(cache.fetch({"ftp://example/data", sha256_hex("")}, "model.file"), Catch::Contains("unsupported location"));
  CHECK_THROWS_WITH(cache.fetch({"ipfs://bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku", sha256_hex("")}, "x"),
                    Catch::Contains("needs an ipfs store"));
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
  permissive.allow_local_files = true;
  FileCache lenient(permissive);
  CHECK(lenient.fetch(path_ref, "x") == scratch / "local.bin");
  CHECK(lenient.fetch(url_ref, "x") == scratch / "local.bin");
}

TEST_CASE("fetch: past the cap, the least recently used inputs go, never those of the task at hand", "[net][fetch]") {
  test::ScratchDir scratch("fetch-evict");
  FileServer server;
  for (const char* name : {"a", "b", "c", "d", "e"}) server.files[name] = std::string(100'000, name[0]);
  FileCache cache(options_for(scratch, 250'000));
  auto ref = [&](const std::string& name) { return FileRef{server.url(name), sha256_hex(server.files[name])}; };
  Task first;
  first.model.kind = "mlp";
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
  auto ref = [&](const std::string& name) { return FileRef{server.url(name), sha256_hex(server.files[name])}; };
  Task task;
  task.model.kind = "torchscript";
  task.model.file = ref("model");
  task.dataset.format = "tokens";
  task.dataset.train_tokens = ref("train");
  task.dataset.test_tokens = ref("test");
  cache.resolve(task);
  CHECK(read_file(task.dataset.train_tokens.local_copy) == server.files["train"]);
  CHECK(read_file(task.dataset.test_tokens.local_copy) == server.files["test"]);
  CHECK(read_file(task.model.file.local_copy) == server.files["model"]);
  CHECK(task.dataset.train_images.local_copy.empty());
}

}  // namespace
}  // namespace solver::net
