"""Which URLs and addresses the pipeline may contact. Pure decisions: no sockets, no DNS.

The HTTP adapter applies these twice: to every URL before a request (syntax, literal
addresses), and to every address a hostname resolves to, right before the socket connects
to that very address (so a DNS answer that changes between check and use cannot slip by).
"""

from __future__ import annotations

import ipaddress
import re
import string
import unicodedata
from urllib.parse import SplitResult, urlsplit

type IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

ALLOWED_SCHEMES = frozenset({"http", "https"})
MAX_URL_LENGTH = 8192
_MAX_HOST_LENGTH = 253
_BAD_HOST_CHARS = frozenset(' <>"{}|\\^`%/?#@[]')
_LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})

_V4 = ipaddress.IPv4Network
_V6 = ipaddress.IPv6Network

# Order matters only for the reason given: the most specific range comes first.
_IPV4_RULES: tuple[tuple[ipaddress.IPv4Network, str], ...] = (
    (_V4("0.0.0.0/8"), "'this network' (0.0.0.0/8)"),
    (_V4("10.0.0.0/8"), "private (RFC 1918)"),
    (_V4("100.64.0.0/10"), "carrier-grade NAT (RFC 6598)"),
    (_V4("127.0.0.0/8"), "loopback"),
    (_V4("169.254.0.0/16"), "link-local (cloud metadata)"),
    (_V4("172.16.0.0/12"), "private (RFC 1918)"),
    (_V4("192.0.0.0/24"), "IETF protocol assignment"),
    (_V4("192.0.2.0/24"), "documentation (TEST-NET-1)"),
    (_V4("192.88.99.0/24"), "6to4 relay anycast"),
    (_V4("192.168.0.0/16"), "private (RFC 1918)"),
    (_V4("198.18.0.0/15"), "benchmarking"),
    (_V4("198.51.100.0/24"), "documentation (TEST-NET-2)"),
    (_V4("203.0.113.0/24"), "documentation (TEST-NET-3)"),
    (_V4("224.0.0.0/4"), "multicast"),
    (_V4("255.255.255.255/32"), "broadcast"),
    (_V4("240.0.0.0/4"), "reserved"),
)

_IPV6_LOOPBACK = _V6("::1/128")
_IPV6_UNSPECIFIED = _V6("::/128")
_IPV4_COMPATIBLE = _V6("::/96")
_IPV4_TRANSLATED = _V6("::ffff:0:0:0/96")
_NAT64 = _V6("64:ff9b::/96")
_NAT64_LOCAL = _V6("64:ff9b:1::/48")
_TEREDO = _V6("2001::/32")
_SIX_TO_FOUR = _V6("2002::/16")
_GLOBAL_UNICAST = _V6("2000::/3")

_IPV6_RULES: tuple[tuple[ipaddress.IPv6Network, str], ...] = (
    (_IPV6_LOOPBACK, "loopback"),
    (_IPV6_UNSPECIFIED, "unspecified"),
    (_IPV4_COMPATIBLE, "IPv4-compatible (deprecated)"),
    (_IPV4_TRANSLATED, "IPv4-translated"),
    (_NAT64_LOCAL, "local-use NAT64 (RFC 8215)"),
    (_V6("100::/64"), "discard-only"),
    (_V6("2001:db8::/32"), "documentation"),
    (_V6("2001::/23"), "IETF protocol assignment"),
    (_V6("3fff::/20"), "documentation"),
    (_V6("fc00::/7"), "unique-local"),
    (_V6("fe80::/10"), "link-local"),
    (_V6("fec0::/10"), "site-local"),
    (_V6("ff00::/8"), "multicast"),
)


# The common case, accepted without urlsplit: http(s), a host of ASCII letters, digits and
# hyphens in non-empty dot-separated labels, an optional port without a leading zero, and a
# rest of printable ASCII. Whatever it matches (host length and port range checked besides),
# the full check accepts too; everything else goes to the full check. Saves most of the CSV
# validation time of a 100,000-row file.
_COMMON_URL = re.compile(
    r"https?://(?P<host>[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.?)(?::(?P<port>[1-9][0-9]{0,4}))?"
    r"(?:[/?#][!-~]*)?",
    re.ASCII | re.IGNORECASE,
)


def check_url_syntax(url: str) -> str | None:
    """Why `url` is not an absolute http(s) URL we are willing to request, or None."""
    if len(url) <= MAX_URL_LENGTH and (match := _COMMON_URL.fullmatch(url)):
        port = match.group("port")
        if len(match.group("host")) <= _MAX_HOST_LENGTH and (port is None or int(port) <= 65535):
            return None
    return _check_url_syntax_full(url)


def _check_url_syntax_full(url: str) -> str | None:
    if not url:
        return "URL is empty"
    if len(url) > MAX_URL_LENGTH:
        return f"URL is longer than {MAX_URL_LENGTH} characters"
    if any(ch.isspace() or unicodedata.category(ch) == "Cc" for ch in url):
        return "URL contains whitespace or control characters"
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        return f"URL is malformed: {exc}"
    scheme = parts.scheme.lower()
    if not scheme:
        return "URL has no scheme (only http and https are allowed)"
    if scheme not in ALLOWED_SCHEMES:
        return f"scheme {scheme!r} is not allowed (only http and https)"
    return _check_authority(parts)


