#include "market/detail/http_request.h"

#include <algorithm>
#include <cctype>

namespace solver::market::detail {
namespace {

constexpr std::size_t kMaxHeaders = 100;
constexpr std::size_t kMaxChunkSizeLine = 1024;  // hex digits plus chunk extensions, which we ignore
constexpr std::size_t kMaxMethodLength = 16;

bool is_token_char(unsigned char c) {
  return std::isalnum(c) || std::string_view("!#$%&'*+-.^_`|~").find(static_cast<char>(c)) != std::string_view::npos;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string lowercase(std::string_view text) {
  std::string lower(text);
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return lower;
}

std::string_view trim(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.remove_suffix(1);
  return text;
}

// %XX becomes the byte; anything else, a malformed escape included, is kept as it is.
std::string percent_decode(std::string_view text, bool plus_is_space) {
  std::string decoded;
  decoded.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '%' && i + 2 < text.size() && hex_value(text[i + 1]) >= 0 && hex_value(text[i + 2]) >= 0) {
      decoded += static_cast<char>(hex_value(text[i + 1]) * 16 + hex_value(text[i + 2]));
      i += 2;
    } else {
      decoded += plus_is_space && text[i] == '+' ? ' ' : text[i];
    }
  }
  return decoded;
}

// Whether a comma-separated header value lists `token` (case-insensitive).
bool lists_token(std::string_view value, std::string_view token) {
  while (!value.empty()) {
    const std::size_t comma = value.find(',');
    if (lowercase(trim(value.substr(0, comma))) == token) return true;
    if (comma == std::string_view::npos) break;
    value.remove_prefix(comma + 1);
  }
  return false;
}

}  // namespace

std::optional<std::string_view> Request::header(std::string_view name) const {
  const std::string wanted = lowercase(name);
  for (const auto& [stored_name, value] : headers)
    if (stored_name == wanted) return value;
  return std::nullopt;
}

std::optional<std::string> Request::query_parameter(std::string_view name) const {
  std::string_view rest = query;
  while (!rest.empty()) {
    const std::size_t amp = rest.find('&');
    const std::string_view pair = rest.substr(0, amp);
    const std::size_t equals = pair.find('=');
    if (percent_decode(pair.substr(0, equals), true) == name)
      return equals == std::string_view::npos ? std::string() : percent_decode(pair.substr(equals + 1), true);
    if (amp == std::string_view::npos) break;
    rest.remove_prefix(amp + 1);
  }
  return std::nullopt;
}

RequestReader::RequestReader(RequestLimits limits) : limits_(limits) {}

RequestReader::Progress RequestReader::refuse(int status, std::string code, std::string message) {
  state_ = State::Refused;
  refusal_ = {status, std::move(code), std::move(message)};
  return Progress::Refused;
}

RequestReader::Progress RequestReader::read(std::string& input) {
  switch (state_) {
    case State::Head:
      return read_head(input);
    case State::Body: {
      const std::size_t taken = static_cast<std::size_t>(std::min<std::uint64_t>(body_remaining_, input.size()));
      request_.body.append(input, 0, taken);
      input.erase(0, taken);
      body_remaining_ -= taken;
      if (body_remaining_ > 0) return Progress::NeedMore;
      state_ = State::Complete;
      return Progress::Complete;
    }
    case State::ChunkSize:
    case State::ChunkData:
    case State::ChunkEnd:
    case State::Trailers:
      return read_chunked(input);
    case State::Complete:
      return Progress::Complete;
    case State::Refused:
      return Progress::Refused;
  }
  return Progress::Refused;
}

RequestReader::Progress RequestReader::read_head(std::string& input) {
  // Searching again only the new bytes (and three before them) keeps a head trickled in byte by
  // byte linear rather than quadratic.
  const std::size_t end = input.find("\r\n\r\n", head_scanned_ >= 3 ? head_scanned_ - 3 : 0);
  if (end == std::string::npos) {
    head_scanned_ = input.size();
    if (input.size() > limits_.max_head_bytes)
      return refuse(431, "head_too_large", "the request line and headers exceed " + std::to_string(limits_.max_head_bytes) + " bytes");
    return Progress::NeedMore;
  }
  if (end + 4 > limits_.max_head_bytes)
    return refuse(431, "head_too_large", "the request line and headers exceed " + std::to_string(limits_.max_head_bytes) + " bytes");
  const Progress progress = parse_head(std::string_view(input).substr(0, end + 2));
  input.erase(0, end + 4);
  head_scanned_ = 0;
  return progress;
}

