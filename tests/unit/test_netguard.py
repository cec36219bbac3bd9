"""The address guard's pure decisions: URL syntax, IP spellings, forbidden ranges.

Nothing here opens a socket: every address below is only classified.
"""

from __future__ import annotations

import ipaddress

import pytest
from chalicelib.domain.netguard import (
    check_url,
    check_url_syntax,
    decide,
    forbidden_reason,
    is_forbidden_address,
    parse_ip_literal,
)

FORBIDDEN = [
    # IPv4: loopback, "this network", RFC 1918, CGNAT, link-local and cloud metadata
    ("127.0.0.1", "loopback"),
    ("127.255.255.254", "loopback"),
    ("0.0.0.0", "this network"),
    ("0.1.2.3", "this network"),
    ("10.0.0.1", "private"),
    ("10.255.255.255", "private"),
    ("172.16.0.1", "private"),
    ("172.31.255.255", "private"),
    ("192.168.1.1", "private"),
    ("100.64.0.1", "carrier-grade NAT"),
    ("100.127.255.255", "carrier-grade NAT"),
    ("169.254.169.254", "link-local"),
    ("169.254.0.1", "link-local"),
    # multicast, reserved, broadcast, documentation, benchmarking, IETF
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "broadcast"),
    ("192.0.2.10", "documentation"),
    ("198.51.100.7", "documentation"),
    ("203.0.113.99", "documentation"),
    ("198.18.0.1", "benchmarking"),
    ("198.19.255.255", "benchmarking"),
    ("192.0.0.8", "IETF"),
    ("192.0.0.170", "IETF"),
    ("192.88.99.1", "6to4 relay"),
    # IPv6 basics
    ("::1", "loopback"),
    ("::", "unspecified"),
    ("fe80::1", "link-local"),
    ("fc00::1", "unique-local"),
    ("fd12:3456:789a::1", "unique-local"),
    ("fec0::1", "site-local"),
    ("ff02::1", "multicast"),
    ("ff05::2", "multicast"),
    ("2001:db8::1", "documentation"),
    ("3fff::1", "documentation"),
    ("100::1", "discard"),
    ("2001:2::1", "IETF"),
    ("4000::1", "reserved"),
    # IPv4 hidden in IPv6: mapped, compatible, translated, NAT64, 6to4, Teredo
    ("::ffff:127.0.0.1", "IPv4-mapped embedding 127.0.0.1"),
    ("::ffff:10.0.0.1", "IPv4-mapped embedding 10.0.0.1"),
    ("::ffff:169.254.169.254", "IPv4-mapped embedding 169.254.169.254"),
    ("::ffff:7f00:1", "IPv4-mapped embedding 127.0.0.1"),
    ("::127.0.0.1", "IPv4-compatible"),
    ("::8.8.8.8", "IPv4-compatible"),
    ("::ffff:0:8.8.8.8", "IPv4-translated"),
    ("64:ff9b::7f00:1", "NAT64 embedding 127.0.0.1"),
    ("64:ff9b::a9fe:a9fe", "NAT64 embedding 169.254.169.254"),
    ("64:ff9b:1::808:808", "local-use NAT64"),
    ("2002:7f00:1::", "6to4 embedding 127.0.0.1"),
    ("2002:a00:1::1", "6to4 embedding 10.0.0.1"),
    ("2002:a9fe:a9fe::1", "6to4 embedding 169.254.169.254"),
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo client embedding 192.0.2.45"),
    ("2001:0:7f00:1::1", "Teredo server embedding 127.0.0.1"),
    ("fe80::1%eth0", "zone"),
]

ALLOWED = [
    "8.8.8.8",
    "1.1.1.1",
    "93.184.215.14",
    "52.95.110.1",
    "100.63.255.255",  # just below CGNAT
    "100.128.0.0",  # just above CGNAT
    "172.15.255.255",  # just below 172.16/12
    "172.32.0.0",  # just above 172.16/12
    "2606:4700::1111",
    "2a00:1450:4001:80b::200e",
    "::ffff:8.8.8.8",
    "64:ff9b::808:808",
    "2002:808:808::1",
    "2001:0:4136:e378:8000:63bf:f7f7:f7f7",  # Teredo between public addresses
]


