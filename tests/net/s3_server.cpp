// s3rver as a child process, and the fault-injecting proxy in front of it (see s3_server.h).
#include "tests/net/s3_server.h"

#include <strings.h>

#include <algorithm>
#include <stdexcept>

#include "common/files.h"

namespace solver::test {
namespace {

std::string s3_error_document(const std::string& code, const std::string& message) {
  return "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>" + code + "</Code><Message>" + message +
         "</Message></Error>";
}

// Request headers httplib adds for its own use, and framing headers the forwarding client sets again.
bool is_hop_header(const std::string& name) {
  static const char* const kHop[] = {"REMOTE_ADDR", "REMOTE_PORT", "LOCAL_ADDR", "LOCAL_PORT", "Content-Length",
                                     "Transfer-Encoding", "Connection", "Keep-Alive"};
  return std::any_of(std::begin(kHop), std::end(kHop), [&](const char* hop) { return strcasecmp(hop, name.c_str()) == 0; });
}

}  // namespace

S3rver::S3rver(const std::string& bucket) : scratch_("s3rver"), data_dir_(scratch_ / "data"), bucket_(bucket) {
  const std::filesystem::path binary = source_dir() / "tests/servers/node_modules/.bin/s3rver";
  if (!std::filesystem::exists(binary))
    throw std::runtime_error(binary.string() + " is missing: run scripts/install-test-servers.sh to install the test servers");
  std::filesystem::create_directories(data_dir_);
  server_.emplace(std::vector<std::string>{binary.string(), "-d", data_dir_.string(), "-a", "127.0.0.1", "-p", "0",
                                           "--service-endpoint", "localhost", "--configure-bucket", bucket_},
                  scratch_ / "s3rver.log");
  // s3rver prints "S3rver listening on 127.0.0.1:<port>" once it accepts connections.
  if (const std::optional<std::string> port = server_->wait_for_match(R"(listening on 127\.0\.0\.1:(\d+))", 30)) {
    port_ = std::stoi(*port);
    return;
  }
  // A throw leaves server_ to be killed by its destructor.
  throw std::runtime_error(std::string(server_->running() ? "s3rver did not start within 30 s" : "s3rver exited at start-up") +
                           "; its log ends with:\n" + server_->output_tail());
}

std::string S3rver::endpoint() const { return "http://127.0.0.1:" + std::to_string(port_); }
std::string S3rver::vhost_endpoint() const { return "http://s3.localhost:" + std::to_string(port_); }

CommandResult S3rver::aws(const std::vector<std::string>& arguments) const {
  std::vector<std::string> argv = {"/usr/bin/env",
                                   std::string("AWS_ACCESS_KEY_ID=") + kS3rverAccessKey,
                                   std::string("AWS_SECRET_ACCESS_KEY=") + kS3rverSecretKey,
                                   "AWS_DEFAULT_REGION=us-east-1",
                                   "AWS_CONFIG_FILE=/dev/null",
                                   "AWS_SHARED_CREDENTIALS_FILE=/dev/null",
                                   "AWS_EC2_METADATA_DISABLED=true",
                                   "AWS_PAGER=",
                                   "/usr/bin/aws",
                                   "--endpoint-url",
                                   endpoint()};
  argv.insert(argv.end(), arguments.begin(), arguments.end());
  return run_command(argv);
}

S3Proxy::S3Proxy(const S3rver& upstream) : upstream_(upstream) {
  const auto handler = [this](const httplib::Request& request, httplib::Response& response) { handle(request, response); };
  server_.routes().Get(".*", handler);
  server_.routes().Put(".*", handler);
  server_.routes().Post(".*", handler);
  server_.routes().Delete(".*", handler);
}

S3Proxy::~S3Proxy() {
  {
    const std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  stopping_signal_.notify_all();  // stalled requests end now, so that server_ can stop
}

std::string S3Proxy::endpoint() const { return server_.url(); }

void S3Proxy::set_rule(FaultRule rule) {
  const std::lock_guard lock(mutex_);
  rule_ = std::move(rule);
}

std::vector<std::string> S3Proxy::log() const {
  const std::lock_guard lock(mutex_);
  return log_;
}

void S3Proxy::clear_log() {
  const std::lock_guard lock(mutex_);
  log_.clear();
}

void S3Proxy::handle(const httplib::Request& request, httplib::Response& response) {
  const int now_in_flight = ++in_flight_;
  for (int seen = max_in_flight_; now_in_flight > seen && !max_in_flight_.compare_exchange_weak(seen, now_in_flight);) {
  }
  struct InFlight {
    std::atomic<int>& count;
    ~InFlight() { --count; }
  } in_flight{in_flight_};

  Fault fault;
  {
    const std::lock_guard lock(mutex_);
    log_.push_back(request.method + " " + request.target);
    if (rule_) fault = rule_(request.method, request.target);
  }
  const auto cut_reply = [&response] {
    response.set_content_provider(1000, "application/xml", [](size_t, size_t, httplib::DataSink& sink) {
      sink.write("<?xml", 5);
      return false;  // httplib drops the connection with the reply unfinished
    });
  };
  switch (fault.kind) {
    case Fault::Kind::Status:
      response.status = fault.status;
      response.set_content(s3_error_document(fault.code, "injected by the test proxy"), "application/xml");
      return;
    case Fault::Kind::Cut:
      cut_reply();
      return;
    case Fault::Kind::Stall: {
      std::unique_lock lock(mutex_);
      stopping_signal_.wait_for(lock, fault.delay, [this] { return stopping_; });
      response.status = 503;
      response.set_content(s3_error_document("ServiceUnavailable", "stalled by the test proxy"), "application/xml");
      return;
    }
    case Fault::Kind::Forward:
    case Fault::Kind::ForwardThenCut:
      break;
  }
  if (answer_upload_call(request, response)) return;

  httplib::Client client("127.0.0.1", upstream_.port());
  client.set_url_encode(false);
  client.set_read_timeout(std::chrono::seconds(60));
  httplib::Request forwarded;
  // A HEAD goes up as a GET so that the reply's Content-Length is the object's (httplib computes
  // it from the body, which it then leaves out for HEAD).
  forwarded.method = request.method == "HEAD" ? "GET" : request.method;
  forwarded.path = request.target;
  for (const auto& [name, value] : request.headers)
    if (!is_hop_header(name)) forwarded.headers.emplace(name, value);
  forwarded.body = request.body;
  const httplib::Result result = client.send(forwarded);
  if (!result) {
    response.status = 502;
    response.set_content(s3_error_document("BadGateway", "s3rver did not answer: " + httplib::to_string(result.error())),
                         "application/xml");
    return;
  }
  if (fault.kind == Fault::Kind::ForwardThenCut) {
    cut_reply();
    return;
  }
  response.status = result->status;
  for (const auto& [name, value] : result->headers)
    if (!is_hop_header(name) && strcasecmp(name.c_str(), "Content-Type") != 0) response.headers.emplace(name, value);
  response.set_content(result->body, result->get_header_value("Content-Type"));
}

bool S3Proxy::answer_upload_call(const httplib::Request& request, httplib::Response& response) const {
  if (!request.has_param("uploadId") || request.has_param("partNumber")) return false;
  if (request.method != "GET" && request.method != "DELETE") return false;
  const std::string upload_id = request.get_param_value("uploadId");
  const std::filesystem::path upload_dir = upstream_.data_dir() / upstream_.bucket() / "._S3rver_uploads" / upload_id;
  if (upload_id.find('/') != std::string::npos || !std::filesystem::is_directory(upload_dir)) {
    response.status = 404;
    response.set_content(s3_error_document("NoSuchUpload", "The specified upload does not exist."), "application/xml");
    return true;
  }
  if (request.method == "DELETE") {
    std::filesystem::remove_all(upload_dir);
    response.status = 204;
    return true;
  }
  constexpr int kPageSize = 5;
  const int marker = request.has_param("part-number-marker") ? std::stoi(request.get_param_value("part-number-marker")) : 0;
  std::vector<int> numbers;
  for (const auto& entry : std::filesystem::directory_iterator(upload_dir)) {
    const std::string name = entry.path().filename().string();
    if (!name.empty() && std::all_of(name.begin(), name.end(), ::isdigit) && std::stoi(name) > marker)
      numbers.push_back(std::stoi(name));
  }
  std::sort(numbers.begin(), numbers.end());
  const bool truncated = numbers.size() > kPageSize;
  if (truncated) numbers.resize(kPageSize);
  std::string xml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListPartsResult><Bucket>" + upstream_.bucket() +
                    "</Bucket><UploadId>" + upload_id + "</UploadId><IsTruncated>" + (truncated ? "true" : "false") +
                    "</IsTruncated>";
  if (truncated) xml += "<NextPartNumberMarker>" + std::to_string(numbers.back()) + "</NextPartNumberMarker>";
  for (const int number : numbers) {
    const std::filesystem::path part = upload_dir / std::to_string(number);
    xml += "<Part><PartNumber>" + std::to_string(number) + "</PartNumber><ETag>&quot;" + read_file(part.string() + ".md5") +
           "&quot;</ETag><Size>" + std::to_string(std::filesystem::file_size(part)) + "</Size></Part>";
  }
  response.set_content(xml + "</ListPartsResult>", "application/xml");
  return true;
}

}  // namespace solver::test
