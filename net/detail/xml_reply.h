// S3's XML replies, read with pugixml: a reply must be a well-formed document whose root is the
// element the call answers with, and each value is read from its own place in the tree, so
// entities, CDATA, comments and nesting mean what XML says. A reply that is not what the call
// answers with is Error(Network) naming the call (`what`) and what was wrong with the reply.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "net/s3.h"

namespace solver::net::detail {

// An <Error> reply's <Code> and <Message>; both empty when the body is empty or not an <Error>
// document (a HEAD reply has no body; a proxy may answer with HTML).
struct S3ErrorReply {
  std::string code;
  std::string message;
};
S3ErrorReply read_error_reply(std::string_view body);

// Whether the body is an <Error> document: CompleteMultipartUpload may answer 200 with one.
bool is_error_reply(std::string_view body);

// One page of ListObjectsV2 (<ListBucketResult>). Keys are decoded when the reply says
// <EncodingType>url</EncodingType>.
struct ObjectListingPage {
  std::vector<S3Object> objects;
  bool truncated = false;
  std::string next_continuation_token;
};
ObjectListingPage read_object_listing(std::string_view body, std::string_view what);

// One page of ListParts (<ListPartsResult>).
struct PartListingPage {
  std::vector<S3Part> parts;
  bool truncated = false;
  std::string next_part_number_marker;
};
PartListingPage read_part_listing(std::string_view body, std::string_view what);

// CreateMultipartUpload's <InitiateMultipartUploadResult><UploadId>, never empty.
std::string read_upload_id(std::string_view body, std::string_view what);

// The <CompleteMultipartUpload> request body listing `parts` in order.
std::string complete_multipart_upload_body(const std::vector<S3Part>& parts);

}  // namespace solver::net::detail
