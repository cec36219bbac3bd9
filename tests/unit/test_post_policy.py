"""The emulator's POST policy check (local_emulator/post_policy.py) refuses what S3 refuses.

The policy under test is the app's own (`S3ObjectStore.presigned_post`, signed by botocore
on moto in-process), changed one field at a time; hand-built policies cover the condition
kinds the app does not use. The WSGI middleware is driven in-process with raw bodies."""

from __future__ import annotations

import base64
import io
import json
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.config import Config
from chalicelib.adapters.s3 import S3ObjectStore
from moto import mock_aws

from local_emulator import post_policy
from local_emulator.post_policy import (
    ALGORITHM,
    PolicyChecker,
    PostPolicyMiddleware,
    S3Error,
    SizeRange,
    path_bucket,
    sign_policy_v4,
)

ACCESS, SECRET, REGION = "testing", "testing", "us-east-1"
BUCKET = "uploads-bucket"
KEY = "incoming/0b7c9a52-5f7e-4d0a-9f5e-1a2b3c4d5e6f.csv"
MAX = 10 * 1024 * 1024  # the app's MAX_CSV_BYTES default
TTL = 900
DAY = "20300101"

Fields = list[tuple[str, str]]


def app_post(signature_version: str = "s3v4", expires_in: int = TTL) -> Fields:
    """The app's presigned POST for KEY, signed by botocore as the functions sign it."""
    with mock_aws():
        session = boto3.session.Session(
            aws_access_key_id=ACCESS, aws_secret_access_key=SECRET, region_name=REGION
        )
        client = session.client(
            "s3",
            endpoint_url="http://127.0.0.1:5000",
            config=Config(signature_version=signature_version),
        )
        post = S3ObjectStore(client, BUCKET).presigned_post(KEY, MAX, expires_in)
    return list(post.fields.items())


def replaced(fields: Fields, name: str, value: str) -> Fields:
    return [(k, value if k == name else v) for k, v in fields]


def without(fields: Fields, name: str) -> Fields:
    return [(k, v) for k, v in fields if k != name]


def policy_of(fields: Fields) -> dict[str, Any]:
    return json.loads(base64.b64decode(dict(fields)["policy"]))  # type: ignore[no-any-return]


def checker(clock: Callable[[], datetime] | None = None) -> PolicyChecker:
    return PolicyChecker({ACCESS: SECRET}, clock) if clock else PolicyChecker({ACCESS: SECRET})


def refusal(fields: Fields, *, size: int = 10, bucket: str = BUCKET, **kwargs: Any) -> S3Error:
    with pytest.raises(S3Error) as caught:
        checker(kwargs.pop("clock", None)).check(
            fields, bucket=bucket, filename="p.csv", size=size, region=REGION, **kwargs
        )
    return caught.value


def signed(
    conditions: list[Any],
    fields: dict[str, str],
    *,
    expiration: str | None = "2031-01-01T00:00:00.000Z",
    policy: str | None = None,
) -> Fields:
    """A hand-built SigV4 POST: `fields`, the signature fields, and a policy of `conditions`
    plus the conditions on the signature fields (as SDKs add them)."""
    credential = f"{ACCESS}/{DAY}/{REGION}/s3/aws4_request"
    sig_fields = {
        "x-amz-algorithm": ALGORITHM,
        "x-amz-credential": credential,
        "x-amz-date": f"{DAY}T000000Z",
    }
    document: dict[str, Any] = {
        "conditions": [*conditions, *({k: v} for k, v in sig_fields.items())]
    }
    if expiration is not None:
        document["expiration"] = expiration
    encoded = policy or base64.b64encode(json.dumps(document).encode()).decode()
    signature = sign_policy_v4(encoded, SECRET, DAY, REGION)
    return [
        *fields.items(),
        *sig_fields.items(),
        ("policy", encoded),
        ("x-amz-signature", signature),
    ]


# -- the app's policy ----------------------------------------------------------------------


def test_the_apps_presigned_post_passes() -> None:
    fields = app_post()
    assert {"key", "policy", "x-amz-signature", "x-amz-credential", "Content-Type"} <= dict(
        fields
    ).keys()
    authorized = checker().check(
        fields, bucket=BUCKET, filename="products.csv", size=MAX, region=REGION
    )
    assert authorized.key == KEY
    assert authorized.sizes == (SizeRange(1, MAX),)
    assert authorized.cap == MAX


