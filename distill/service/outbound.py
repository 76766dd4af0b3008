"""Requests the service sends to addresses a tenant chose (webhooks), kept out of the company's network.

A tenant's URL could name the metadata service, a database on the private network, or a name that
resolves to loopback. So the name is resolved first and every address it resolves to must be a public
one: loopback, private (RFC 1918, unique-local), link-local (which holds the cloud metadata address
169.254.169.254), shared (100.64/10), multicast, reserved and unspecified addresses are refused before
any connection is made, unless an admin allowed the URL's host by name. The request then goes to the
very address that was checked (no second lookup a rebinding DNS server could answer differently), with
the name kept for the Host header and TLS (SNI and certificate checks). Redirects are not followed,
time is bounded, and at most `MAX_RESPONSE_BYTES` of the answer are read.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import httpx

from distill.errors import Problem

TIMEOUT = httpx.Timeout(connect=5.0, read=10.0, write=10.0, pool=5.0)
MAX_RESPONSE_BYTES = 64 * 1024
METADATA = {ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200", "168.63.129.16")}


class Refused(Exception):
    """The URL may not be sent to; `str(exc)` says why (no secret, no server path)."""


@dataclass(frozen=True)
class Target:
    url: str  # with the checked address in place of the name
    host: str  # the name, for the Host header and TLS
    address: str


@dataclass(frozen=True)
class Answer:
    status_code: int | None
    error: str | None
    milliseconds: int


def url_problem(url: str, key: str = "url") -> Problem | None:
    """What is wrong with the shape of `url` (None when it is an http(s) URL with a host and no credentials)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return Problem("must be an http:// or https:// URL with a host", key=key)
    if parts.username or parts.password:
        return Problem("must not carry credentials (the request is signed instead)", key=key)
    try:
        parts.port
    except ValueError:
        return Problem("has an invalid port", key=key)
    return None


def resolve(url: str, allowed_hosts: set[str]) -> Target:
    """The address to send `url` to, or Refused. Resolves the name and checks every address it gives."""
    parts = urlsplit(url)
    host, port = parts.hostname.lower(), parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise Refused(f"the host {host} does not resolve") from None
    addresses = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]
    if host not in allowed_hosts:
        for address in addresses:
            if why := refused_because(address):
                raise Refused(f"the host {host} resolves to {address}, {why}; an admin can allow the host")
    address = str(addresses[0])
    netloc = f"[{address}]" if addresses[0].version == 6 else address
    return Target(urlunsplit((parts.scheme, f"{netloc}:{port}", parts.path or "/", parts.query, "")), host, address)


def refused_because(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address in METADATA:
        return "a cloud metadata address"
    for test, what in ((address.is_loopback, "a loopback address"), (address.is_link_local, "a link-local address"),
                       (address.is_private, "a private address"), (address.is_multicast, "a multicast address"),
                       (address.is_unspecified, "an unspecified address"), (address.is_reserved, "a reserved address"),
                       (not address.is_global, "not a public address")):
        if test:
            return what
    return None


def post(url: str, body: bytes, headers: dict[str, str], allowed_hosts: set[str]) -> Answer:
    """POST `body` to `url` after the checks above; the answer's status, or what went wrong."""
    started = time.monotonic()
    try:
        target = resolve(url, allowed_hosts)
    except Refused as exc:
        return Answer(None, f"refused: {exc}", 0)
    port = urlsplit(target.url).port
    default = port == (443 if target.url.startswith("https") else 80)
    request_headers = {**headers, "Host": target.host if default else f"{target.host}:{port}",
                       "Content-Type": "application/json", "User-Agent": "distill-webhooks"}
    try:
        with httpx.Client(timeout=TIMEOUT, follow_redirects=False, trust_env=False) as client:
            with client.stream("POST", target.url, content=body, headers=request_headers,
                               extensions={"sni_hostname": target.host}) as response:
                _read_at_most(response, MAX_RESPONSE_BYTES)
                status = response.status_code
    except httpx.HTTPError as exc:
        return Answer(None, f"{type(exc).__name__}: {exc}"[:300], _ms(started))
    error = None if 200 <= status < 300 else f"answered {status}" + (" (redirects are not followed)" if 300 <= status < 400 else "")
    return Answer(status, error, _ms(started))


def _read_at_most(response: httpx.Response, limit: int) -> None:
    seen = 0
    for chunk in response.iter_raw():
        seen += len(chunk)
        if seen > limit:
            break


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
