// Strict reading of JSON objects for our file formats (tasks, manifests, segments): each
// field is named by its path in errors ("task.training.batch_size: expected a positive
// integer, got -3"), and finish() refuses fields nobody asked for, so a misspelt or
// injected field is an error rather than silently ignored. Documents from others are parsed
// with parse_json_document, which refuses deep nesting before anything recurses over it, and
// an object that names a key twice.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace solver {

// Documents nested deeper than this are refused before parsing: our formats need a handful of
// levels, and code that walks, copies or prints JSON recurses once per level, so a file or body
// of a million brackets would otherwise exhaust a thread's stack.
inline constexpr int kMaxJsonDepth = 64;

// Whether the brackets of `text` (outside strings) nest at most `max_depth` deep. Does not validate.
bool json_depth_within(std::string_view text, int max_depth = kMaxJsonDepth);

// Parses a JSON document that someone else wrote; `what` names it in errors. Throws
// Error(Input) "<what>: JSON nested deeper than 64 levels", "<what>: not valid JSON: ..." or
// "<what>: key \"w\" appears twice in one object" (JSON leaves repeated keys undefined: one
// reader would take the first value, another the last).
nlohmann::json parse_json_document(std::string_view text, std::string_view what);

class ObjectReader {
 public:
  // `path` names the object in errors ("task", "manifest.checkpoints[3]").
  // Throws Error(Input) when `object` is not a JSON object. `object` must outlive the reader.
  ObjectReader(const nlohmann::json& object, std::string path);

  // Throws Error(Input) with "<field>: <message>".
  [[noreturn]] static void fail(const std::string& field, const std::string& message);
  // A JSON value, shortened to at most 60 characters for messages, however deep or long it is.
  static std::string shown(const nlohmann::json& value);

  std::string field(std::string_view key) const;  // path.key
  bool has(std::string_view key);                 // marks the key as known
  const nlohmann::json& raw(std::string_view key);  // fails when missing

  std::string string(std::string_view key);  // non-empty
  std::string sha256(std::string_view key);  // 64 lowercase hex digits
  double number(std::string_view key);       // finite
  double number_or(std::string_view key, double fallback);
  std::int64_t integer(std::string_view key);
  std::int64_t integer_or(std::string_view key, std::int64_t fallback);
  std::int64_t non_negative(std::string_view key);
  std::uint64_t unsigned_integer(std::string_view key);  // 0 to 2^64-1
  bool boolean(std::string_view key);
  bool boolean_or(std::string_view key, bool fallback);
  std::vector<std::int64_t> positive_integers(std::string_view key);  // a non-empty array
  const nlohmann::json& array(std::string_view key);
  ObjectReader object(std::string_view key);

  // Call after reading every field: fails on the first field that was never asked about.
  void finish() const;

 private:
  const nlohmann::json& object_;
  std::string path_;
  std::set<std::string> known_;
};

}  // namespace solver