def test_field_names_match_whatever_their_case_and_x_ignore_fields_are_free() -> None:
    fields = [(k.upper() if k == "key" else k, v) for k, v in app_post()]
    fields.append(("x-ignore-trace", "anything"))
    assert checker().check(fields, bucket=BUCKET, filename=None, size=1).key == KEY


def _altered_policy(fields: Fields) -> Fields:
    """The policy re-encoded with a larger cap, the signature left as it was."""
    document = policy_of(fields)
    document["conditions"] = [
        ["content-length-range", 1, 10 * MAX]
        if isinstance(c, list) and c[0] == "content-length-range"
        else c
        for c in document["conditions"]
    ]
    return replaced(fields, "policy", base64.b64encode(json.dumps(document).encode()).decode())


def _flip_one_hex_digit(signature: str) -> str:
    return ("1" if signature[0] == "0" else "0") + signature[1:]


APP_CASES: dict[str, tuple[Callable[[Fields], Fields], dict[str, Any], int, str, str]] = {
    # case: (change to the app's fields, check arguments, status, code, in the message)
    "another key": (
        lambda f: replaced(f, "key", "incoming/someone-else.csv"),
        {},
        403,
        "AccessDenied",
        f'Policy Condition failed: ["eq", "$key", "{KEY}"]',
    ),
    "over the size cap": (lambda f: f, {"size": MAX + 1}, 400, "EntityTooLarge", "exceeds"),
    "an empty file": (lambda f: f, {"size": 0}, 400, "EntityTooSmall", "smaller"),
    "a PNG": (
        lambda f: replaced(f, "Content-Type", "image/png"),
        {},
        403,
        "AccessDenied",
        'Policy Condition failed: ["eq", "$Content-Type", "text/csv"]',
    ),
    "an expired policy": (
        lambda f: f,
        {"clock": lambda: datetime.now(UTC) + timedelta(seconds=TTL + 1)},
        403,
        "AccessDenied",
        "Invalid according to Policy: Policy expired.",
    ),
    "a zeroed signature": (
        lambda f: replaced(f, "x-amz-signature", "0" * 64),
        {},
        403,
        "SignatureDoesNotMatch",
        "does not match",
    ),
    "an altered signature": (
        lambda f: replaced(f, "x-amz-signature", _flip_one_hex_digit(dict(f)["x-amz-signature"])),
        {},
        403,
        "SignatureDoesNotMatch",
        "does not match",
    ),
    "an altered policy": (_altered_policy, {}, 403, "SignatureDoesNotMatch", "does not match"),
    "a field the policy does not cover": (
        lambda f: [*f, ("x-amz-meta-owner", "mallory")],
        {},
        403,
        "AccessDenied",
        "Invalid according to Policy: Extra input fields: x-amz-meta-owner",
    ),
    "no policy": (lambda f: without(f, "policy"), {}, 403, "AccessDenied", "Access Denied"),
    "no key": (lambda f: without(f, "key"), {}, 400, "InvalidArgument", "named 'key'"),
    "no credential": (
        lambda f: without(f, "x-amz-credential"),
        {},
        400,
        "InvalidArgument",
        "named 'X-Amz-Credential'",
    ),
    "an unknown access key": (
        lambda f: replaced(
            f, "x-amz-credential", "AKIAOTHER/" + dict(f)["x-amz-credential"].split("/", 1)[1]
        ),
        {},
        403,
        "InvalidAccessKeyId",
        "does not exist",
    ),
    "another region": (
        lambda f: replaced(
            f, "x-amz-credential", dict(f)["x-amz-credential"].replace(REGION, "eu-west-1")
        ),
        {},
        400,
        "InvalidArgument",
        "the region 'eu-west-1' is wrong; expecting 'us-east-1'",
    ),
    "another bucket": (
        lambda f: f,
        {"bucket": "other-bucket"},
        403,
        "AccessDenied",
        f'Policy Condition failed: ["eq", "$bucket", "{BUCKET}"]',
    ),
    "another algorithm": (
        lambda f: replaced(f, "x-amz-algorithm", "AWS4-HMAC-SHA1"),
        {},
        400,
        "InvalidArgument",
        "Unsupported algorithm",
    ),
}