// `head` holds every line with its CRLF, without the empty line that ends it.
RequestReader::Progress RequestReader::parse_head(std::string_view head) {
  std::vector<std::string_view> lines;
  for (std::size_t start = 0; start < head.size();) {
    const std::size_t eol = head.find("\r\n", start);
    lines.push_back(head.substr(start, eol - start));
    start = eol + 2;
  }

  const std::string_view request_line = lines.front();
  const std::size_t first_space = request_line.find(' ');
  const std::size_t second_space = first_space == std::string_view::npos ? first_space : request_line.find(' ', first_space + 1);
  if (second_space == std::string_view::npos || request_line.find(' ', second_space + 1) != std::string_view::npos)
    return refuse(400, "bad_request", "the request line is not \"METHOD /path HTTP/1.1\"");
  const std::string_view method = request_line.substr(0, first_space);
  const std::string_view target = request_line.substr(first_space + 1, second_space - first_space - 1);
  const std::string_view version = request_line.substr(second_space + 1);
  if (method.empty() || method.size() > kMaxMethodLength ||
      !std::all_of(method.begin(), method.end(), [](char c) { return c >= 'A' && c <= 'Z'; }))
    return refuse(400, "bad_request", "the request method is not an uppercase word");
  if (target.empty() || target.front() != '/' ||
      !std::all_of(target.begin(), target.end(), [](unsigned char c) { return c > 0x20 && c < 0x7f; }))
    return refuse(400, "bad_request", "the request target must be a path starting with '/', in printable ASCII");
  if (version != "HTTP/1.1" && version != "HTTP/1.0") return refuse(400, "bad_request", "only HTTP/1.1 and HTTP/1.0 are spoken here");
  request_.method = method;
  request_.target = target;
  const std::size_t question = target.find('?');
  request_.path = percent_decode(target.substr(0, question), false);
  if (question != std::string_view::npos) request_.query = target.substr(question + 1);

  if (lines.size() - 1 > kMaxHeaders)
    return refuse(431, "head_too_large", "the request has more than " + std::to_string(kMaxHeaders) + " headers");
  for (std::size_t i = 1; i < lines.size(); ++i) {
    const std::string_view line = lines[i];
    const std::size_t colon = line.find(':');
    if (line.empty() || line.front() == ' ' || line.front() == '\t')
      return refuse(400, "bad_request", "a header line is empty or folded onto the previous one");
    if (colon == std::string_view::npos || colon == 0 ||
        !std::all_of(line.begin(), line.begin() + static_cast<std::ptrdiff_t>(colon), [](unsigned char c) { return is_token_char(c); }))
      return refuse(400, "bad_request", "a header line is not \"Name: value\"");
    const std::string_view value = trim(line.substr(colon + 1));
    if (std::any_of(value.begin(), value.end(), [](unsigned char c) { return (c < 0x20 && c != '\t') || c == 0x7f; }))
      return refuse(400, "bad_request", "the header " + std::string(line.substr(0, colon)) + " holds a control character");
    request_.headers.emplace_back(lowercase(line.substr(0, colon)), std::string(value));
  }

  std::optional<std::string> content_length;
  bool chunked = false;
  for (const auto& [name, value] : request_.headers) {
    if (name == "content-encoding" && lowercase(value) != "identity")
      return refuse(415, "unsupported_encoding",
                    "Content-Encoding \"" + value + "\" is not accepted: send the body uncompressed, it is at most " +
                        std::to_string(limits_.max_body_bytes) + " bytes");
    if (name == "transfer-encoding") {
      if (lowercase(value) != "chunked" || chunked)
        return refuse(415, "unsupported_encoding", "Transfer-Encoding \"" + value + "\" is not accepted: send the body as it is, with Content-Length or chunked");
      chunked = true;
    }
    if (name == "content-length") {
      if (value.empty() || value.size() > 18 || !std::all_of(value.begin(), value.end(), [](unsigned char c) { return std::isdigit(c); }))
        return refuse(400, "bad_request", "Content-Length \"" + value + "\" is not a number of bytes");
      if (content_length && *content_length != value) return refuse(400, "bad_request", "the request has two different Content-Lengths");
      content_length = value;
    }
  }
  if (chunked && content_length)
    return refuse(400, "bad_request", "the request has both Content-Length and Transfer-Encoding, so where it ends is ambiguous");
  if (content_length) {
    body_remaining_ = std::stoull(*content_length);
    if (body_remaining_ > limits_.max_body_bytes)
      return refuse(413, "body_too_large", "the body of " + *content_length + " bytes exceeds the market's limit of " +
                                               std::to_string(limits_.max_body_bytes) + " bytes");
  }
  state_ = chunked ? State::ChunkSize : body_remaining_ > 0 ? State::Body : State::Complete;

  if (const auto expect = request_.header("expect")) {
    if (lowercase(*expect) != "100-continue") return refuse(417, "expectation_failed", "only \"Expect: 100-continue\" is understood");
    expects_continue_ = state_ != State::Complete && version == "HTTP/1.1";  // HTTP/1.0 has no 100 Continue
  }
  const auto connection = request_.header("connection");
  request_.keep_alive = version == "HTTP/1.1" ? !(connection && lists_token(*connection, "close"))
                                              : connection && lists_token(*connection, "keep-alive");
  return Progress::HeadDone;
}

