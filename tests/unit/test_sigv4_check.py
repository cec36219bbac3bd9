"""The storage endpoint's SigV4 check (local_emulator/sigv4_check.py) against botocore's own
signer: what botocore signs passes, whatever the key's characters, and any change to what
was signed, a wrong secret, an unknown key, a stale or expired request is refused."""

from __future__ import annotations

import io
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from local_emulator.sigv4_check import Refusal, SignatureVerifier, canonical_path

KEY_ID, SECRET = "AKIAEXAMPLEKEY000001", "c2VjcmV0LWtleS1mb3ItdGhlLXRlc3Rz"
HOST = "127.0.0.1:4566"
KEYS = [
    "incoming/plain.csv",
    "incoming/a b+c.csv",
    "outputs/ünïcødé/1/0.jpg",
    "odd/!'()*;:@&=$,?#[]%25.txt",
    "tilde~/dots/../x.txt",
]


def environ_of(request: AWSRequest) -> dict[str, Any]:
    """A WSGI environ as werkzeug's server makes it from the request botocore would send."""
    parts = urlsplit(request.url)
    body = request.body or b""
    if isinstance(body, str):
        body = body.encode()
    environ: dict[str, Any] = {
        "REQUEST_METHOD": request.method,
        "RAW_URI": parts.path + (f"?{parts.query}" if parts.query else ""),
        "PATH_INFO": unquote(parts.path, encoding="latin-1"),
        "QUERY_STRING": parts.query,
        "wsgi.input": io.BytesIO(body),
        "CONTENT_LENGTH": str(len(body)),
        "HTTP_HOST": HOST,
    }
    for name, value in request.headers.items():
        key = name.upper().replace("-", "_")
        if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            environ[key] = value
        else:
            environ[f"HTTP_{key}"] = value
    return environ


def s3_request(key: str, body: bytes = b"data", method: str = "PUT") -> AWSRequest:
    from urllib.parse import quote

    url = f"http://{HOST}/bucket/{quote(key, safe='/~')}"
    request = AWSRequest(method=method, url=url, data=body)
    S3SigV4Auth(Credentials(KEY_ID, SECRET), "s3", "us-east-1").add_auth(request)
    return request


def verifier(secret: str = SECRET) -> SignatureVerifier:
    return SignatureVerifier({KEY_ID: secret})


def refusal(environ: dict[str, Any], check: SignatureVerifier | None = None) -> Refusal:
    with pytest.raises(Refusal) as caught:
        (check or verifier()).verify(environ)
    return caught.value


@pytest.mark.parametrize("key", KEYS)
def test_what_botocore_signs_passes_whatever_the_key(key: str) -> None:
    environ = environ_of(s3_request(key))
    assert verifier().verify(environ).service == "s3"
    assert environ["wsgi.input"].read() == b"data"  # the body, handed on whole


@pytest.mark.parametrize("key", KEYS)
def test_a_presigned_url_passes_and_its_signature_is_bound_to_the_key(key: str) -> None:
    from urllib.parse import quote

    url = f"http://{HOST}/bucket/{quote(key, safe='/~')}?versionId=a%20b"
    request = AWSRequest(method="GET", url=url)
    S3SigV4QueryAuth(Credentials(KEY_ID, SECRET), "s3", "us-east-1", expires=60).add_auth(request)
    verifier().verify(environ_of(request))
    other = AWSRequest(method="GET", url=request.url.replace("/bucket/", "/bucket/x"))
    assert refusal(environ_of(other)).code == "SignatureDoesNotMatch"
    zeroed = request.url.split("X-Amz-Signature=")[0] + "X-Amz-Signature=0"
    assert refusal(environ_of(AWSRequest(method="GET", url=zeroed))).code == (
        "SignatureDoesNotMatch"
    )


def test_a_wrong_secret_an_unknown_key_and_a_changed_header_are_refused() -> None:
    environ = environ_of(s3_request("k"))
    wrong = refusal(environ, verifier("another-secret-entirely"))
    assert (wrong.status, wrong.code) == (403, "SignatureDoesNotMatch")
    assert "CanonicalRequest" in wrong.extra
    unknown = refusal(environ, SignatureVerifier({"AKIAOTHER": SECRET}))
    assert (unknown.status, unknown.code) == (403, "InvalidAccessKeyId")
    moved = environ_of(s3_request("k"))
    moved["HTTP_HOST"] = "127.0.0.1:9999"
    assert refusal(moved).code == "SignatureDoesNotMatch"
    post = environ_of(s3_request("k"))
    post["REQUEST_METHOD"] = "DELETE"
    assert refusal(post).code == "SignatureDoesNotMatch"


def test_a_body_that_is_not_the_signed_one_is_refused() -> None:
    environ = environ_of(s3_request("k", b"signed body"))
    environ["wsgi.input"] = io.BytesIO(b"other body!")
    assert refusal(environ).code == "XAmzContentSHA256Mismatch"


