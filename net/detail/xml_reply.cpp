// pugixml parses in place and without recursion, expands only XML's own entities (a DOCTYPE's
// entities are never defined, so a reply cannot grow itself or name a file), and skips comments
// and processing instructions; the reply is at most HttpRequest::max_response_bytes.
#include "net/detail/xml_reply.h"

#include <pugixml.hpp>

#include <charconv>
#include <limits>

#include "common/error.h"

namespace solver::net::detail {
namespace {

[[noreturn]] void fail(std::string_view what, const std::string& problem) {
  throw Error(ErrorKind::Network, std::string(what) + ": " + problem);
}

// The document of a reply whose root must be <root>.
pugi::xml_node parse_reply(pugi::xml_document& document, std::string_view body, const char* root,
                           std::string_view what) {
  const pugi::xml_parse_result parsed = document.load_buffer(body.data(), body.size(), pugi::parse_default,
                                                             pugi::encoding_utf8);
  if (!parsed)
    fail(what, "the reply is not XML (" + std::string(parsed.description()) + " at byte " +
                   std::to_string(parsed.offset) + ")");
  const pugi::xml_node element = document.document_element();
  if (std::string_view(element.name()) != root)
    fail(what, "the reply is <" + std::string(element.name()) + ">, not <" + root + ">");
  return element;
}

// An element's text: its character data and CDATA sections, joined.
std::string text_of(pugi::xml_node element) {
  std::string text;
  for (const pugi::xml_node child : element.children())
    if (child.type() == pugi::node_pcdata || child.type() == pugi::node_cdata) text += child.value();
  return text;
}

pugi::xml_node required_child(pugi::xml_node parent, const char* name, std::string_view what) {
  const pugi::xml_node child = parent.child(name);
  if (!child) fail(what, "the reply's <" + std::string(parent.name()) + "> has no <" + name + ">");
  return child;
}

std::uint64_t number_of(pugi::xml_node parent, const char* name, std::string_view what) {
  const std::string text = text_of(required_child(parent, name, what));
  std::uint64_t value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || error != std::errc() || end != text.data() + text.size())
    fail(what, "the reply's <" + std::string(name) + "> is \"" + text.substr(0, 40) + "\", not a number");
  return value;
}

// <IsTruncated> is absent or "false" on the last page.
bool is_truncated(pugi::xml_node result, std::string_view what) {
  const pugi::xml_node flag = result.child("IsTruncated");
  if (!flag) return false;
  const std::string text = text_of(flag);
  if (text != "true" && text != "false")
    fail(what, "the reply's <IsTruncated> is \"" + text.substr(0, 40) + "\", not true or false");
  return text == "true";
}

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Listing keys under encoding-type=url: %XX escapes, '+' for a space.
std::string url_decode(std::string_view text) {
  std::string out;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '%' && i + 2 < text.size() && hex_digit(text[i + 1]) >= 0 && hex_digit(text[i + 2]) >= 0) {
      out += static_cast<char>(hex_digit(text[i + 1]) * 16 + hex_digit(text[i + 2]));
      i += 2;
    } else {
      out += text[i] == '+' ? ' ' : text[i];
    }
  }
  return out;
}

}  // namespace

S3ErrorReply read_error_reply(std::string_view body) {
  pugi::xml_document document;
  if (!document.load_buffer(body.data(), body.size(), pugi::parse_default, pugi::encoding_utf8)) return {};
  const pugi::xml_node error = document.child("Error");
  return {text_of(error.child("Code")), text_of(error.child("Message"))};
}

bool is_error_reply(std::string_view body) {
  pugi::xml_document document;
  return document.load_buffer(body.data(), body.size(), pugi::parse_default, pugi::encoding_utf8) &&
         document.child("Error");
}

ObjectListingPage read_object_listing(std::string_view body, std::string_view what) {
  pugi::xml_document document;
  const pugi::xml_node result = parse_reply(document, body, "ListBucketResult", what);
  const bool url_encoded = text_of(result.child("EncodingType")) == "url";
  ObjectListingPage page;
  for (const pugi::xml_node contents : result.children("Contents")) {
    const std::string key = text_of(required_child(contents, "Key", what));
    page.objects.push_back(S3Object{url_encoded ? url_decode(key) : key, number_of(contents, "Size", what),
                                    text_of(contents.child("ETag")), ""});
  }
  page.truncated = is_truncated(result, what);
  if (page.truncated) {
    page.next_continuation_token = text_of(result.child("NextContinuationToken"));
    if (page.next_continuation_token.empty())
      fail(what, "the listing is truncated but gives no <NextContinuationToken>");
  }
  return page;
}

PartListingPage read_part_listing(std::string_view body, std::string_view what) {
  pugi::xml_document document;
  const pugi::xml_node result = parse_reply(document, body, "ListPartsResult", what);
  PartListingPage page;
  for (const pugi::xml_node part : result.children("Part")) {
    const std::uint64_t number = number_of(part, "PartNumber", what);
    if (number > static_cast<std::uint64_t>(std::numeric_limits<int>::max()))
      fail(what, "the reply lists part number " + std::to_string(number));
    page.parts.push_back(S3Part{static_cast<int>(number), number_of(part, "Size", what), text_of(part.child("ETag"))});
  }
  page.truncated = is_truncated(result, what);
  if (page.truncated) {
    page.next_part_number_marker = text_of(result.child("NextPartNumberMarker"));
    if (page.next_part_number_marker.empty())
      fail(what, "the listing is truncated but gives no <NextPartNumberMarker>");
  }
  return page;
}

std::string read_upload_id(std::string_view body, std::string_view what) {
  pugi::xml_document document;
  const pugi::xml_node result = parse_reply(document, body, "InitiateMultipartUploadResult", what);
  std::string upload_id = text_of(required_child(result, "UploadId", what));
  if (upload_id.empty()) fail(what, "the reply's <UploadId> is empty");
  return upload_id;
}

std::string complete_multipart_upload_body(const std::vector<S3Part>& parts) {
  pugi::xml_document document;
  pugi::xml_node root = document.append_child("CompleteMultipartUpload");
  for (const S3Part& part : parts) {
    pugi::xml_node element = root.append_child("Part");
    element.append_child("PartNumber").text().set(part.number);
    element.append_child("ETag").text().set(part.etag.c_str());
  }
  struct Collect : pugi::xml_writer {
    std::string text;
    void write(const void* data, std::size_t size) override { text.append(static_cast<const char*>(data), size); }
  } collect;
  document.save(collect, "", pugi::format_raw | pugi::format_no_declaration);
  return collect.text;
}

}  // namespace solver::net::detail