RequestReader::Progress RequestReader::read_chunked(std::string& input) {
  for (;;) {
    switch (state_) {
      case State::ChunkSize: {
        const std::size_t eol = input.find("\r\n");
        if (eol == std::string::npos && input.size() <= kMaxChunkSizeLine) return Progress::NeedMore;
        if (eol == std::string::npos || eol > kMaxChunkSizeLine) return refuse(400, "bad_request", "a chunk size line is too long");
        std::uint64_t size = 0;
        std::size_t digits = 0;
        for (; digits < eol && hex_value(input[digits]) >= 0; ++digits) {
          if (digits == 15) return refuse(400, "bad_request", "a chunk size has more than 15 hex digits");
          size = size * 16 + static_cast<std::uint64_t>(hex_value(input[digits]));
        }
        if (digits == 0 || (digits < eol && input[digits] != ';')) return refuse(400, "bad_request", "a chunk size line is not hex digits");
        if (size > limits_.max_body_bytes - request_.body.size())
          return refuse(413, "body_too_large", "the chunked body exceeds the market's limit of " + std::to_string(limits_.max_body_bytes) + " bytes");
        input.erase(0, eol + 2);
        body_remaining_ = size;
        state_ = size == 0 ? State::Trailers : State::ChunkData;
        break;
      }
      case State::ChunkData: {
        const std::size_t taken = static_cast<std::size_t>(std::min<std::uint64_t>(body_remaining_, input.size()));
        request_.body.append(input, 0, taken);
        input.erase(0, taken);
        body_remaining_ -= taken;
        if (body_remaining_ > 0) return Progress::NeedMore;
        state_ = State::ChunkEnd;
        break;
      }
      case State::ChunkEnd:
        if (input.size() < 2) return Progress::NeedMore;
        if (input[0] != '\r' || input[1] != '\n') return refuse(400, "bad_request", "a chunk is longer than its size says");
        input.erase(0, 2);
        state_ = State::ChunkSize;
        break;
      case State::Trailers: {
        const std::size_t eol = input.find("\r\n");
        if (trailer_bytes_ + (eol == std::string::npos ? input.size() : eol + 2) > limits_.max_head_bytes)
          return refuse(431, "head_too_large", "the trailers exceed " + std::to_string(limits_.max_head_bytes) + " bytes");
        if (eol == std::string::npos) return Progress::NeedMore;
        trailer_bytes_ += eol + 2;
        input.erase(0, eol + 2);
        if (eol == 0) {
          state_ = State::Complete;
          return Progress::Complete;
        }
        break;  // a trailer field: read past, never used
      }
      default:
        return read(input);
    }
  }
}

Request RequestReader::take() {
  Request request = std::move(request_);
  request_ = Request();
  state_ = State::Head;
  head_scanned_ = 0;
  body_remaining_ = 0;
  trailer_bytes_ = 0;
  expects_continue_ = false;
  return request;
}

}  // namespace solver::market::detail
