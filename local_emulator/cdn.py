"""The CDN in front of a bucket, locally: its distribution in moto, and its stand-in.

A template's `AWS::CloudFront::Distribution` is created in moto (`distribution_config`
turns CloudFormation's shape into CreateDistribution's), so that its id, ARN and domain
resolve as on AWS and it can be listed or sent invalidations. Its domain does not resolve
locally, so the storage endpoint stands in for it: `StorageAccess` is the WSGI layer in
front of moto's S3 that decides what a request without credentials may do.

moto itself serves anyone: it lists a bucket and stores an object for a request without
credentials, and reads an object unless its ACL is private. S3 refuses all of that on a
private bucket (AccessDenied). Here a request without credentials (no `Authorization`
header, no presigned query) is refused, except:

- a GET or HEAD of an object in a bucket a distribution fronts, when the bucket's policy
  lets that distribution read it (`s3:GetObject` by `cloudfront.amazonaws.com` with
  `aws:SourceArn` the distribution's ARN, over HTTPS as CloudFront fetches): it goes on to
  moto signed with the emulator's credentials, as the distribution's Origin Access Control
  signs its requests to S3 (a key that is not there is a 403 too, as S3 answers a reader
  without `s3:ListBucket`);
- a browser POST upload (the POST policy middleware behind this one checks it) and a CORS
  preflight (OPTIONS; the door in front, `storage_doors.py`, answers those and hides
  moto's `/moto-api`).

A read the distribution serves answers a viewer's CORS request (one with an `Origin`) by the
distribution's response headers policy (`CdnCors`, its CorsConfig), not by the bucket's CORS
rules: CloudFront forwards no `Origin` to S3 under a cache policy that forwards no header, and
adds the policy's `Access-Control-*` headers to its own answer. The door in front applies them
(`CDN_CORS`).

A request with credentials has had its signature checked before it gets here
(`sigv4_check.py`).

So an output image is at `<storage endpoint>/<outputs bucket>/<key>` for as long as the
emulator runs, and an uploaded CSV or an output CSV is not. What the stand-in leaves out:
HTTPS (it is plain HTTP), the edge cache (each GET reads the bucket), an invalidation's
effect (there is nothing cached to forget).
"""

from __future__ import annotations

import base64
import secrets
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qsl, quote

from local_emulator.bucket_policy import Request, allows
from local_emulator.post_policy import S3Error, access_denied

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

CLOUDFRONT = "cloudfront.amazonaws.com"
# environ key: the CORS headers of the distribution's answer (storage_doors.py applies them)
CDN_CORS = "local_emulator.cdn_cors"
_SIGNATURE_PARAMETERS = {"x-amz-signature", "signature", "x-amz-credential", "awsaccesskeyid"}
_READS = {"GET", "HEAD"}


# -- CloudFormation -> CreateDistribution ------------------------------------------------
def _quantity(items: Iterable[Any]) -> dict[str, Any]:
    listed = list(items)
    return {"Quantity": len(listed), "Items": listed} if listed else {"Quantity": 0}


def _behaviour(cfn: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in cfn.items() if k not in {"AllowedMethods", "CachedMethods"}}
    allowed = cfn.get("AllowedMethods", ["GET", "HEAD"])
    cached = cfn.get("CachedMethods", ["GET", "HEAD"])
    out["AllowedMethods"] = {**_quantity(allowed), "CachedMethods": _quantity(cached)}
    for name in ("TrustedSigners", "TrustedKeyGroups"):
        if name in cfn:
            out[name] = {"Enabled": bool(cfn[name]), **_quantity(cfn[name])}
    for name in ("LambdaFunctionAssociations", "FunctionAssociations"):
        if name in cfn:
            out[name] = _quantity(cfn[name])
    for name in ("Compress", "SmoothStreaming"):
        if name in out:
            out[name] = str(out[name]).lower() == "true"
    return out


def _origin(cfn: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in cfn.items() if k != "OriginCustomHeaders"}
    if "OriginCustomHeaders" in cfn:
        out["CustomHeaders"] = _quantity(cfn["OriginCustomHeaders"])
    custom = cfn.get("CustomOriginConfig")
    if custom is not None:
        config = {k: v for k, v in custom.items() if k != "OriginSSLProtocols"}
        if "OriginSSLProtocols" in custom:
            config["OriginSslProtocols"] = _quantity(custom["OriginSSLProtocols"])
        out["CustomOriginConfig"] = config
    return out


