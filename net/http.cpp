// libcurl behind net/http.h. One easy handle per request (connection reuse is not worth the
// shared state here: requests are few and large). Request bodies are read from disk in libcurl's
// read callback and response bodies written in its write callback, so memory stays flat.
#include "net/http.h"

#include <sys/socket.h>

#include <curl/curl.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <fstream>
#include <memory>
#include <mutex>

#include "common/error.h"
#include "net/url_policy.h"

namespace solver::net {
namespace {

void init_curl_once() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) throw Error(ErrorKind::Internal, "curl_global_init failed");
  });
}

std::uint64_t slice_length(const FileSlice& slice) {
  std::error_code error;
  const std::uint64_t size = std::filesystem::file_size(slice.path, error);
  if (error) throw Error(ErrorKind::Io, "cannot read " + slice.path.string() + ": " + error.message());
  if (slice.offset > size) throw Error(ErrorKind::Internal, "file slice starts past the end of " + slice.path.string());
  const std::uint64_t rest = size - slice.offset;
  if (slice.length && *slice.length > rest)
    throw Error(ErrorKind::Io, slice.path.string() + " is shorter than expected (it changed while being sent?)");
  return slice.length.value_or(rest);
}

// A file slice being sent: libcurl pulls it through read() and rewinds it with seek() when it
// has to resend (a redirect, or a server that answers 100-continue late).
struct SliceReader {
  std::ifstream stream;
  std::uint64_t begin = 0;
  std::uint64_t length = 0;
  std::uint64_t sent = 0;

  explicit SliceReader(const FileSlice& slice)
      : stream(slice.path, std::ios::binary), begin(slice.offset), length(slice_length(slice)) {
    if (!stream) throw Error(ErrorKind::Io, "cannot open " + slice.path.string() + " for upload");
    stream.seekg(static_cast<std::streamoff>(begin));
  }
  static size_t read(char* buffer, size_t size, size_t count, void* self_ptr) {
    auto& self = *static_cast<SliceReader*>(self_ptr);
    const std::uint64_t want = std::min<std::uint64_t>(size * count, self.length - self.sent);
    if (want == 0) return 0;
    self.stream.read(buffer, static_cast<std::streamsize>(want));
    const auto got = static_cast<std::uint64_t>(self.stream.gcount());
    if (got == 0) return CURL_READFUNC_ABORT;
    self.sent += got;
    return static_cast<size_t>(got);
  }
  static int seek(void* self_ptr, curl_off_t offset, int origin) {
    auto& self = *static_cast<SliceReader*>(self_ptr);
    if (origin != SEEK_SET || offset < 0 || static_cast<std::uint64_t>(offset) > self.length) return CURL_SEEKFUNC_CANTSEEK;
    self.stream.clear();
    self.stream.seekg(static_cast<std::streamoff>(self.begin + static_cast<std::uint64_t>(offset)));
    self.sent = static_cast<std::uint64_t>(offset);
    return self.stream ? CURL_SEEKFUNC_OK : CURL_SEEKFUNC_FAIL;
  }
};

// Where a response body goes. An error reply to a file download is not the file: its first
// kErrorBodyExcerpt bytes (the server's explanation) go to `memory` instead, unless
// `keep_error_excerpt` is off, and the transfer stops there.
struct ResponseSink {
  CURL* handle = nullptr;
  std::string* memory = nullptr;
  std::ofstream* file = nullptr;
  std::uint64_t limit = 0;
  bool keep_error_excerpt = true;
  std::uint64_t received = 0;
  bool over_limit = false;
  bool file_failed = false;
  bool error_reply_cut = false;

