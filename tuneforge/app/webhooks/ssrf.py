"""Refuse webhook targets inside the network (SSRF): private, loopback, link-local, multicast and
reserved addresses, unless `TUNEFORGE_WEBHOOKS_ALLOW_PRIVATE=true`. Checked when an endpoint is
created and again before every delivery (a name can be re-pointed after it was checked)."""

from __future__ import annotations

import ipaddress
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


def check_url(url: str, *, allow_private: bool) -> None:
    """Raise UnsafeURL, with a message for the client, when `url` may not be called."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise UnsafeURL("url must be an http:// or https:// URL")
    if not parts.hostname:
        raise UnsafeURL("url has no host")
    if parts.username or parts.password:
        raise UnsafeURL("url must not carry credentials")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise UnsafeURL("url has an invalid port") from exc
    if allow_private:
        return
    try:
        infos = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UnsafeURL(f"url host {parts.hostname!r} does not resolve") from exc
    for info in infos:
        ip = ipaddress.ip_address(info[4][0])
        if _is_internal(ip):
            raise UnsafeURL(
                f"url resolves to {ip}, a private or loopback address; webhooks only call public addresses "
                "(TUNEFORGE_WEBHOOKS_ALLOW_PRIVATE=true allows them)"
            )