def distribution_config(cfn: Mapping[str, Any], caller_reference: str) -> dict[str, Any]:
    """An `AWS::CloudFront::Distribution`'s resolved `DistributionConfig` as CreateDistribution
    takes it (lists become `{Quantity, Items}`, a few names differ)."""
    renamed = {"IPV6Enabled", "Origins", "DefaultCacheBehavior", "CacheBehaviors", "Aliases"}
    renamed |= {"CustomErrorResponses", "Logging", "Restrictions", "CNAMEs"}
    out: dict[str, Any] = {k: v for k, v in cfn.items() if k not in renamed}
    out["CallerReference"] = caller_reference
    out.setdefault("Comment", "")
    out["Enabled"] = str(cfn.get("Enabled", True)).lower() == "true"
    if "IPV6Enabled" in cfn:
        out["IsIPV6Enabled"] = str(cfn["IPV6Enabled"]).lower() == "true"
    out["Origins"] = _quantity(_origin(o) for o in cfn.get("Origins", []))
    out["DefaultCacheBehavior"] = _behaviour(cfn["DefaultCacheBehavior"])
    if "CacheBehaviors" in cfn:
        out["CacheBehaviors"] = _quantity(_behaviour(b) for b in cfn["CacheBehaviors"])
    aliases = list(cfn.get("Aliases", [])) + list(cfn.get("CNAMEs", []))
    if aliases:
        out["Aliases"] = _quantity(aliases)
    if "CustomErrorResponses" in cfn:
        out["CustomErrorResponses"] = _quantity(cfn["CustomErrorResponses"])
    if "Logging" in cfn:
        out["Logging"] = {"Enabled": True, "IncludeCookies": False, "Prefix": "", **cfn["Logging"]}
    geo = (cfn.get("Restrictions") or {}).get("GeoRestriction")
    if geo is not None:
        out["Restrictions"] = {
            "GeoRestriction": {
                "RestrictionType": geo.get("RestrictionType", "none"),
                **_quantity(geo.get("Locations", [])),
            }
        }
    return out


def origin_bucket(domain_name: str, buckets: Iterable[str]) -> str | None:
    """The bucket an S3 origin's domain names (`<bucket>.s3[.<region>].amazonaws.com`)."""
    for bucket in buckets:
        if domain_name == f"{bucket}.s3.amazonaws.com" or (
            domain_name.startswith(f"{bucket}.s3.") and domain_name.endswith(".amazonaws.com")
        ):
            return bucket
    return None


@dataclass(frozen=True)
class CdnCors:
    """A response headers policy's CorsConfig, as CloudFront answers a viewer's CORS request
    (a request with an `Origin`) with it."""

    allow_origins: tuple[str, ...]
    allow_methods: tuple[str, ...]
    expose_headers: tuple[str, ...] = ()
    allow_credentials: bool = False

    def headers(self, origin: str, method: str) -> list[tuple[str, str]]:
        """The `Access-Control-*` headers of the answer to `method` from `origin`; none when
        the request is not a CORS request or the policy does not allow it."""
        if not origin or not ({method.upper(), "ALL"} & set(self.allow_methods)):
            return []
        if "*" in self.allow_origins:
            allowed = "*"
        elif origin in self.allow_origins:
            allowed = origin
        else:
            return []
        out = [("Access-Control-Allow-Origin", allowed)]
        if self.allow_credentials:
            out.append(("Access-Control-Allow-Credentials", "true"))
        if self.expose_headers:
            out.append(("Access-Control-Expose-Headers", ", ".join(self.expose_headers)))
        return out


def cdn_cors(config: Mapping[str, Any]) -> CdnCors | None:
    """An `AWS::CloudFront::ResponseHeadersPolicy`'s resolved ResponseHeadersPolicyConfig:
    its CorsConfig (None without one)."""
    cors = config.get("CorsConfig")
    if not cors:
        return None

    def items(name: str) -> tuple[str, ...]:
        return tuple(str(item) for item in (cors.get(name) or {}).get("Items", []))

    return CdnCors(
        allow_origins=items("AccessControlAllowOrigins"),
        allow_methods=tuple(m.upper() for m in items("AccessControlAllowMethods")),
        expose_headers=items("AccessControlExposeHeaders"),
        allow_credentials=str(cors.get("AccessControlAllowCredentials", False)).lower() == "true",
    )


# -- the stand-in ----------------------------------------------------------------------
@dataclass(frozen=True)
class Fronted:
    """A bucket a distribution fronts, the policy its reads are checked against, and the
    CORS of the distribution's response headers policy (None: it answers no CORS request)."""

    bucket: str
    distribution_arn: str
    account_id: str
    policy: Mapping[str, Any] | None
    cors: CdnCors | None = None


class Objects(Protocol):
    """Where a request points, as the storage behind routes it."""

    def object_of(self, environ: WSGIEnvironment) -> tuple[str, str] | None:
        """(bucket, key) of an object request (path-style or virtual host), else None."""
        ...


class Signer(Protocol):
    def __call__(self, environ: WSGIEnvironment) -> None:
        """Adds credentials to the request, as the distribution's OAC signs its fetches."""
        ...


def anonymous(environ: WSGIEnvironment) -> bool:
    """No credentials: no Authorization header, no presigned query."""
    if environ.get("HTTP_AUTHORIZATION"):
        return False
    query = str(environ.get("QUERY_STRING", ""))
    names = {name.lower() for name, _ in parse_qsl(query, keep_blank_values=True)}
    return not names & _SIGNATURE_PARAMETERS