@pytest.mark.parametrize("case", list(APP_CASES))
def test_each_change_to_the_apps_post_is_refused_as_s3_refuses_it(case: str) -> None:
    change, kwargs, status, code, message = APP_CASES[case]
    error = refusal(change(app_post()), **kwargs)
    assert (error.status, error.code) == (status, code)
    assert message in error.message


def test_size_refusals_name_the_size_and_the_limit() -> None:
    large = refusal(app_post(), size=MAX + 1)
    assert large.extra == {"ProposedSize": str(MAX + 1), "MaxSizeAllowed": str(MAX)}
    small = refusal(app_post(), size=0)
    assert small.extra == {"ProposedSize": "0", "MinSizeAllowed": "1"}


def test_a_sigv2_post_is_checked_too() -> None:
    fields = app_post(signature_version="s3")
    assert "AWSAccessKeyId" in dict(fields)
    assert checker().check(fields, bucket=BUCKET, filename=None, size=5).key == KEY
    zeroed = refusal(replaced(fields, "signature", base64.b64encode(bytes(20)).decode()))
    assert zeroed.code == "SignatureDoesNotMatch"
    assert refusal(without(fields, "signature")).code == "InvalidArgument"


def test_an_expiry_in_the_past_from_the_app_is_refused() -> None:
    error = refusal(app_post(expires_in=-1))
    assert (error.status, error.code) == (403, "AccessDenied")
    assert error.message.endswith("Policy expired.")


# -- conditions the app does not use -------------------------------------------------------


def test_key_with_filename_is_checked_after_the_substitution() -> None:
    fields = signed(
        [{"bucket": BUCKET}, ["starts-with", "$key", "user/"], ["eq", "$key", "user/a.csv"]],
        {"key": "user/${filename}"},
    )
    ok = checker().check(fields, bucket=BUCKET, filename="a.csv", size=3)
    assert ok.key == "user/a.csv"
    with pytest.raises(S3Error, match=r'\["eq", "\$key", "user/a.csv"\]'):
        checker().check(fields, bucket=BUCKET, filename="b.csv", size=3)


def test_starts_with_and_the_empty_prefix() -> None:
    conditions = [
        ["starts-with", "$key", "user/"],
        ["starts-with", "$x-amz-meta-tag", ""],
        ["starts-with", "$Content-Type", "image/"],
        ["content-length-range", "1", "10"],
    ]
    fields = {"key": "user/x.jpg", "x-amz-meta-tag": "anything", "content-type": "image/jpeg"}
    ok = checker().check(signed(conditions, fields), bucket=BUCKET, filename=None, size=10)
    assert ok.sizes == (SizeRange(1, 10),)
    other = signed(conditions, {**fields, "key": "admin/x.jpg"})
    assert refusal(other).code == "AccessDenied"
    text = signed(conditions, {**fields, "content-type": "text/html"})
    assert "starts-with" in refusal(text).message


@pytest.mark.parametrize(
    ("conditions", "fields", "expiration", "message"),
    [
        ([{"key": "k", "acl": "private"}], {"key": "k"}, "2031-01-01T00:00:00Z", "Simple-Cond"),
        ([["ends-with", "$key", "k"]], {"key": "k"}, "2031-01-01T00:00:00Z", "operator"),
        ([["eq", "key", "k"]], {"key": "k"}, "2031-01-01T00:00:00Z", "must start with '$'"),
        ([["content-length-range", "a", 3]], {"key": "k"}, "2031-01-01T00:00:00Z", "range"),
        ([{"key": "k"}], {"key": "k"}, None, "Policy missing expiration."),
        ([{"key": "k"}], {"key": "k"}, "next tuesday", "Invalid 'expiration' value"),
    ],
)
def test_a_malformed_policy_is_an_invalid_policy_document(
    conditions: list[Any], fields: dict[str, str], expiration: str | None, message: str
) -> None:
    error = refusal(signed(conditions, fields, expiration=expiration))
    assert (error.status, error.code) == (400, "InvalidPolicyDocument")
    assert message in error.message


def test_a_signed_policy_that_is_not_json_is_an_invalid_policy_document() -> None:
    fields = signed([], {"key": "k"}, policy=base64.b64encode(b"{not json").decode())
    error = refusal(fields)
    assert (error.status, error.code, error.message) == (
        400,
        "InvalidPolicyDocument",
        "Invalid Policy: Invalid JSON.",
    )


