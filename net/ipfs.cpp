// The IPFS client and store. Every RPC call is a POST (Kubo refuses GET) to
// <api_url>/api/v0/<command>?arg=...; errors come back as {"Message": ..., "Type": "error"} with a
// 4xx/5xx status, or, once a streamed reply has started, as an X-Stream-Error trailer.
#include "net/ipfs.h"

#include <nlohmann/json.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <optional>

#include "common/error.h"
#include "common/files.h"
#include "common/json_reader.h"
#include "common/log.h"
#include "common/sha256.h"
#include "net/detail/multiformats.h"
#include "net/http.h"

namespace solver::net {
namespace {

using nlohmann::json;

// The name the uploaded folder gets in the multipart body; the root CID does not depend on it.
constexpr std::string_view kRootPartName = "root";
// Room for the node to answer "timed out" itself before our own timeout cuts the connection.
constexpr std::chrono::milliseconds kNodeTimeoutMargin{10'000};

using Params = std::vector<std::pair<std::string, std::string>>;

std::string timeout_argument(std::chrono::milliseconds timeout) { return std::to_string(timeout.count()) + "ms"; }

// An answer that contradicts the content or the protocol: retrying will not change it.
[[noreturn]] void bad_answer(const std::string& message) { throw Error(ErrorKind::Network, message, false); }

detail::Cid parse_node_cid(const std::string& text, std::string_view what) {
  try {
    return detail::parse_cid(text);
  } catch (const Error& error) {
    bad_answer(std::string(what) + ": the IPFS node answered with an unusable CID: " + error.what());
  }
}

bool same_cid(const detail::Cid& a, const detail::Cid& b) {
  return a.version == b.version && a.codec == b.codec && a.digest == b.digest;
}

// The profile a CID made by solver's profile would have been built with at that CID's version.
UnixfsProfile profile_for(const UnixfsProfile& profile, const detail::Cid& cid) {
  UnixfsProfile adjusted = profile;
  adjusted.cid_version = cid.version;
  if (cid.version == 0) adjusted.raw_leaves = false;
  return adjusted;
}

json parse_json(const std::string& text, std::string_view what) {
  try {
    return parse_json_document(text, "the IPFS node's reply");
  } catch (const Error& error) {
    bad_answer(std::string(what) + ": " + error.what() + ": " + text.substr(0, 200));
  }
}

std::string string_field(const json& object, const char* key, std::string_view what) {
  if (!object.is_object() || !object.contains(key) || !object[key].is_string())
    bad_answer(std::string(what) + ": the IPFS node's reply has no string \"" + key +
               "\": " + object.dump().substr(0, 200));
  return object[key].get<std::string>();
}

void throw_on_stream_error(const HttpResponse& response, std::string_view what) {
  if (const auto trailer = response.header("x-stream-error"))
    throw Error(ErrorKind::Network, std::string(what) + ": the IPFS node failed mid-reply: " + *trailer, true);
}

// A file's part of a multipart add, streamed from disk; `relative` is its path in the upload.
FormPart file_part(const std::filesystem::path& file, const std::string& relative) {
  FormPart part;
  part.filename = url_encode(relative);
  part.content_type = "application/octet-stream";
  part.file = FileSlice{file, 0, std::nullopt};
  return part;
}

// One folder level of a multipart add: the folder's part first, then its entries in name order.
void append_parts(const std::filesystem::path& dir, const std::string& relative, bool include_hidden,
                  std::vector<FormPart>& parts) {
  FormPart& folder = parts.emplace_back();
  folder.filename = url_encode(relative);
  folder.content_type = "application/x-directory";
  std::vector<std::filesystem::directory_entry> entries;
  std::error_code error;
  for (std::filesystem::directory_iterator it(dir, error), end; !error && it != end; it.increment(error))
    if (include_hidden || !it->path().filename().string().starts_with(".")) entries.push_back(*it);
  if (error) throw Error(ErrorKind::Io, "cannot list " + dir.string() + ": " + error.message());
  std::sort(entries.begin(), entries.end(),
            [](const auto& a, const auto& b) { return a.path().filename().string() < b.path().filename().string(); });
  for (const auto& entry : entries) {
    const std::string child = relative + "/" + entry.path().filename().string();
    if (entry.is_directory(error)) {
      append_parts(entry.path(), child, include_hidden, parts);
    } else {
      parts.push_back(file_part(entry.path(), child));
    }
  }
}

// What the calls of one client share: URLs, request shapes and retries.
class Rpc {
 public:
  explicit Rpc(const IpfsOptions& options) : options_(options) {}

  std::string url(std::string_view command, const Params& params) const {
    std::string text = options_.api_url + "/api/v0/" + std::string(command);
    char separator = '?';
    for (const auto& [key, value] : params) {
      text += separator + key + "=" + url_encode(value);
      separator = '&';
    }
    return text;
  }

  HttpRequest post(std::string_view command, const Params& params) const {
    HttpRequest request;
    request.method = "POST";
    request.url = url(command, params);
    request.connect_timeout = options_.connect_timeout;
    return request;
  }

  // A call that only looks something up: the node gives up after lookup_timeout.
  HttpRequest lookup(std::string_view command, Params params) const {
    params.emplace_back("timeout", timeout_argument(options_.lookup_timeout));
    HttpRequest request = post(command, params);
    request.timeout = options_.lookup_timeout + kNodeTimeoutMargin;
    request.stall_timeout = std::chrono::milliseconds(0);  // a node searching for content is silent
    return request;
  }

  // A call that moves content: bounded by the stall and transfer timeouts.
  HttpRequest transfer(std::string_view command, Params params) const {
    if (options_.transfer_timeout.count() > 0)
      params.emplace_back("timeout", timeout_argument(options_.transfer_timeout));
    HttpRequest request = post(command, params);
    request.timeout = options_.transfer_timeout.count() > 0 ? options_.transfer_timeout + kNodeTimeoutMargin
                                                            : std::chrono::milliseconds(0);
    request.stall_timeout = options_.stall_timeout;
    return request;
  }

  // Performs `request` under the retry policy; non-2xx statuses throw (5xx retryable).
  HttpResponse call(const HttpRequest& request, std::string_view what) const {
    HttpResponse response;
    with_retries(options_.retry, what, [&] {
      response = perform(request);
      throw_unless_success(response, what);
      throw_on_stream_error(response, what);
    });
    return response;
  }

 private:
  const IpfsOptions& options_;
};

// The add call's arguments for `profile`: the node must build the same DAG we hashed.
Params add_params(const UnixfsProfile& profile) {
  Params params = {{"cid-version", std::to_string(profile.cid_version)},
                   {"raw-leaves", profile.raw_leaves ? "true" : "false"},
                   {"chunker", profile.chunker()},
                   {"pin", "true"},
                   {"progress", "false"}};
  if (profile.cid_version == 1) params.emplace_back("cid-base", "base32");
  // Only when needed: nodes that do not know the argument build 174-wide, and the CID check says so.
  if (profile.max_links != kDefaultMaxLinks) params.emplace_back("max-file-links", std::to_string(profile.max_links));
  return params;
}

// The CID of the last entry of an add reply (NDJSON, one line per file and folder, the root last).
std::string root_of_add_reply(const std::string& body, std::string_view what) {
  std::optional<std::string> root;
  std::size_t start = 0;
  while (start < body.size()) {
    std::size_t end = body.find('\n', start);
    if (end == std::string::npos) end = body.size();
    const std::string line = body.substr(start, end - start);
    start = end + 1;
    if (line.find_first_not_of(" \r\t") == std::string::npos) continue;
    const json entry = parse_json(line, what);
    if (entry.contains("Type") && entry["Type"] == "error")
      throw Error(ErrorKind::Network, std::string(what) + ": the IPFS node failed: " + entry.value("Message", line),
                  true);
    if (entry.contains("Hash")) root = string_field(entry, "Hash", what);
  }
  if (!root) bad_answer(std::string(what) + ": the IPFS node's reply names no CID: " + body.substr(0, 200));
  return *root;
}

// Uploads `parts` unless the node already pins `expected`, and checks the node's CID against it.
std::string add(const IpfsOptions& options, std::vector<FormPart> parts, const UnixfsNode& expected,
                const std::filesystem::path& source, IpfsClient& client) {
  const std::string what = "IPFS add " + source.string();
  if (client.is_pinned(expected.cid)) {
    log_info("net", "ipfs: {} is already pinned as {}; nothing to upload", source.string(), expected.cid);
    return expected.cid;
  }
  const Rpc rpc(options);
  HttpRequest request = rpc.transfer("add", add_params(options.profile));
  request.form = std::move(parts);
  const std::string answered = root_of_add_reply(rpc.call(request, what).body, what);
  if (!same_cid(parse_node_cid(answered, what), detail::parse_cid(expected.cid)))
    bad_answer("IPFS node returned CID " + answered + " for " + source.string() + " but the content hashes to " +
               expected.cid + " (" + options.profile.describe() + ")");
  log_info("net", "ipfs: added {} ({} bytes) as {}", source.string(), expected.content_size, expected.cid);
  return expected.cid;
}

// Splits "ipfs://CID/a/b", "/ipfs/CID/a/b" or "CID/a/b" into the CID and "a/b".
std::pair<std::string, std::string> split_ipfs_path(std::string_view text) {
  std::string_view rest = text;
  if (rest.starts_with("ipfs://")) {
    rest.remove_prefix(7);
  } else if (rest.starts_with("/ipfs/")) {
    rest.remove_prefix(6);
  }
  const auto slash = rest.find('/');
  std::string cid(rest.substr(0, slash));
  std::string path = slash == std::string_view::npos ? "" : std::string(rest.substr(slash + 1));
  while (!path.empty() && path.back() == '/') path.pop_back();
  try {
    detail::parse_cid(cid);
  } catch (const Error& error) {
    throw Error(ErrorKind::Input,
                "\"" + std::string(text) + "\" is not an IPFS path (ipfs://CID[/path]): " + error.what());
  }
  return {cid, path};
}

// Cats `cid` into `dest` (through dest.partial) and checks the bytes against the CID.
UnixfsNode download_file(const IpfsOptions& options, const std::string& cid, const std::filesystem::path& dest,
                         std::uint64_t max_bytes) {
  const std::string what = "IPFS cat " + cid;
  const detail::Cid expected = detail::parse_cid(cid);
  const Rpc rpc(options);
  std::filesystem::path partial = dest;
  partial += ".partial";
  HttpRequest request = rpc.transfer("cat", {{"arg", cid}});
  request.response_file = partial;
  request.max_response_bytes = max_bytes;
  const auto discard = [&] {
    std::error_code ignored;
    std::filesystem::remove(partial, ignored);
  };
  try {
    with_retries(options.retry, what, [&] {
      const HttpResponse response = perform(request);
      throw_unless_success(response, what);
      throw_on_stream_error(response, what);
    });
  } catch (...) {
    discard();
    throw;
  }

  UnixfsNode node;
  if (expected.codec == detail::kCodecRaw) {
    const std::uint64_t size = std::filesystem::file_size(partial);
    node = {detail::Cid{1, detail::kCodecRaw, sha256_file(partial)}.text(), size, size};
  } else {
    node = file_node(partial, profile_for(options.profile, expected));
  }
  if (!same_cid(detail::parse_cid(node.cid), expected)) {
    discard();
    bad_answer(fmt::format("IPFS node served {} bytes for CID {} but they hash to {} ({})", node.content_size, cid,
                           node.cid, profile_for(options.profile, expected).describe()));
  }
  std::error_code error;
  std::filesystem::rename(partial, dest, error);
  if (error) {
    discard();
    throw Error(ErrorKind::Io, "cannot rename " + partial.string() + " to " + dest.string() + ": " + error.message());
  }
  node.cid = cid;  // the CID in the form the caller gave it
  return node;
}

// `budget`: the bytes the files may still take; each file is cut off where it would pass it.
UnixfsNode fetch_tree(IpfsClient& client, const std::string& cid, const std::filesystem::path& dest, std::uint64_t& budget) {
  std::error_code error;
  std::filesystem::create_directories(dest, error);
  if (error) throw Error(ErrorKind::Io, "cannot create " + dest.string() + ": " + error.message());
  std::vector<DirectoryLink> links;
  for (const IpfsEntry& entry : client.ls(cid)) {
    if (!is_valid_entry_name(entry.name))
      bad_answer("IPFS node lists an entry named \"" + entry.name + "\" in directory " + cid +
                 ", which is no file name");
    const std::filesystem::path target = confined_path(dest, entry.name);
    if (entry.is_directory) {
      links.push_back({entry.name, fetch_tree(client, entry.cid, target, budget)});
    } else {
      links.push_back({entry.name, download_file(client.options(), entry.cid, target, budget)});
      budget -= links.back().node.content_size;
    }
  }
  const detail::Cid expected = detail::parse_cid(cid);
  const UnixfsNode rebuilt = directory_node(std::move(links), profile_for(client.options().profile, expected));
  if (!same_cid(detail::parse_cid(rebuilt.cid), expected))
    bad_answer("IPFS node lists directory " + cid + " with entries that hash to " + rebuilt.cid);
  return UnixfsNode{cid, rebuilt.dag_size, rebuilt.content_size};
}

}  // namespace

IpfsClient::IpfsClient(IpfsOptions options) : options_(std::move(options)) {
  options_.profile.validate();
  while (options_.api_url.ends_with("/")) options_.api_url.pop_back();
  if (!options_.api_url.starts_with("http://") && !options_.api_url.starts_with("https://"))
    throw Error(ErrorKind::Config,
                "IPFS API URL \"" + options_.api_url + "\" is not http:// or https:// (e.g. http://127.0.0.1:5001)");
}

std::string IpfsClient::add_file(const std::filesystem::path& file) {
  const UnixfsNode expected = file_node(file, options_.profile);
  return add(options_, {file_part(file, file.filename().string())}, expected, file, *this);
}

std::string IpfsClient::add_directory(const std::filesystem::path& dir, bool include_hidden) {
  const UnixfsNode expected = directory_tree_node(dir, options_.profile, include_hidden);
  std::vector<FormPart> parts;
  append_parts(dir, std::string(kRootPartName), include_hidden, parts);
  return add(options_, std::move(parts), expected, dir, *this);
}

void IpfsClient::cat_to_file(std::string_view ipfs_path, const std::filesystem::path& dest, std::uint64_t max_bytes) {
  const auto [root, path] = split_ipfs_path(ipfs_path);
  const Rpc rpc(options_);
  std::string cid = root;
  if (path.empty()) {
    // Fails within lookup_timeout when the node cannot find the content, where cat would wait on.
    rpc.call(rpc.lookup("block/stat", {{"arg", root}}), "IPFS block/stat " + root);
  } else {
    const std::string what = "IPFS resolve /ipfs/" + root + "/" + path;
    Params params = {{"arg", "/ipfs/" + root + "/" + path}};
    if (detail::parse_cid(root).version == 1) params.emplace_back("cid-base", "base32");
    const std::string resolved =
        string_field(parse_json(rpc.call(rpc.lookup("resolve", params), what).body, what), "Path", what);
    cid = resolved.starts_with("/ipfs/") ? resolved.substr(6) : resolved;
    if (cid.find('/') != std::string::npos)
      bad_answer(what + ": the IPFS node resolved it to \"" + resolved + "\", not to a CID");
    parse_node_cid(cid, what);
  }
  download_file(options_, cid, dest, max_bytes);
}

std::vector<IpfsEntry> IpfsClient::ls(const std::string& cid) {
  const std::string what = "IPFS ls " + cid;
  Params params = {{"arg", cid}, {"resolve-type", "true"}, {"size", "false"}};
  if (detail::parse_cid(cid).version == 1) params.emplace_back("cid-base", "base32");
  const Rpc rpc(options_);
  const json reply = parse_json(rpc.call(rpc.lookup("ls", params), what).body, what);
  if (!reply.contains("Objects") || !reply["Objects"].is_array() || reply["Objects"].size() != 1)
    bad_answer(what + ": the IPFS node's reply has no single entry in \"Objects\": " + reply.dump().substr(0, 200));
  const json& object = reply["Objects"][0];
  std::vector<IpfsEntry> entries;
  if (!object.contains("Links") || !object["Links"].is_array())
    bad_answer(what + ": the IPFS node's reply has no \"Links\" list: " + object.dump().substr(0, 200));
  for (const json& link : object["Links"]) {
    IpfsEntry entry{string_field(link, "Name", what), string_field(link, "Hash", what)};
    parse_node_cid(entry.cid, what);
    const int type = link.value("Type", -1);
    if (type != 1 && type != 2)
      throw Error(ErrorKind::Input,
                  what + ": entry \"" + entry.name + "\" has UnixFS type " + std::to_string(type) +
                      " (expected 1, a directory, or 2, a file; symlinks and others are not supported)");
    entry.is_directory = type == 1;
    entries.push_back(std::move(entry));
  }
  return entries;
}

void IpfsClient::pin_rm(const std::string& cid) {
  const Rpc rpc(options_);
  rpc.call(rpc.lookup("pin/rm", {{"arg", cid}, {"recursive", "true"}}), "IPFS pin/rm " + cid);
}

void IpfsClient::pin_add(const std::string& cid) {
  const std::string what = "IPFS pin/add " + cid;
  const detail::Cid wanted = detail::parse_cid(cid);
  const Rpc rpc(options_);
  const json reply =
      parse_json(rpc.call(rpc.lookup("pin/add", {{"arg", cid}, {"recursive", "true"}}), what).body, what);
  if (!reply.contains("Pins") || !reply["Pins"].is_array() ||
      std::none_of(reply["Pins"].begin(), reply["Pins"].end(), [&](const json& pin) {
        return pin.is_string() && same_cid(parse_node_cid(pin.get<std::string>(), what), wanted);
      }))
    bad_answer(what + ": the IPFS node's reply does not list the CID as pinned: " + reply.dump().substr(0, 200));
}

bool IpfsClient::is_pinned(const std::string& cid) {
  const std::string what = "IPFS pin/ls " + cid;
  const detail::Cid wanted = detail::parse_cid(cid);
  const HttpRequest request = Rpc(options_).lookup("pin/ls", {{"arg", cid}, {"type", "recursive"}});
  bool pinned = false;
  with_retries(options_.retry, what, [&] {
    const HttpResponse response = perform(request);
    // Kubo and js-ipfs both answer an error "path '<cid>' is not pinned" when it is not.
    if (response.status >= 400 && response.body.find("is not pinned") != std::string::npos) {
      pinned = false;
      return;
    }
    throw_unless_success(response, what);
    const json reply = parse_json(response.body, what);
    pinned = false;
    if (reply.contains("Keys") && reply["Keys"].is_object())
      for (const auto& [key, value] : reply["Keys"].items())
        if (same_cid(parse_node_cid(key, what), wanted) && value.is_object() && value.value("Type", "") == "recursive")
          pinned = true;
  });
  return pinned;
}

void IpfsClient::fetch_directory(const std::string& cid, const std::filesystem::path& dest, std::uint64_t max_bytes) {
  if (std::filesystem::exists(dest))
    throw Error(ErrorKind::Io, "cannot fetch " + cid + " into " + dest.string() + ": it exists");
  fetch_tree(*this, cid, dest, max_bytes);
}

IpfsStore::IpfsStore(IpfsOptions options) : client_(std::move(options)) {}

std::string IpfsStore::publish(const BundleListing& bundle, const std::string& bundle_name) {
  const std::string cid = client_.add_directory(bundle.dir, /*include_hidden=*/false);
  log_info("net", "ipfs: bundle {} published as ipfs://{}", bundle_name, cid);
  return "ipfs://" + cid;
}

void IpfsStore::fetch(const std::string& address, const std::filesystem::path& dest_dir, std::uint64_t max_bytes) {
  if (!address.starts_with("ipfs://"))
    throw Error(ErrorKind::Input, "\"" + address + "\" is not an IPFS bundle address (expected ipfs://CID)");
  const auto [cid, path] = split_ipfs_path(address);
  if (!path.empty())
    throw Error(ErrorKind::Input,
                "\"" + address + "\" names a path inside a directory; a bundle address is ipfs://CID");

  std::filesystem::path target = std::filesystem::absolute(dest_dir).lexically_normal();
  if (!target.has_filename()) target = target.parent_path();
  std::error_code error;
  if (std::filesystem::exists(target) && !std::filesystem::is_empty(target, error))
    throw Error(ErrorKind::Io, "cannot fetch " + address + " into " + target.string() + ": it is not empty");
  const std::filesystem::path staging = target.parent_path() / ("." + target.filename().string() + ".fetching");
  std::filesystem::remove_all(staging, error);
  try {
    client_.fetch_directory(cid, staging, max_bytes);
  } catch (...) {
    std::filesystem::remove_all(staging, error);
    throw;
  }
  std::filesystem::remove(target, error);  // an empty folder the caller made, if any
  std::filesystem::rename(staging, target, error);
  if (error)
    throw Error(ErrorKind::Io, "cannot rename " + staging.string() + " to " + target.string() + ": " + error.message());
  log_info("net", "ipfs: fetched {} into {}", address, target.string());
}

std::string IpfsStore::probe(const std::filesystem::path& scratch_dir) {
  const std::filesystem::path sent = scratch_dir / "ipfs-probe";
  const std::filesystem::path received = scratch_dir / "ipfs-probe.back";
  const std::string content = probe_content();
  write_file_durably(sent, content);
  const std::string cid = client_.add_file(sent);
  client_.cat_to_file(cid, received, content.size());
  client_.pin_rm(cid);
  if (read_file(received) != content)
    throw Error(ErrorKind::Network, "IPFS node " + client_.options().api_url + " gave back other bytes for " + cid);
  return "added, read back and unpinned " + cid + " on " + client_.options().api_url;
}

}  // namespace solver::net