class StorageAccess:
    """WSGI middleware: requests without credentials refused as S3 refuses them on private
    buckets, but reads a fronting distribution may make (see the module's docstring)."""

    def __init__(self, app: WSGIApplication, objects: Objects, sign: Signer) -> None:
        self._app = app
        self._objects = objects
        self._sign = sign
        self._fronted: dict[str, Fronted] = {}
        self._lock = threading.Lock()

    def front(self, fronted: Fronted) -> None:
        """Serve `fronted.bucket` as its distribution would (reads its policy allows)."""
        with self._lock:
            self._fronted[fronted.bucket] = fronted

    def forget(self) -> None:
        with self._lock:
            self._fronted.clear()

    def fronted(self, bucket: str) -> Fronted | None:
        with self._lock:
            return self._fronted.get(bucket)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        method = str(environ.get("REQUEST_METHOD", "GET")).upper()
        if method == "OPTIONS" or not anonymous(environ):
            return self._app(environ, start_response)
        if method == "POST" and str(environ.get("CONTENT_TYPE", "")).lower().startswith(
            "multipart/form-data"
        ):
            return self._app(environ, start_response)  # a browser upload: its policy decides
        target = self._objects.object_of(environ) if method in _READS else None
        fronted = self.fronted(target[0]) if target is not None else None
        head = method == "HEAD"
        if target is None or fronted is None:
            return _refuse(start_response, access_denied(), head=head)
        # the distribution answers: its response headers policy's CORS, not the bucket's
        origin = str(environ.get("HTTP_ORIGIN", ""))
        environ[CDN_CORS] = fronted.cors.headers(origin, method) if fronted.cors else []
        if not self._cdn_may(fronted, "s3:GetObject", f"{_arn(fronted.bucket)}/{target[1]}"):
            return _refuse(start_response, access_denied(), head=head)
        environ["QUERY_STRING"] = ""  # the cache policy forwards no query string (?acl...)
        self._sign(environ)
        if self._cdn_may(fronted, "s3:ListBucket", _arn(fronted.bucket)):
            return self._app(environ, start_response)
        # without s3:ListBucket S3 does not tell a missing key from a forbidden one: 403
        answered: list[tuple[str, list[tuple[str, str]]]] = []

        def hold(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            answered.append((status, headers))
            return lambda data: None

        body = self._app(environ, hold)
        if not answered:  # an app that starts its answer while it is iterated
            body = list(body)
        if answered[0][0].startswith("404"):
            close = getattr(body, "close", None)
            if close is not None:
                close()
            return _refuse(start_response, access_denied(), head=head)
        status, headers = answered[0]
        start_response(status, headers)
        return body

    @staticmethod
    def _cdn_may(fronted: Fronted, action: str, resource: str) -> bool:
        request = Request(
            action=action,
            resource=resource,
            service=CLOUDFRONT,
            keys={
                "aws:SourceArn": fronted.distribution_arn,
                "aws:SourceAccount": fronted.account_id,
                "aws:SecureTransport": "true",  # CloudFront fetches from S3 over HTTPS
            },
        )
        return allows(fronted.policy, request)


def _arn(bucket: str) -> str:
    return f"arn:aws:s3:::{bucket}"


def _refuse(start_response: StartResponse, error: S3Error, *, head: bool) -> list[bytes]:
    request_id = secrets.token_hex(8).upper()
    body = error.xml(request_id, base64.b64encode(secrets.token_bytes(48)).decode())
    start_response(
        f"{error.status} {HTTPStatus(error.status).phrase}",
        [
            ("Content-Type", "application/xml"),
            ("Content-Length", str(len(body))),
            ("x-amz-request-id", request_id),
        ],
    )
    return [] if head else [body]


class SigV4Signer:
    """Signs a WSGI request in place with SigV4 (as an OAC signs CloudFront's fetches)."""

    def __init__(self, access_key: str, secret_key: str, region: str) -> None:
        self._access_key = access_key
        self._secret_key = secret_key
        self._region = region

    def __call__(self, environ: WSGIEnvironment) -> None:
        from botocore.auth import S3SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials

        host = str(environ.get("HTTP_HOST") or environ.get("SERVER_NAME", "localhost"))
        scheme = str(environ.get("wsgi.url_scheme", "http"))
        path = quote(str(environ.get("PATH_INFO", "")), safe="/~")
        query = str(environ.get("QUERY_STRING", ""))
        url = f"{scheme}://{host}{path}" + (f"?{query}" if query else "")
        request = AWSRequest(method=str(environ["REQUEST_METHOD"]), url=url, data=b"")
        credentials = Credentials(self._access_key, self._secret_key)
        S3SigV4Auth(credentials, "s3", self._region).add_auth(request)
        for name, value in request.headers.items():
            if name.lower() in {"authorization", "x-amz-date", "x-amz-content-sha256"}:
                environ["HTTP_" + name.upper().replace("-", "_")] = str(value)