  static size_t write(char* data, size_t size, size_t count, void* self_ptr) {
    auto& self = *static_cast<ResponseSink*>(self_ptr);
    const size_t bytes = size * count;
    if (self.file) {
      long status = 0;
      curl_easy_getinfo(self.handle, CURLINFO_RESPONSE_CODE, &status);
      if (!is_success(status)) {
        if (self.keep_error_excerpt)
          self.memory->append(data, std::min<std::size_t>(bytes, kErrorBodyExcerpt - self.memory->size()));
        if (!self.keep_error_excerpt || self.memory->size() >= kErrorBodyExcerpt) {
          self.error_reply_cut = true;
          return 0;
        }
        return bytes;
      }
    }
    if (self.received + bytes > self.limit) {
      self.over_limit = true;
      return 0;
    }
    self.received += bytes;
    if (self.file) {
      self.file->write(data, static_cast<std::streamsize>(bytes));
      if (!*self.file) {
        self.file_failed = true;
        return 0;
      }
      return bytes;
    }
    self.memory->append(data, bytes);
    return bytes;
  }
};

size_t collect_header(char* data, size_t size, size_t count, void* headers_ptr) {
  auto& headers = *static_cast<Headers*>(headers_ptr);
  const std::string_view line(data, size * count);
  if (line.starts_with("HTTP/")) headers.clear();  // a new response (after 100-continue or a redirect)
  const auto colon = line.find(':');
  if (colon != std::string_view::npos) {
    std::string name(line.substr(0, colon));
    std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::tolower(c); });
    std::string_view value = line.substr(colon + 1);
    while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
    while (!value.empty() && (value.back() == '\r' || value.back() == '\n' || value.back() == ' ')) value.remove_suffix(1);
    headers.emplace_back(std::move(name), std::string(value));
  }
  return size * count;
}

struct CurlDeleter {
  void operator()(CURL* handle) const { curl_easy_cleanup(handle); }
  void operator()(curl_slist* list) const { curl_slist_free_all(list); }
  void operator()(curl_mime* mime) const { curl_mime_free(mime); }
};

// Multipart parts stream their files through the same SliceReader as plain bodies.
curl_mime* build_form(CURL* curl, const std::vector<FormPart>& parts, std::vector<std::unique_ptr<SliceReader>>& readers,
                      std::vector<std::unique_ptr<curl_slist, CurlDeleter>>& part_headers) {
  curl_mime* mime = curl_mime_init(curl);
  for (const FormPart& part : parts) {
    curl_mimepart* field = curl_mime_addpart(mime);
    curl_mime_name(field, part.name.c_str());
    if (!part.filename.empty()) curl_mime_filename(field, part.filename.c_str());
    if (!part.content_type.empty()) curl_mime_type(field, part.content_type.c_str());
    if (part.file) {
      auto& reader = readers.emplace_back(std::make_unique<SliceReader>(*part.file));
      curl_mime_data_cb(field, static_cast<curl_off_t>(reader->length), &SliceReader::read, &SliceReader::seek, nullptr,
                        reader.get());
    } else {
      curl_mime_data(field, part.data.data(), part.data.size());
    }
    if (!part.headers.empty()) {
      curl_slist* list = nullptr;
      for (const auto& [name, value] : part.headers) list = curl_slist_append(list, (name + ": " + value).c_str());
      part_headers.emplace_back(list);
      curl_mime_headers(field, list, 0);
    }
  }
  return mime;
}

// libcurl's socket callback: the one place every connection's address passes through, after
// DNS and on redirects alike, so the address checked is the address connected to.
struct AddressGate {
  const UrlPolicy* policy = nullptr;
  std::string refusal;

  static curl_socket_t open(void* self_ptr, curlsocktype, curl_sockaddr* address) {
    auto& self = *static_cast<AddressGate*>(self_ptr);
    if (std::optional<std::string> why = address_refusal(*self.policy, &address->addr)) {
      self.refusal = std::move(*why);
      return CURL_SOCKET_BAD;
    }
    return ::socket(address->family, address->socktype | SOCK_CLOEXEC, address->protocol);
  }
};