def test_the_error_is_s3s_xml() -> None:
    error = refusal(app_post(), size=MAX + 5)
    root = ET.fromstring(error.xml("REQ1", "HOST1"))
    assert root.tag == "Error"
    assert {child.tag: child.text for child in root} == {
        "Code": "EntityTooLarge",
        "Message": "Your proposed upload exceeds the maximum allowed size",
        "ProposedSize": str(MAX + 5),
        "MaxSizeAllowed": str(MAX),
        "RequestId": "REQ1",
        "HostId": "HOST1",
    }


@pytest.mark.parametrize(
    ("path", "bucket"),
    [("/b", "b"), ("/b/", "b"), ("/", None), ("", None), ("/b/key.csv", None), ("/b//", None)],
)
def test_path_bucket(path: str, bucket: str | None) -> None:
    assert path_bucket(path) == bucket


# -- the middleware, in-process ------------------------------------------------------------

BOUNDARY = "----emulatorboundary7MA4YWxkTrZu0gW"


def multipart(
    fields: Fields, file: bytes, *, after: Fields | None = None, filename: str = "p.csv"
) -> bytes:
    out = io.BytesIO()
    for name, value in fields:
        out.write(f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode())
        out.write(value.encode() + b"\r\n")
    out.write(
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: text/csv\r\n\r\n".encode()
    )
    out.write(file + b"\r\n")
    for name, value in after or []:
        out.write(f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode())
        out.write(value.encode() + b"\r\n")
    out.write(f"--{BOUNDARY}--\r\n".encode())
    return out.getvalue()


class CountingStream(io.BytesIO):
    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.taken = 0

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        self.taken += len(data)
        return data


