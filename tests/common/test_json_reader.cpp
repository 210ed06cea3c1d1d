// Hostile JSON: documents nested deeper than kMaxJsonDepth are refused before parsing (a task
// file and a manifest of 100,000 brackets are Input errors, not a stack overflow), parse errors
// name the document, and error messages show values shortened however deep or long they are.
#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>

#include <functional>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/json_reader.h"
#include "common/task.h"
#include "tests/test_support.h"

using nlohmann::json;
using solver::Error;
using solver::ErrorKind;
using solver::kMaxJsonDepth;

namespace {

std::string nested_arrays(int depth) { return std::string(depth, '[') + std::string(depth, ']'); }

// Runs `action` and expects an Input error whose message contains every one of `parts`.
void require_input_error(const std::function<void()>& action, const std::vector<std::string>& parts) {
  try {
    action();
    FAIL("accepted; expected an Input error");
  } catch (const Error& error) {
    INFO("message: " << error.what());
    CHECK(error.kind() == ErrorKind::Input);
    for (const std::string& part : parts) CHECK_THAT(error.what(), Catch::Contains(part));
  }
}

}  // namespace

TEST_CASE("The nesting limit counts brackets outside strings only", "[common]") {
  CHECK(solver::json_depth_within(R"({"a": [1, {"b": []}]})", 4));
  CHECK_FALSE(solver::json_depth_within(R"({"a": [1, {"b": []}]})", 3));
  CHECK(solver::json_depth_within(R"({"a": "[[[[{{{{", "b": "\"[[[["})", 1));
  CHECK(solver::json_depth_within(nested_arrays(kMaxJsonDepth)));
  CHECK_FALSE(solver::json_depth_within(nested_arrays(kMaxJsonDepth + 1)));
}

TEST_CASE("A task file nested 100,000 deep is an Input error naming the file and the depth", "[common]") {
  solver::test::ScratchDir scratch("json-deep-task");
  const std::filesystem::path path = scratch / "task.json";
  solver::test::write_text(path, nested_arrays(100'000));
  require_input_error([&] { solver::load_task_file(path); },
                      {path.string(), "JSON nested deeper than " + std::to_string(kMaxJsonDepth) + " levels"});
  solver::test::write_text(path, R"({"id": "deep", "seed": 1, "model": )" + std::string(100'000, '{'));
  require_input_error([&] { solver::load_task_file(path); }, {path.string(), "nested deeper than"});
}

TEST_CASE("parse_json_document refuses deep manifests and names the document in parse errors", "[common]") {
  const std::string deep_manifest = R"({"schema": "solver.pol-manifest/1", "task": )" + nested_arrays(100'000) + "}";
  require_input_error([&] { solver::parse_json_document(deep_manifest, "bundle/manifest.json"); },
                      {"bundle/manifest.json: JSON nested deeper than 64 levels"});
  CHECK(solver::parse_json_document(nested_arrays(kMaxJsonDepth), "shallow.json").is_array());
  require_input_error([] { solver::parse_json_document(R"({"a": )", "cut.json"); }, {"cut.json: not valid JSON"});
  // nlohmann reports an overflowing number as out_of_range, not parse_error.
  require_input_error([] { solver::parse_json_document(R"({"a": 1e400})", "huge.json"); }, {"huge.json: not valid JSON"});
}

TEST_CASE("parse_json_document refuses a key repeated in one object, at any depth, and builds what json::parse builds", "[common]") {
  require_input_error([] { solver::parse_json_document(R"({"param.w": 1, "param.w": 2})", "header"); },
                      {"header: key \"param.w\" appears twice in one object"});
  require_input_error([] { solver::parse_json_document(R"({"a": [{"b": {"c": 1, "d": 2, "c": 3}}]})", "deep.json"); },
                      {"deep.json: key \"c\" appears twice in one object"});
  // The same key spelt with an escape is the same key.
  require_input_error([] { solver::parse_json_document(R"({"ab": 1, "a\u0062": 2})", "escaped.json"); },
                      {"escaped.json: key \"ab\" appears twice"});
  // The same key in sibling objects, or an object and its parent, is not a repeat.
  const std::string text =
      R"({"a": {"a": 1, "b": [1, 2.5, -3, "x", true, null, {}, []]}, "b": [{"a": 1}, {"a": 2}], "c": 18446744073709551615})";
  const json parsed = solver::parse_json_document(text, "fine.json");
  CHECK(parsed == json::parse(text));
  CHECK(parsed.dump() == json::parse(text).dump());
  CHECK(solver::parse_json_document("7", "scalar.json") == 7);
  require_input_error([] { solver::parse_json_document(R"({"a": 1} {"b": 2})", "two.json"); }, {"two.json: not valid JSON"});
}

TEST_CASE("Values in error messages are shortened however deep or long they are", "[common]") {
  json deep = json::array();
  for (int level = 0; level < 100'000; ++level) {
    json outer = json::array();
    outer.push_back(std::move(deep));
    deep = std::move(outer);
  }
  const std::string shown_deep = solver::ObjectReader::shown(deep);
  CHECK(shown_deep == std::string(57, '[') + "...");

  const json document = {{"name", deep}, {"text", std::string(1'000'000, 'x')}, {"bytes", "\xff\xfe"}};
  solver::ObjectReader reader(document, "doc");
  require_input_error([&] { reader.string("name"); }, {"doc.name: expected a non-empty string, got [[[["});
  require_input_error([&] { reader.integer("text"); }, {"doc.text: expected an integer, got \"xxxx"});
  CHECK(solver::ObjectReader::shown(document.at("text")).size() == 60);
  CHECK(solver::ObjectReader::shown(document.at("bytes")) == "\"\xEF\xBF\xBD\xEF\xBF\xBD\"");  // U+FFFD, not an exception
  CHECK(solver::ObjectReader::shown(json{{"a", 1}, {"b", {true, nullptr}}}) == R"({"a":1,"b":[true,null]})");
}
