#include "common/json_reader.h"

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/sha256.h"

namespace solver {

using nlohmann::json;

namespace {

constexpr std::size_t kShownLength = 60;

std::string scalar_text(const json& value) { return value.dump(-1, ' ', false, json::error_handler_t::replace); }

// Appends `value` compactly, stopping once `out` is longer than `limit`: each level appends a
// bracket before descending, so the recursion is at most `limit` levels deep however deep `value` is.
void append_shown(const json& value, std::string& out, std::size_t limit) {
  if (!value.is_structured()) {
    out += scalar_text(value).substr(0, limit + 1);
    return;
  }
  out += value.is_object() ? '{' : '[';
  bool first = true;
  for (auto item = value.begin(); item != value.end() && out.size() <= limit; ++item) {
    if (!first) out += ',';
    first = false;
    if (value.is_object()) out += scalar_text(json(item.key())) + ':';
    append_shown(*item, out, limit);
  }
  out += value.is_object() ? '}' : ']';
}

// Builds the document as nlohmann's own parser does, but refuses an object that names a key
// twice: nlohmann would keep one of the values silently, so two readers of the same bytes (a
// verifier in Python, say) could see different documents. A SAX handler rather than a parse
// callback: it finds the repeat with the insertion it makes anyway. On a 10 MB segment file it
// takes 7% longer than json::parse; a parse callback keeping sets of keys took 30% longer.
class UniqueKeyBuilder {
 public:
  UniqueKeyBuilder(json& root, std::string_view what) : root_(root), what_(what) {}

  bool null() { return put(nullptr); }
  bool boolean(bool value) { return put(value); }
  bool number_integer(json::number_integer_t value) { return put(value); }
  bool number_unsigned(json::number_unsigned_t value) { return put(value); }
  bool number_float(json::number_float_t value, const std::string& /*text*/) { return put(value); }
  bool string(std::string& value) { return put(std::move(value)); }
  bool binary(json::binary_t& value) { return put(json::binary(std::move(value))); }
  bool start_object(std::size_t /*size*/) {
    open_.push_back(place(json::object()));
    return true;
  }
  bool key(std::string& name) {
    const auto [slot, inserted] = open_.back()->get_ref<json::object_t&>().try_emplace(std::move(name));
    if (!inserted)
      throw Error(ErrorKind::Input, std::string(what_) + ": key " + scalar_text(json(slot->first)) + " appears twice in one object");
    slot_ = &slot->second;
    return true;
  }
  bool end_object() {
    open_.pop_back();
    return true;
  }
  bool start_array(std::size_t /*size*/) {
    open_.push_back(place(json::array()));
    return true;
  }
  bool end_array() {
    open_.pop_back();
    return true;
  }
  // parse_error, or out_of_range for a number like 1e400.
  bool parse_error(std::size_t /*position*/, const std::string& /*token*/, const json::exception& error) {
    throw Error(ErrorKind::Input, std::string(what_) + ": not valid JSON: " + error.what());
  }

 private:
  // Places `value` where the document expects the next one: the root, the end of the open
  // array, or the slot of the key just read. Pointers to open containers stay valid: only the
  // innermost one grows, and an object's values never move.
  json* place(json value) {
    if (open_.empty()) {
      root_ = std::move(value);
      return &root_;
    }
    if (open_.back()->is_array()) {
      json::array_t& array = open_.back()->get_ref<json::array_t&>();
      array.push_back(std::move(value));
      return &array.back();
    }
    *slot_ = std::move(value);
    return slot_;
  }
  bool put(json value) {
    place(std::move(value));
    return true;
  }

  json& root_;
  std::string_view what_;
  std::vector<json*> open_;  // the objects and arrays being filled, outermost first
  json* slot_ = nullptr;     // the value of the key just read
};

}  // namespace

bool json_depth_within(std::string_view text, int max_depth) {
  int depth = 0;
  bool in_string = false;
  bool escaped = false;
  for (const char c : text) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > max_depth) return false;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return true;
}

json parse_json_document(std::string_view text, std::string_view what) {
  if (!json_depth_within(text, kMaxJsonDepth))
    throw Error(ErrorKind::Input, std::string(what) + ": JSON nested deeper than " + std::to_string(kMaxJsonDepth) + " levels");
  json document;
  UniqueKeyBuilder builder(document, what);
  json::sax_parse(text, &builder);
  return document;
}