def _check_authority(parts: SplitResult) -> str | None:
    netloc = parts.netloc
    if not netloc:
        return "URL has no host"
    if "@" in netloc:
        return "URL must not contain credentials (user:password@)"
    if "\\" in netloc:
        return "URL host contains a backslash"
    try:
        port = parts.port
    except ValueError:
        return "URL has an invalid port"
    if port == 0:
        return "URL has an invalid port"
    host = parts.hostname or ""
    if not host:
        return "URL has no host"
    if netloc.startswith("["):
        if "%" in host:
            return "IPv6 zone identifiers are not allowed in URLs"
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return "URL has a malformed IPv6 address"
        return None
    if len(host) > _MAX_HOST_LENGTH or any(ch in _BAD_HOST_CHARS for ch in host):
        return "URL host is malformed"
    if any(not label for label in host.removesuffix(".").split(".")):
        return "URL host has an empty label"
    return None


def url_host(url: str) -> str:
    """The host of a URL that passed check_url_syntax: lowercased, without brackets."""
    return urlsplit(url).hostname or ""


def url_port(url: str) -> int:
    """The port of a URL that passed check_url_syntax, the scheme's default when absent."""
    parts = urlsplit(url)
    return parts.port or (443 if parts.scheme.lower() == "https" else 80)


def parse_ip_literal(host: str) -> IPAddress | None:
    """The address `host` spells, or None when it is a name.

    Understands bracketed and bare IPv6 and every IPv4 spelling inet_aton accepts:
    `127.0.0.1`, `2130706433`, `0x7f.1`, `0177.0.0.1`, `127.1`, `10.1`.
    """
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if ":" not in host:
            return None
    if ":" in host:
        try:
            return ipaddress.IPv6Address(host)
        except ValueError:
            return None
    return _parse_ipv4_loose(host)


def _parse_ipv4_loose(text: str) -> ipaddress.IPv4Address | None:
    text = text.removesuffix(".")  # one trailing dot is tolerated, as resolvers do
    parts = text.split(".")
    if not text or len(parts) > 4:
        return None
    values: list[int] = []
    for part in parts:
        value = _parse_ipv4_number(part)
        if value is None:
            return None
        values.append(value)
    *leading, last = values
    if any(value > 255 for value in leading):
        return None
    if last >= 256 ** (5 - len(values)):
        return None
    number = last
    for index, value in enumerate(leading):
        number += value << (8 * (3 - index))
    return ipaddress.IPv4Address(number)


def _parse_ipv4_number(part: str) -> int | None:
    if not part or len(part) > 40:
        return None
    if part[:2].lower() == "0x":
        digits = part[2:]
        if not all(ch in string.hexdigits for ch in digits):
            return None
        return int(digits, 16) if digits else 0
    if len(part) > 1 and part[0] == "0":
        digits = part[1:]
        if not all(ch in string.octdigits for ch in digits):
            return None
        return int(digits, 8)
    if not all(ch in string.digits for ch in part):
        return None
    return int(part)


def forbidden_reason(ip: IPAddress) -> str | None:
    """What kind of non-public address `ip` is ("loopback", "private (RFC 1918)", ...),
    or None for an ordinary public address."""
    if isinstance(ip, ipaddress.IPv4Address):
        return _ipv4_reason(ip)
    return _ipv6_reason(ip)


def is_forbidden_address(ip: IPAddress) -> bool:
    """True for every address an image or webhook URL must not reach by default."""
    return forbidden_reason(ip) is not None


def decide(ip: IPAddress, allow_private: bool) -> str | None:
    """Why a connection to `ip` is refused, or None when it may go ahead."""
    if allow_private:
        return None
    reason = forbidden_reason(ip)
    return None if reason is None else f"address {ip} is {reason}"


def check_url(url: str, *, allow_private: bool) -> str | None:
    """Syntax plus what can be told without DNS: a literal address or a local name."""
    problem = check_url_syntax(url)
    if problem or allow_private:
        return problem
    host = url_host(url)
    literal = parse_ip_literal(host)
    if literal is not None:
        return decide(literal, allow_private)
    return local_name_reason(host)


def local_name_reason(host: str) -> str | None:
    """Why `host` names this machine whatever DNS says (`localhost`, `*.localhost`,
    RFC 6761), or None. Such a name is refused without being looked up."""
    name = host.lower().removesuffix(".")
    if name in _LOCAL_NAMES or name.endswith(".localhost"):
        return f"host {host!r} is a loopback name"
    return None


def _ipv4_reason(ip: ipaddress.IPv4Address) -> str | None:
    for network, reason in _IPV4_RULES:
        if ip in network:
            return reason
    if not ip.is_global:  # whatever a future registry adds
        return "not globally routable"
    return None


def _ipv6_reason(ip: ipaddress.IPv6Address) -> str | None:
    if ip.scope_id:
        return "scoped (has a zone identifier)"
    mapped = ip.ipv4_mapped
    if mapped is not None:
        return _embedded("IPv4-mapped", mapped)
    if ip in _NAT64:
        return _embedded("NAT64", ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    if ip in _TEREDO:
        server, client = ip.teredo or (None, None)
        for label, embedded in (("Teredo server", server), ("Teredo client", client)):
            if embedded is not None and (found := _embedded(label, embedded)):
                return found
        return None
    if ip in _SIX_TO_FOUR and ip.sixtofour is not None:
        return _embedded("6to4", ip.sixtofour)
    for network, reason in _IPV6_RULES:
        if ip in network:
            return reason
    if ip not in _GLOBAL_UNICAST:
        return "reserved"
    return None


def _embedded(kind: str, v4: ipaddress.IPv4Address) -> str | None:
    reason = _ipv4_reason(v4)
    return None if reason is None else f"{kind} embedding {v4}, which is {reason}"