def test_stale_and_expired_requests_are_refused() -> None:
    environ = environ_of(s3_request("k"))
    late = SignatureVerifier({KEY_ID: SECRET}, clock=lambda: __import__("time").time() + 3600)
    assert refusal(environ, late).code == "RequestTimeTooSkewed"
    request = AWSRequest(method="GET", url=f"http://{HOST}/bucket/k")
    S3SigV4QueryAuth(Credentials(KEY_ID, SECRET), "s3", "us-east-1", expires=60).add_auth(request)
    expired = refusal(environ_of(request), late)
    assert (expired.code, expired.message) == ("AccessDenied", "Request has expired")


def test_other_services_sign_the_body_and_a_normalised_path() -> None:
    request = AWSRequest(
        method="POST",
        url=f"http://{HOST}/",
        data=b'{"QueueNamePrefix": ""}',
        headers={
            "X-Amz-Target": "AmazonSQS.ListQueues",
            "Content-Type": "application/x-amz-json-1.0",
        },
    )
    SigV4Auth(Credentials(KEY_ID, SECRET), "sqs", "us-east-1").add_auth(request)
    environ = environ_of(request)
    assert verifier().verify(environ).service == "sqs"
    assert environ["wsgi.input"].read() == b'{"QueueNamePrefix": ""}'
    tampered = environ_of(request)
    tampered["wsgi.input"] = io.BytesIO(b'{"QueueNamePrefix": "x"}')
    assert refusal(tampered).code == "SignatureDoesNotMatch"
    assert canonical_path("/a//b/../c%20d", "sqs") == "/a/c%2520d"
    assert canonical_path("/a//b/../c%20d", "s3") == "/a//b/../c%20d"


def test_a_session_token_the_emulator_never_issued_is_refused() -> None:
    request = AWSRequest(method="GET", url=f"http://{HOST}/bucket/k")
    S3SigV4Auth(Credentials(KEY_ID, SECRET, token="tok"), "s3", "us-east-1").add_auth(request)
    assert refusal(environ_of(request)).code == "InvalidToken"


def chunked(request: AWSRequest, data: bytes, *, seed: str, amz_date: str, size: int = 4) -> bytes:
    """`data` as an aws-chunked body signed chunk by chunk (AWS's "Signature calculations
    for the Authorization header: transferring payload in multiple chunks")."""
    import hashlib
    import hmac

    from local_emulator.post_policy import signing_key

    key = signing_key(SECRET, amz_date[:8], "us-east-1", "s3")
    scope = f"{amz_date[:8]}/us-east-1/s3/aws4_request"
    previous, out = seed, b""
    pieces = [data[i : i + size] for i in range(0, len(data), size)] + [b""]
    for piece in pieces:
        to_sign = "\n".join(
            (
                "AWS4-HMAC-SHA256-PAYLOAD",
                amz_date,
                scope,
                previous,
                hashlib.sha256(b"").hexdigest(),
                hashlib.sha256(piece).hexdigest(),
            )
        )
        previous = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        out += f"{len(piece):x};chunk-signature={previous}\r\n".encode() + piece + b"\r\n"
    return out


class StreamingAuth(S3SigV4Auth):
    """botocore's signer, for a signed stream (as the Java and JavaScript SDKs send)."""

    def payload(self, request: AWSRequest) -> str:
        return "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"


def test_a_signed_aws_chunked_body_is_checked_chunk_by_chunk_and_decoded() -> None:
    data = b"a streamed upload, in chunks"
    request = AWSRequest(
        method="PUT",
        url=f"http://{HOST}/bucket/streamed",
        headers={
            "Content-Encoding": "aws-chunked",
            "X-Amz-Content-SHA256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
            "X-Amz-Decoded-Content-Length": str(len(data)),
        },
    )
    StreamingAuth(Credentials(KEY_ID, SECRET), "s3", "us-east-1").add_auth(request)
    assert request.headers["X-Amz-Content-SHA256"] == "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
    seed = request.headers["Authorization"].rpartition("Signature=")[2]
    body = chunked(request, data, seed=seed, amz_date=request.headers["X-Amz-Date"])
    environ = environ_of(request)
    environ["wsgi.input"], environ["CONTENT_LENGTH"] = io.BytesIO(body), str(len(body))
    verifier().verify(environ)
    assert environ["wsgi.input"].read() == data  # what moto stores
    assert environ["CONTENT_LENGTH"] == str(len(data))
    assert "HTTP_CONTENT_ENCODING" not in environ
    tampered = body.replace(b"\r\na st\r\n", b"\r\nA st\r\n")  # a chunk changed, not its signature
    assert tampered != body
    environ = environ_of(request)
    environ["wsgi.input"], environ["CONTENT_LENGTH"] = io.BytesIO(tampered), str(len(tampered))
    assert refusal(environ).code == "SignatureDoesNotMatch"
