"""Refuse webhook targets inside the network (SSRF): private, loopback, link-local, multicast and
reserved addresses, unless `TUNEFORGE_WEBHOOKS_ALLOW_PRIVATE=true`. Checked when an endpoint is
created and again before every delivery (a name can be re-pointed after it was checked)."""

from __future__ import annotations

import ipaddress
import re
import socket
from urllib.parse import urlsplit


class UnsafeURL(ValueError):
    pass


def _is_internal(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or not ip.is_global
    )


# C0 controls, space and DEL: urlsplit drops tabs and newlines silently (WHATWG), so a URL holding
# one passed the check and then failed in httpx at every delivery (InvalidURL).
_UNSAFE_CHARS = re.compile(r"[\x00-\x20\x7f]")


def _parse(url: str) -> tuple[str, str, int]:
    """(scheme, host, port), or UnsafeURL naming what is wrong with the URL's shape."""
    if _UNSAFE_CHARS.search(url):
        raise UnsafeURL("url must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        host = parts.hostname  # raises ValueError for `http://[1.2.3.4]/` on some Pythons
        port = parts.port or (443 if parts.scheme == "https" else 80)
        credentials = parts.username or parts.password
    except ValueError as exc:  # `http://[::1/`, a bracketed IPv4 address, a port out of range
        raise UnsafeURL(f"url is not a valid URL ({exc})") from exc
    if parts.scheme not in ("http", "https"):
        raise UnsafeURL("url must be an http:// or https:// URL")
    if not host:
        raise UnsafeURL("url has no host")
    if credentials:
        raise UnsafeURL("url must not carry credentials")
    return parts.scheme, host, port


def check_url(url: str, *, allow_private: bool) -> None:
    """Raise UnsafeURL, with a message for the client, when `url` may not be called.

    The refusal names an address only when the URL spelled it: echoing what a host *name* resolves
    to would let any tenant look up internal names through this check."""
    _, host, port = _parse(url)
    if allow_private:
        return
    try:
        literal: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    # A host name that does not resolve and one that resolves inside get the same answer, which
    # says nothing of what the name resolves to, so the check cannot serve as an internal DNS oracle.
    refusal = UnsafeURL(
        f"url host {str(literal) if literal is not None else repr(host)} is not a public address: webhooks only "
        "call hosts that resolve to public addresses, never private or loopback ones "
        "(TUNEFORGE_WEBHOOKS_ALLOW_PRIVATE=true allows them)"
    )
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise refusal from exc
    if any(_is_internal(ipaddress.ip_address(info[4][0])) for info in infos):
        raise refusal
