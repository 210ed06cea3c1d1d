#!/usr/bin/python3
"""Signs S3 requests with botocore's own SigV4 signer, for comparison with net/sigv4.cpp.

Reads a JSON list of requests (from the file named on the command line, or stdin), each

    {"method", "endpoint": "scheme://host[:port]", "addressing": "path" | "virtual",
     "bucket", "key" (may be empty), "query": [[name, value], ...], "headers": [[name, value], ...],
     "body_hex", "unsigned_payload": bool, "region", "access_key", "secret_key",
     "session_token" (may be empty), "timestamp": "YYYYMMDDTHHMMSSZ"}

builds each URL the way botocore's S3 client does (bucket in the host or the path, the key
percent-encoded with '/' kept, the query with botocore's percent_encode_sequence) and prints a
JSON list of {"url", "authorization", "x-amz-date", "x-amz-content-sha256",
"x-amz-security-token"} with the signer's clock fixed at "timestamp". Only Debian's
python3-botocore is used: no code from solver.
"""
import datetime
import json
import sys
import types
from urllib.parse import urlsplit

import botocore.auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.utils import percent_encode, percent_encode_sequence


def fixed_clock(timestamp):
    """botocore.auth reads datetime.datetime.utcnow(); this makes it return `timestamp`."""
    moment = datetime.datetime.strptime(timestamp, botocore.auth.SIGV4_TIMESTAMP)

    class FixedDatetime(datetime.datetime):
        @classmethod
        def utcnow(cls):
            return moment

    return types.SimpleNamespace(datetime=FixedDatetime)


def build_url(request):
    endpoint = urlsplit(request["endpoint"])
    bucket = request["bucket"]
    key = percent_encode(request["key"], safe="/~")
    if request["addressing"] == "virtual":
        url = f"{endpoint.scheme}://{bucket}.{endpoint.netloc}/{key}"
    else:
        url = f"{endpoint.scheme}://{endpoint.netloc}/{percent_encode(bucket, safe='~')}"
        if request["key"]:
            url += "/" + key
    if request["query"]:
        url += "?" + percent_encode_sequence([tuple(pair) for pair in request["query"]])
    return url


def sign(request):
    aws_request = AWSRequest(
        method=request["method"],
        url=build_url(request),
        headers=dict(request["headers"]),
        data=bytes.fromhex(request["body_hex"]),
    )
    if request["unsigned_payload"]:
        # botocore leaves S3 payloads unsigned only over https and when told to.
        aws_request.context["client_config"] = Config(s3={"payload_signing_enabled": False})
    credentials = Credentials(request["access_key"], request["secret_key"], request["session_token"] or None)
    botocore.auth.datetime = fixed_clock(request["timestamp"])
    botocore.auth.S3SigV4Auth(credentials, "s3", request["region"]).add_auth(aws_request)
    return {
        "url": aws_request.url,
        "authorization": aws_request.headers["Authorization"],
        "x-amz-date": aws_request.headers["X-Amz-Date"],
        "x-amz-content-sha256": aws_request.headers["X-Amz-Content-SHA256"],
        "x-amz-security-token": aws_request.headers.get("X-Amz-Security-Token", ""),
    }


def main():
    source = open(sys.argv[1], encoding="utf-8") if len(sys.argv) > 1 else sys.stdin
    json.dump([sign(request) for request in json.load(source)], sys.stdout, ensure_ascii=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