class Inner:
    """moto's place: records what reaches it."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.calls = 0

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        self.calls += 1
        length = int(environ.get("CONTENT_LENGTH") or 0)
        self.bodies.append(environ["wsgi.input"].read(length))
        start_response("204 No Content", [])
        return [b""]


class FakeBuckets:
    def __init__(self, *names: str) -> None:
        self.names = set(names)

    def bucket_of(self, environ: dict[str, Any]) -> str | None:
        return path_bucket(environ.get("PATH_INFO", ""))

    def exists(self, bucket: str) -> bool:
        return bucket in self.names

    def region(self, bucket: str) -> str | None:
        return REGION

    def cors_headers(self, bucket: str, origin: str) -> list[tuple[str, str]]:
        return [("Access-Control-Allow-Origin", origin)]


def call(
    body: bytes,
    *,
    path: str = f"/{BUCKET}",
    method: str = "POST",
    content_type: str = f"multipart/form-data; boundary={BOUNDARY}",
    content_length: int | None = -1,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes, Inner, CountingStream]:
    inner = Inner()
    middleware = PostPolicyMiddleware(inner, checker(), FakeBuckets(BUCKET))  # type: ignore[arg-type]
    stream = CountingStream(body)
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "CONTENT_TYPE": content_type,
        "wsgi.input": stream,
        **(headers or {}),
    }
    if content_length is not None:
        environ["CONTENT_LENGTH"] = str(len(body) if content_length < 0 else content_length)
    answer: dict[str, Any] = {}

    def start_response(status: str, response_headers: list[tuple[str, str]]) -> None:
        answer["status"] = int(status.split(maxsplit=1)[0])
        answer["headers"] = dict(response_headers)

    out = b"".join(middleware(environ, start_response))  # type: ignore[arg-type]
    return answer["status"], answer["headers"], out, inner, stream


def code_of(body: bytes) -> str:
    return ET.fromstring(body).findtext("Code") or ""


def test_a_good_upload_reaches_moto_byte_for_byte() -> None:
    body = multipart(app_post(), b"S. No.,Product Name\n1,Mug\n")
    status, _, _, inner, _ = call(body)
    assert status == 204
    assert inner.bodies == [body]


def test_fields_after_the_file_are_not_checked_and_still_reach_moto() -> None:
    body = multipart(app_post(), b"a,b\n", after=[("x-amz-meta-late", "1")])
    status, _, _, inner, _ = call(body)
    assert status == 204 and inner.bodies == [body]


@pytest.mark.parametrize(
    ("method", "path", "content_type"),
    [
        ("GET", f"/{BUCKET}", ""),
        ("POST", f"/{BUCKET}", "application/xml"),  # DeleteObjects
        ("POST", f"/{BUCKET}/key.csv", f"multipart/form-data; boundary={BOUNDARY}"),
        ("POST", "/no-such-bucket", f"multipart/form-data; boundary={BOUNDARY}"),
        ("POST", "/moto-api/reset", f"multipart/form-data; boundary={BOUNDARY}"),
    ],
)
def test_other_requests_pass_through_untouched(method: str, path: str, content_type: str) -> None:
    status, _, _, inner, stream = call(
        b"anything", method=method, path=path, content_type=content_type
    )
    assert status == 204 and inner.bodies == [b"anything"]
    assert stream.taken == len(b"anything")  # read by moto's stand-in only


def test_a_refusal_is_s3s_xml_and_never_reaches_moto() -> None:
    fields = replaced(app_post(), "key", "incoming/other.csv")
    status, headers, body, inner, _ = call(multipart(fields, b"a\n"))
    assert (status, code_of(body)) == (403, "AccessDenied")
    assert headers["Content-Type"] == "application/xml"
    assert inner.calls == 0


def test_a_refusal_carries_the_buckets_cors_headers_for_a_page() -> None:
    fields = replaced(app_post(), "Content-Type", "image/png")
    _, headers, _, _, _ = call(
        multipart(fields, b"\x89PNG"), headers={"HTTP_ORIGIN": "http://127.0.0.1:8000"}
    )
    assert headers["Access-Control-Allow-Origin"] == "http://127.0.0.1:8000"


def test_a_body_that_cannot_fit_is_refused_before_its_file_is_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(post_policy, "DRAIN_LIMIT", 0)
    body = multipart(app_post(), b"x" * (MAX + 2 * post_policy.MARGIN))
    status, _, out, inner, stream = call(body)
    assert (status, code_of(out)) == (400, "EntityTooLarge")
    assert ET.fromstring(out).findtext("ProposedSize") == str(MAX + 2 * post_policy.MARGIN)
    assert stream.taken <= post_policy.CHUNK  # the fields and the file's first bytes at most
    assert inner.calls == 0


def test_a_content_length_that_claims_too_much_is_refused_early(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(post_policy, "DRAIN_LIMIT", 0)
    body = multipart(app_post(), b"a\n")
    status, _, out, _, _ = call(body, content_length=2 * MAX)
    assert (status, code_of(out)) == (400, "EntityTooLarge")


def test_a_file_that_grows_past_the_cap_is_refused_as_it_does() -> None:
    conditions = [{"bucket": BUCKET}, {"key": "k"}, ["content-length-range", 1, 100]]
    status, _, out, inner, _ = call(multipart(signed(conditions, {"key": "k"}), b"x" * 1000))
    assert (status, code_of(out)) == (400, "EntityTooLarge")
    assert ET.fromstring(out).findtext("MaxSizeAllowed") == "100"
    assert inner.calls == 0


def test_fields_before_the_file_are_held_to_20_kib() -> None:
    fields = [("x-ignore-padding", "p" * 30_000), *app_post()]
    status, _, out, _, _ = call(multipart(fields, b"a\n"))
    assert (status, code_of(out)) == (400, "MaxPostPreDataLengthExceeded")


def test_no_content_length_is_411() -> None:
    status, _, out, inner, _ = call(multipart(app_post(), b"a\n"), content_length=None)
    assert (status, code_of(out)) == (411, "MissingContentLength")
    assert inner.calls == 0


@pytest.mark.parametrize(
    "body",
    [b"", b"not multipart at all", f"--{BOUNDARY}\r\nContent-Disposition: form-data".encode()],
)
def test_a_body_that_is_not_multipart_is_malformed(body: bytes) -> None:
    status, _, out, _, _ = call(body)
    assert (status, code_of(out)) == (400, "MalformedPOSTRequest")


def test_a_boundary_missing_from_the_header_is_malformed() -> None:
    status, _, out, _, _ = call(multipart(app_post(), b"a"), content_type="multipart/form-data")
    assert (status, code_of(out)) == (400, "MalformedPOSTRequest")


def test_a_form_without_a_file_is_refused() -> None:
    fields = app_post()
    body = (
        b"".join(
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
            for k, v in fields
        )
        + f"--{BOUNDARY}--\r\n".encode()
    )
    status, _, out, _, _ = call(body)
    assert (status, code_of(out)) == (400, "InvalidArgument")
    assert "exactly one file" in (ET.fromstring(out).findtext("Message") or "")
