"""The emulator's bucket policy evaluation (local_emulator/bucket_policy.py): the template's
outputs policy read as S3 reads it for its distribution, and the rules behind that."""

from __future__ import annotations

from typing import Any

import pytest

from local_emulator.bucket_policy import Request, allows, matches

BUCKET = "arn:aws:s3:::outputs-bucket"
DISTRIBUTION = "arn:aws:cloudfront::123456789012:distribution/E2QWRUHEXAMPLE"
POLICY: dict[str, Any] = {  # template.yaml's OutputsBucketPolicy, resolved
    "Version": "2012-10-17",
    "Statement": [
        {
            "Sid": "CdnReadsOutputs",
            "Effect": "Allow",
            "Principal": {"Service": "cloudfront.amazonaws.com"},
            "Action": "s3:GetObject",
            "Resource": f"{BUCKET}/outputs/*",
            "Condition": {"StringEquals": {"AWS:SourceArn": DISTRIBUTION}},
        },
        {
            "Sid": "OutputCsvsAreNotPublic",
            "Effect": "Deny",
            "Principal": {"Service": "cloudfront.amazonaws.com"},
            "Action": "s3:GetObject",
            "Resource": f"{BUCKET}/outputs/*.csv",
        },
        {
            "Sid": "HttpsOnly",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:*",
            "Resource": [BUCKET, f"{BUCKET}/*"],
            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
        },
    ],
}


def cdn_reads(key: str, source: str = DISTRIBUTION, secure: str = "true") -> Request:
    return Request(
        action="s3:GetObject",
        resource=f"{BUCKET}/{key}",
        service="cloudfront.amazonaws.com",
        keys={"aws:SourceArn": source, "aws:SecureTransport": secure},
    )


@pytest.mark.parametrize(
    ("key", "allowed"),
    [
        ("outputs/job/1/0.jpg", True),
        ("outputs/job/1/0.webp", True),
        ("outputs/job/2/3.avif", True),
        ("outputs/job/output.csv", False),  # the Deny wins over the Allow
        ("outputs/job/1/0.CSV", True),  # ARNs match case-sensitively, as S3 keys are
        ("incoming/job.csv", False),  # nothing allows it
        ("elsewhere/outputs/x.jpg", False),
    ],
)
def test_the_outputs_policy_for_its_distribution(key: str, allowed: bool) -> None:
    assert allows(POLICY, cdn_reads(key)) is allowed


def test_only_that_distribution_over_https() -> None:
    key = "outputs/job/1/0.jpg"
    assert not allows(POLICY, cdn_reads(key, source=DISTRIBUTION + "X"))
    assert not allows(POLICY, cdn_reads(key, secure="false"))
    anyone = Request(action="s3:GetObject", resource=f"{BUCKET}/{key}")
    assert not allows(POLICY, anyone)
    listing = Request(
        action="s3:ListBucket",
        resource=BUCKET,
        service="cloudfront.amazonaws.com",
        keys={"aws:SourceArn": DISTRIBUTION, "aws:SecureTransport": "true"},
    )
    assert not allows(POLICY, listing)
    assert not allows(None, cdn_reads(key))


def test_wildcards() -> None:
    assert matches("arn:aws:s3:::b/outputs/*", "arn:aws:s3:::b/outputs/a/b/c.jpg")
    assert matches("arn:aws:s3:::b/outputs/*.csv", "arn:aws:s3:::b/outputs/x/output.csv")
    assert matches("a?c", "abc") and not matches("a?c", "abbc")
    assert matches("s3:get*", "s3:GetObject", ignore_case=True)
    assert not matches("arn:aws:s3:::b/out[1]", "arn:aws:s3:::b/out1")  # no character classes


def test_conditions() -> None:
    base = {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "*"}
    request = Request(action="s3:GetObject", resource="r", keys={"aws:SourceAccount": "1"})

    def allowed(condition: dict[str, Any]) -> bool:
        return allows({"Statement": [{**base, "Condition": condition}]}, request)

    assert allowed({"StringEquals": {"aws:sourceaccount": "1"}})  # keys match in any case
    assert not allowed({"StringEquals": {"aws:SourceAccount": "2"}})
    assert allowed({"StringLike": {"aws:SourceAccount": ["9", "1*"]}})
    assert allowed({"StringNotEquals": {"aws:SourceAccount": "2"}})
    assert not allowed({"StringEquals": {"aws:SourceArn": "x"}})  # absent key
    assert allowed({"StringEqualsIfExists": {"aws:SourceArn": "x"}})
    assert allowed({"StringNotEquals": {"aws:SourceArn": "x"}})  # negated, absent: holds
    assert not allowed({"NumericLessThan": {"aws:SourceAccount": "5"}})  # unread: no Allow


def test_what_cannot_be_read_refuses() -> None:
    request = cdn_reads("outputs/job/1/0.jpg")
    unreadable_deny = {
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:GetObject",
        "Resource": "*",
        "Condition": {"DateGreaterThan": {"aws:CurrentTime": "2020-01-01T00:00:00Z"}},
    }
    assert not allows({"Statement": [*POLICY["Statement"], unreadable_deny]}, request)
    not_principal = {**POLICY["Statement"][0], "NotPrincipal": {"AWS": "x"}}
    assert not allows({"Statement": [not_principal]}, request)