ObjectReader::ObjectReader(const json& object, std::string path) : object_(object), path_(std::move(path)) {
  if (!object_.is_object()) fail(path_, "expected an object, got " + shown(object_));
}

void ObjectReader::fail(const std::string& field, const std::string& message) {
  throw Error(ErrorKind::Input, field + ": " + message);
}

std::string ObjectReader::shown(const json& value) {
  std::string text;
  append_shown(value, text, kShownLength);
  return text.size() > kShownLength ? text.substr(0, kShownLength - 3) + "..." : text;
}

std::string ObjectReader::field(std::string_view key) const { return path_ + "." + std::string(key); }

bool ObjectReader::has(std::string_view key) {
  known_.insert(std::string(key));
  return object_.contains(key);
}

const json& ObjectReader::raw(std::string_view key) {
  if (!has(key)) fail(field(key), "missing");
  return object_.at(std::string(key));
}

std::string ObjectReader::string(std::string_view key) {
  const json& value = raw(key);
  if (!value.is_string() || value.get<std::string>().empty())
    fail(field(key), "expected a non-empty string, got " + shown(value));
  return value.get<std::string>();
}

std::string ObjectReader::sha256(std::string_view key) {
  std::string value = string(key);
  if (!is_sha256_hex(value)) fail(field(key), "expected 64 lowercase hex digits, got \"" + value + "\"");
  return value;
}

double ObjectReader::number(std::string_view key) {
  const json& value = raw(key);
  if (!value.is_number() || !std::isfinite(value.get<double>())) fail(field(key), "expected a finite number, got " + shown(value));
  return value.get<double>();
}

double ObjectReader::number_or(std::string_view key, double fallback) { return has(key) ? number(key) : fallback; }

std::int64_t ObjectReader::integer(std::string_view key) {
  const json& value = raw(key);
  if (!value.is_number_integer() ||
      (value.is_number_unsigned() && value.get<std::uint64_t>() > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())))
    fail(field(key), "expected an integer, got " + shown(value));
  return value.get<std::int64_t>();
}

std::int64_t ObjectReader::integer_or(std::string_view key, std::int64_t fallback) { return has(key) ? integer(key) : fallback; }

std::int64_t ObjectReader::non_negative(std::string_view key) {
  const std::int64_t value = integer(key);
  if (value < 0) fail(field(key), "expected a non-negative integer, got " + std::to_string(value));
  return value;
}

std::uint64_t ObjectReader::unsigned_integer(std::string_view key) {
  const json& value = raw(key);
  if (!value.is_number_unsigned() && !(value.is_number_integer() && value.get<std::int64_t>() >= 0))
    fail(field(key), "expected a non-negative integer below 2^64, got " + shown(value));
  return value.get<std::uint64_t>();
}

bool ObjectReader::boolean(std::string_view key) {
  const json& value = raw(key);
  if (!value.is_boolean()) fail(field(key), "expected true or false, got " + shown(value));
  return value.get<bool>();
}

bool ObjectReader::boolean_or(std::string_view key, bool fallback) { return has(key) ? boolean(key) : fallback; }

std::vector<std::int64_t> ObjectReader::positive_integers(std::string_view key) {
  const json& value = raw(key);
  if (!value.is_array() || value.empty()) fail(field(key), "expected a non-empty array of positive integers, got " + shown(value));
  std::vector<std::int64_t> result;
  for (const json& item : value) {
    if (!item.is_number_integer() || item.get<std::int64_t>() <= 0) fail(field(key), "expected positive integers, got " + shown(value));
    result.push_back(item.get<std::int64_t>());
  }
  return result;
}

const json& ObjectReader::array(std::string_view key) {
  const json& value = raw(key);
  if (!value.is_array()) fail(field(key), "expected an array, got " + shown(value));
  return value;
}

ObjectReader ObjectReader::object(std::string_view key) { return ObjectReader(raw(key), field(key)); }

void ObjectReader::finish() const {
  for (const auto& [key, value] : object_.items())
    if (!known_.contains(key)) {
      std::string expected;
      for (const auto& name : known_) expected += (expected.empty() ? "" : ", ") + name;
      fail(field(key), "unknown field (expected one of: " + expected + ")");
    }
}

}  // namespace solver