std::string transport_error_message(const HttpRequest& request, CURLcode code, const char* detail) {
  std::string message = request.method + " " + request.url + ": " + curl_easy_strerror(code);
  if (detail[0] != '\0') message += std::string(" (") + detail + ")";
  return message;
}

}  // namespace

std::optional<std::string> HttpResponse::header(std::string_view lowercase_name) const {
  for (const auto& [name, value] : headers)
    if (name == lowercase_name) return value;
  return std::nullopt;
}

HttpResponse perform(const HttpRequest& request) {
  init_curl_once();
  std::unique_ptr<CURL, CurlDeleter> curl(curl_easy_init());
  if (!curl) throw Error(ErrorKind::Internal, "curl_easy_init failed");
  CURL* handle = curl.get();

  HttpResponse response;
  char error_detail[CURL_ERROR_SIZE] = {};
  curl_easy_setopt(handle, CURLOPT_ERRORBUFFER, error_detail);
  curl_easy_setopt(handle, CURLOPT_URL, request.url.c_str());
  curl_easy_setopt(handle, CURLOPT_NOSIGNAL, 1L);  // we run on many threads; no SIGALRM for DNS timeouts
  curl_easy_setopt(handle, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(request.connect_timeout.count()));
  curl_easy_setopt(handle, CURLOPT_TIMEOUT_MS, static_cast<long>(request.timeout.count()));
  if (request.stall_timeout.count() > 0) {
    curl_easy_setopt(handle, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(handle, CURLOPT_LOW_SPEED_TIME, static_cast<long>((request.stall_timeout.count() + 999) / 1000));
  }
  curl_easy_setopt(handle, CURLOPT_SSL_VERIFYPEER, request.verify_tls ? 1L : 0L);
  curl_easy_setopt(handle, CURLOPT_SSL_VERIFYHOST, request.verify_tls ? 2L : 0L);
  curl_easy_setopt(handle, CURLOPT_PROTOCOLS_STR, "http,https");  // never file:// or others through this door
  AddressGate gate{.policy = request.policy};
  if (request.policy) {
    const char* schemes = request.policy->allow_http ? "http,https" : "https";
    curl_easy_setopt(handle, CURLOPT_PROTOCOLS_STR, schemes);
    curl_easy_setopt(handle, CURLOPT_REDIR_PROTOCOLS_STR, schemes);
    curl_easy_setopt(handle, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(handle, CURLOPT_MAXREDIRS, 5L);
    curl_easy_setopt(handle, CURLOPT_PROXY, "");  // a proxy would be the address checked, not the server
    curl_easy_setopt(handle, CURLOPT_OPENSOCKETFUNCTION, &AddressGate::open);
    curl_easy_setopt(handle, CURLOPT_OPENSOCKETDATA, &gate);
  }
  curl_easy_setopt(handle, CURLOPT_HEADERFUNCTION, &collect_header);
  curl_easy_setopt(handle, CURLOPT_HEADERDATA, &response.headers);

  curl_slist* header_list = nullptr;
  for (const auto& [name, value] : request.headers) header_list = curl_slist_append(header_list, (name + ": " + value).c_str());
  // libcurl adds "Expect: 100-continue" to large uploads; servers such as s3rver stall on it.
  header_list = curl_slist_append(header_list, "Expect:");
  std::unique_ptr<curl_slist, CurlDeleter> headers(header_list);
  curl_easy_setopt(handle, CURLOPT_HTTPHEADER, headers.get());

  std::unique_ptr<SliceReader> body_reader;
  std::vector<std::unique_ptr<SliceReader>> form_readers;
  std::vector<std::unique_ptr<curl_slist, CurlDeleter>> form_part_headers;
  std::unique_ptr<curl_mime, CurlDeleter> form;
  if (request.body_file) {
    body_reader = std::make_unique<SliceReader>(*request.body_file);
    curl_easy_setopt(handle, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(handle, CURLOPT_READFUNCTION, &SliceReader::read);
    curl_easy_setopt(handle, CURLOPT_READDATA, body_reader.get());
    curl_easy_setopt(handle, CURLOPT_SEEKFUNCTION, &SliceReader::seek);
    curl_easy_setopt(handle, CURLOPT_SEEKDATA, body_reader.get());
    curl_easy_setopt(handle, CURLOPT_INFILESIZE_LARGE, static_cast<curl_off_t>(body_reader->length));
  } else if (!request.form.empty()) {
    form.reset(build_form(handle, request.form, form_readers, form_part_headers));
    curl_easy_setopt(handle, CURLOPT_MIMEPOST, form.get());
  } else if (!request.body.empty() || request.method == "POST" || request.method == "PUT") {
    curl_easy_setopt(handle, CURLOPT_POSTFIELDS, request.body.data());
    curl_easy_setopt(handle, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(request.body.size()));
  }
  // After choosing the body: UPLOAD implies PUT and POSTFIELDS implies POST; the method wins.
  if (request.method == "HEAD") {
    curl_easy_setopt(handle, CURLOPT_NOBODY, 1L);
  } else if (request.method != "GET" || body_reader || form || !request.body.empty()) {
    curl_easy_setopt(handle, CURLOPT_CUSTOMREQUEST, request.method.c_str());
  }

  std::ofstream response_stream;
  ResponseSink sink{.handle = handle, .memory = &response.body, .limit = request.max_response_bytes,
                    .keep_error_excerpt = request.policy == nullptr};
  if (request.response_file) {
    response_stream.open(*request.response_file, std::ios::binary | std::ios::trunc);
    if (!response_stream) throw Error(ErrorKind::Io, "cannot write " + request.response_file->string());
    sink.file = &response_stream;
  }
  curl_easy_setopt(handle, CURLOPT_WRITEFUNCTION, &ResponseSink::write);
  curl_easy_setopt(handle, CURLOPT_WRITEDATA, &sink);

  const CURLcode code = curl_easy_perform(handle);
  if (sink.file_failed) throw Error(ErrorKind::Io, "cannot write " + request.response_file->string() + " (disk full?)");
  if (sink.over_limit)
    throw Error(request.response_file ? ErrorKind::Input : ErrorKind::Network,
                request.method + " " + request.url + ": the reply is larger than the " +
                    std::to_string(request.max_response_bytes) + " bytes expected; stopped there");
  // A refused address fails the request only if no allowed one served it (a name may have both).
  if (code != CURLE_OK && !gate.refusal.empty())
    throw Error(ErrorKind::Input, request.method + " " + request.url + ": refused by the download policy: " + gate.refusal);
  if (code != CURLE_OK && !sink.error_reply_cut)
    throw Error(ErrorKind::Network, transport_error_message(request, code, error_detail), true);
  if (response_stream.is_open()) {
    response_stream.close();
    if (!response_stream) throw Error(ErrorKind::Io, "cannot write " + request.response_file->string());
  }
  curl_easy_getinfo(handle, CURLINFO_RESPONSE_CODE, &response.status);
  return response;
}

bool is_transient_status(long status) {
  return status == 408 || status == 425 || status == 429 || status == 500 || status == 502 || status == 503 ||
         status == 504;
}

bool is_success(long status) { return status >= 200 && status < 300; }

void throw_unless_success(const HttpResponse& response, std::string_view what) {
  if (is_success(response.status)) return;
  std::string excerpt = response.body.substr(0, 300);
  std::replace_if(excerpt.begin(), excerpt.end(), [](unsigned char c) { return c < 0x20; }, ' ');
  std::string message = std::string(what) + ": HTTP " + std::to_string(response.status);
  if (!excerpt.empty()) message += ": " + excerpt;
  throw Error(ErrorKind::Network, message, is_transient_status(response.status));
}

std::string url_encode(std::string_view text, bool keep_slash) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(text.size());
  for (const unsigned char c : text) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~' || (keep_slash && c == '/')) {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 0xF];
    }
  }
  return out;
}

}  // namespace solver::net
