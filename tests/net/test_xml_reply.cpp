// S3's XML replies as net/detail/xml_reply.h reads them: entities, CDATA, comments and nesting
// mean what XML says (a reader that searched the text for tags would take a commented-out or
// nested element for the real one), and a reply that is not the document the call answers with
// is an error naming the call and what was wrong.
#include <catch2/catch.hpp>

#include <string>

#include "common/error.h"
#include "net/detail/xml_reply.h"
#include "tests/test_support.h"

namespace solver::net::detail {
namespace {

std::string error_message(const std::function<void()>& action) {
  const std::optional<Error> error = test::error_of(action);
  REQUIRE(error);
  CHECK(error->kind() == ErrorKind::Network);
  CHECK_FALSE(error->retryable());
  return error->what();
}

TEST_CASE("xml reply: a listing's keys, sizes and ETags are read with their entities, CDATA and nesting", "[net][s3]") {
  const std::string body = R"(<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Name>bundles</Name>
  <!-- <Contents><Key>commented/out</Key><Size>1</Size></Contents> <IsTruncated>true</IsTruncated> -->
  <Contents>
    <Key>runs/a&amp;b/manifest.json</Key>
    <Size>120</Size>
    <ETag>&quot;9b2cf535f27731c974343645a3985328&quot;</ETag>
    <Owner><ID>owner</ID><Size>999</Size></Owner>
  </Contents>
  <Contents><Key><![CDATA[runs/<odd>&name]]></Key><Size>7</Size><ETag>"e"</ETag></Contents>
  <CommonPrefixes><Prefix>runs/</Prefix><IsTruncated>true</IsTruncated></CommonPrefixes>
  <IsTruncated>false</IsTruncated>
</ListBucketResult>)";
  const ObjectListingPage page = read_object_listing(body, "S3 ListObjectsV2 s3://bundles/runs/");
  REQUIRE(page.objects.size() == 2);
  CHECK(page.objects[0].key == "runs/a&b/manifest.json");
  CHECK(page.objects[0].size == 120);
  CHECK(page.objects[0].etag == "\"9b2cf535f27731c974343645a3985328\"");
  CHECK(page.objects[1].key == "runs/<odd>&name");
  CHECK(page.objects[1].size == 7);
  CHECK_FALSE(page.truncated);
}

TEST_CASE("xml reply: url-encoded listing keys are decoded and a truncated page gives its token", "[net][s3]") {
  const std::string body =
      "<ListBucketResult><EncodingType>url</EncodingType><IsTruncated>true</IsTruncated>"
      "<Contents><Key>runs/a%26b/step+0.json</Key><Size>3</Size></Contents>"
      "<NextContinuationToken>token&amp;more</NextContinuationToken></ListBucketResult>";
  const ObjectListingPage page = read_object_listing(body, "S3 ListObjectsV2 s3://bundles/runs/");
  REQUIRE(page.objects.size() == 1);
  CHECK(page.objects[0].key == "runs/a&b/step 0.json");
  CHECK(page.truncated);
  CHECK(page.next_continuation_token == "token&more");
}

TEST_CASE("xml reply: an error reply's code and message are read with their entities", "[net][s3]") {
  const S3ErrorReply reply = read_error_reply(
      "<?xml version=\"1.0\"?><Error><Code>NoSuchKey</Code><Message>The key &quot;a&amp;b&quot; &lt;is&gt; gone</Message>"
      "<Details><Code>Nested</Code></Details></Error>");
  CHECK(reply.code == "NoSuchKey");
  CHECK(reply.message == "The key \"a&b\" <is> gone");
  CHECK(is_error_reply("<Error><Code>InternalError</Code></Error>"));
  // A successful reply that merely mentions an error, and bodies that are not XML, are not errors.
  CHECK_FALSE(is_error_reply("<CompleteMultipartUploadResult><Key>&lt;Error&gt;</Key></CompleteMultipartUploadResult>"));
  CHECK_FALSE(is_error_reply("<html><body><Error>proxy</Error></body></html>"));
  CHECK(read_error_reply("").code.empty());
  CHECK(read_error_reply("<html>Bad gateway").code.empty());
}

TEST_CASE("xml reply: parts and an upload id are read from their own elements", "[net][s3]") {
  const PartListingPage page = read_part_listing(
      "<ListPartsResult><Initiator><ID>me</ID></Initiator><PartNumberMarker>0</PartNumberMarker>"
      "<Part><PartNumber>1</PartNumber><Size>5242880</Size><ETag>&quot;a&quot;</ETag></Part>"
      "<Part><PartNumber>2</PartNumber><Size>17</Size><ETag>\"b\"</ETag></Part>"
      "<IsTruncated>true</IsTruncated><NextPartNumberMarker>2</NextPartNumberMarker></ListPartsResult>",
      "S3 ListParts s3://bundles/big");
  REQUIRE(page.parts.size() == 2);
  CHECK(page.parts[0].number == 1);
  CHECK(page.parts[0].size == 5242880);
  CHECK(page.parts[0].etag == "\"a\"");
  CHECK(page.parts[1].number == 2);
  CHECK(page.truncated);
  CHECK(page.next_part_number_marker == "2");
  CHECK(read_upload_id("<InitiateMultipartUploadResult><Bucket>b</Bucket><Key>k</Key><UploadId>up&amp;1</UploadId>"
                       "</InitiateMultipartUploadResult>",
                       "S3 CreateMultipartUpload s3://b/k") == "up&1");
}

TEST_CASE("xml reply: the completion request escapes what it quotes", "[net][s3]") {
  CHECK(complete_multipart_upload_body({{1, 10, "\"a&b\""}, {2, 3, "<c>"}}) ==
        "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>\"a&amp;b\"</ETag></Part>"
        "<Part><PartNumber>2</PartNumber><ETag>&lt;c&gt;</ETag></Part></CompleteMultipartUpload>");
}

TEST_CASE("xml reply: a malformed or hostile reply is an error naming the call and what was wrong", "[net][s3]") {
  const std::string what = "S3 ListObjectsV2 s3://bundles/runs/";
  CHECK_THAT(error_message([&] { read_object_listing("<html>502 Bad Gateway", what); }),
             Catch::StartsWith(what + ": the reply is not XML ("));
  CHECK_THAT(error_message([&] { read_object_listing("", what); }), Catch::StartsWith(what + ": the reply is not XML"));
  CHECK(error_message([&] { read_object_listing("<Error><Code>SlowDown</Code></Error>", what); }) ==
        what + ": the reply is <Error>, not <ListBucketResult>");
  CHECK(error_message([&] { read_object_listing("<ListBucketResult><Contents><Size>1</Size></Contents></ListBucketResult>", what); }) ==
        what + ": the reply's <Contents> has no <Key>");
  CHECK(error_message([&] {
          read_object_listing("<ListBucketResult><Contents><Key>k</Key><Size>12x</Size></Contents></ListBucketResult>", what);
        }) == what + ": the reply's <Size> is \"12x\", not a number");
  CHECK(error_message([&] {
          read_object_listing("<ListBucketResult><Contents><Key>k</Key><Size>-1</Size></Contents></ListBucketResult>", what);
        }) == what + ": the reply's <Size> is \"-1\", not a number");
  CHECK(error_message([&] { read_object_listing("<ListBucketResult><IsTruncated>true</IsTruncated></ListBucketResult>", what); }) ==
        what + ": the listing is truncated but gives no <NextContinuationToken>");
  CHECK(error_message([&] { read_object_listing("<ListBucketResult><IsTruncated>maybe</IsTruncated></ListBucketResult>", what); }) ==
        what + ": the reply's <IsTruncated> is \"maybe\", not true or false");
  CHECK(error_message([&] { read_upload_id("<InitiateMultipartUploadResult><UploadId/></InitiateMultipartUploadResult>", "S3 Create"); }) ==
        "S3 Create: the reply's <UploadId> is empty");
  CHECK(error_message([&] { read_upload_id("<InitiateMultipartUploadResult></InitiateMultipartUploadResult>", "S3 Create"); }) ==
        "S3 Create: the reply's <InitiateMultipartUploadResult> has no <UploadId>");

  SECTION("an entity the document defines for itself is not expanded") {
    const std::string bomb =
        "<!DOCTYPE ListBucketResult [<!ENTITY a \"aaaaaaaaaa\"><!ENTITY b \"&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;\">"
        "<!ENTITY secret SYSTEM \"file:///etc/passwd\">]>"
        "<ListBucketResult><Contents><Key>&b;&secret;</Key><Size>1</Size></Contents></ListBucketResult>";
    const ObjectListingPage page = read_object_listing(bomb, what);
    REQUIRE(page.objects.size() == 1);
    CHECK(page.objects[0].key == "&b;&secret;");
  }
  SECTION("a document nested a million deep is read without recursion, and refused for its shape") {
    std::string deep = "<ListBucketResult><Contents><Key>k</Key><Size>";
    for (int i = 0; i < 1'000'000; ++i) deep += "<a>";
    for (int i = 0; i < 1'000'000; ++i) deep += "</a>";
    deep += "</Size></Contents></ListBucketResult>";
    CHECK(error_message([&] { read_object_listing(deep, what); }) == what + ": the reply's <Size> is \"\", not a number");
  }
  SECTION("a document cut short is not XML") {
    CHECK_THAT(error_message([&] { read_object_listing("<ListBucketResult><Contents><Key>k</Key>", what); }),
               Catch::StartsWith(what + ": the reply is not XML (") && Catch::Contains("at byte"));
  }
}

}  // namespace
}  // namespace solver::net::detail