@pytest.mark.parametrize(("text", "why"), FORBIDDEN)
def test_forbidden_addresses_are_refused_with_a_reason(text: str, why: str) -> None:
    ip = ipaddress.ip_address(text)
    reason = forbidden_reason(ip)
    assert reason is not None
    assert why.lower() in reason.lower()
    assert is_forbidden_address(ip)
    refusal = decide(ip, allow_private=False)
    assert refusal is not None and str(ip) in refusal


@pytest.mark.parametrize("text", [t for t, _ in FORBIDDEN])
def test_allow_private_allows_every_address(text: str) -> None:
    assert decide(ipaddress.ip_address(text), allow_private=True) is None


@pytest.mark.parametrize("text", ALLOWED)
def test_public_addresses_are_allowed(text: str) -> None:
    ip = ipaddress.ip_address(text)
    assert forbidden_reason(ip) is None
    assert not is_forbidden_address(ip)
    assert decide(ip, allow_private=False) is None


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("0X7F.0.0.1", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("0177.1", "127.0.0.1"),
        ("017700000001", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("127.0.1", "127.0.0.1"),
        ("10.1", "10.0.0.1"),
        ("169.254.43518", "169.254.169.254"),
        ("0xa9.0xfe.0xa9.0xfe", "169.254.169.254"),
        ("0", "0.0.0.0"),
        ("127.0.0.1.", "127.0.0.1"),
        ("[::1]", "::1"),
        ("::1", "::1"),
        ("[::ffff:127.0.0.1]", "::ffff:7f00:1"),
        ("[2606:4700::1111]", "2606:4700::1111"),
        ("8.8.8.8", "8.8.8.8"),
    ],
)
def test_ip_literals_in_every_spelling(host: str, expected: str) -> None:
    assert parse_ip_literal(host) == ipaddress.ip_address(expected)


@pytest.mark.parametrize(
    "host",
    [
        "example.com",
        "images.example.test",
        "localhost",
        "1.2.3.4.5",
        "256.0.0.1",
        "1.256.0.0.1",
        "4294967296",
        "08.0.0.1",
        "0x1g.0.0.1",
        "1..2.3",
        "",
        "[127.0.0.1]",
        "[not-v6]",
        "1e3",
    ],
)
def test_names_and_malformed_numbers_are_not_literals(host: str) -> None:
    assert parse_ip_literal(host) is None


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/a.jpg",
        "https://example.com/a.jpg?x=1#frag",
        "HTTPS://Example.COM:8443/path",
        "http://127.0.0.1:8000/a.jpg",
        "http://[::1]:8000/a.jpg",
        "http://images.example.test./a.jpg",
        "http://bücher.example/a.jpg",
        "http://host:/a.jpg",
    ],
)
def test_well_formed_urls_pass_the_syntax_check(url: str) -> None:
    assert check_url_syntax(url) is None


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("file:///etc/passwd", "scheme 'file'"),
        ("ftp://example.com/a.jpg", "scheme 'ftp'"),
        ("gopher://example.com:70/_x", "scheme 'gopher'"),
        ("data:image/png;base64,iVBORw0KGgo=", "scheme 'data'"),
        ("javascript:alert(1)", "scheme 'javascript'"),
        ("dict://127.0.0.1:11211/", "scheme 'dict'"),
        ("example.com/a.jpg", "no scheme"),
        ("//example.com/a.jpg", "no scheme"),
        ("", "empty"),
        ("http://user:pass@example.com/a.jpg", "credentials"),
        ("http://user@example.com/a.jpg", "credentials"),
        ("http://example.com@127.0.0.1/", "credentials"),
        ("http:///a.jpg", "no host"),
        ("http://:80/a.jpg", "no host"),
        ("http:example.com", "no host"),
        ("http://exa mple.com/a.jpg", "whitespace"),
        ("http://example.com/a b.jpg", "whitespace"),
        (" http://example.com/a.jpg", "whitespace"),
        ("http://example.com/a.jpg\n", "whitespace"),
        ("http://example.com/\x00.jpg", "control"),
        ("http://example.com:99999/", "port"),
        ("http://example.com:0/", "port"),
        ("http://example.com:-1/", "port"),
        ("http://example.com:8o/", "port"),
        ("http://[::1/", "malformed"),
        ("http://[fe80::1%25eth0]/", "zone"),
        ("http://a..b/", "empty label"),
        ("http://.example.com/", "empty label"),
        ("http://exa%6dple.com/", "malformed"),
        ("http://example.com\\@evil.test/", "credentials"),
        ("http://" + "a" * 9000, "longer"),
    ],
)
def test_malformed_or_foreign_urls_are_refused(url: str, why: str) -> None:
    problem = check_url_syntax(url)
    assert problem is not None
    assert why.lower() in problem.lower()


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/a.jpg",
        "http://2130706433/a.jpg",
        "http://0x7f.1/a.jpg",
        "http://0177.0.0.1/a.jpg",
        "http://127.1/a.jpg",
        "http://10.1/a.jpg",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/a.jpg",
        "http://[::ffff:127.0.0.1]/a.jpg",
        "http://[::ffff:a00:1]/a.jpg",
        "http://[64:ff9b::7f00:1]/a.jpg",
        "http://[2002:7f00:1::]/a.jpg",
        "http://localhost/a.jpg",
        "http://LOCALHOST./a.jpg",
        "http://app.localhost/a.jpg",
    ],
)
def test_check_url_refuses_literal_private_addresses_and_local_names(url: str) -> None:
    assert check_url(url, allow_private=False) is not None
    assert check_url(url, allow_private=True) is None


@pytest.mark.parametrize(
    "url",
    ["http://8.8.8.8/a.jpg", "https://[2606:4700::1111]/a.jpg", "https://example.com/a.jpg"],
)
def test_check_url_lets_public_literals_and_names_through(url: str) -> None:
    assert check_url(url, allow_private=False) is None


def test_check_url_still_checks_syntax_when_private_hosts_are_allowed() -> None:
    problem = check_url("file:///etc/passwd", allow_private=True)
    assert problem is not None and "file" in problem


FAST_PATH_PROBES = [
    "https://cdn.test/a.jpg",
    "HTTP://CDN.TEST/A.JPG",
    "https://cdn.test",
    "https://cdn.test.",
    "https://cdn.test:443/a?b=c&d=e#f",
    "https://cdn.test:65535/",
    "https://cdn.test:65536/",
    "https://cdn.test:0/",
    "https://cdn.test:00/",
    "https://cdn.test:/",
    "https://a..b/",
    "https://.a/",
    "https://-/",
    "https://a.test/\\x",
    "https://a.test\\x/",
    "https://u:p@a.test/",
    "https://a.test/@x",
    "https://a.test?@x",
    "https://a.test#@x",
    "https://a.test/ x",
    "https://a.test/\x7f",
    "https://a.test/é",
    "https://é.test/",
    "https://a_b.test/",
    "https://127.0.0.1/",
    "https://[::1]/",
    "ftp://a.test/",
    "https:/a.test/",
    "https://" + "a." * 126 + "b/",
    "https://" + "a." * 127 + "b/",
    "https://a.test/" + "x" * 9000,
]


@pytest.mark.parametrize("url", FAST_PATH_PROBES)
def test_the_syntax_fast_path_agrees_with_the_full_check(url: str) -> None:
    from chalicelib.domain import netguard

    full = netguard._check_url_syntax_full(url)
    assert (check_url_syntax(url) is None) == (full is None)
    if netguard._COMMON_URL.fullmatch(url) and full is not None:
        assert check_url_syntax(url) == full  # the regex matched, the extra checks refused
