"""Where an endpoint may point: http(s) to public addresses only, unless allowed otherwise.

A webhook URL is a request the service makes on an admin's behalf; pointed at loopback, the
cloud's metadata address or the private network it would reach what the internet cannot.
Every address the host resolves to must be public, when the endpoint is saved and again
before each send (a name may resolve elsewhere later); the send then connects to the very
addresses it checked (`checked_addresses`, `pinning`), never to a second lookup.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

from cryptocheckout.kit.errors import FieldIssue, Invalid


class EndpointUrlRefused(Invalid):
    code = "validation-error"

    def __init__(self, reason: str) -> None:
        super().__init__(
            f"The endpoint URL is refused: {reason}.",
            [FieldIssue(("url",), reason, "url_refused")],
        )
        self.reason = reason


def _is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    # is_global is false for loopback, private, link-local, unspecified, shared (CGNAT) and
    # reserved ranges; multicast addresses can be "global", so they are named as well.
    return ip.is_global and not ip.is_multicast


def host_and_port(url: str) -> tuple[str, int]:
    """The host and port of an http(s) URL, or EndpointUrlRefused."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise EndpointUrlRefused("not a valid URL") from exc
    if parts.scheme not in ("http", "https"):
        raise EndpointUrlRefused("only http and https URLs are allowed")
    if not parts.hostname:
        raise EndpointUrlRefused("the URL names no host")
    if parts.username or parts.password:
        raise EndpointUrlRefused("credentials in the URL are not allowed")
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)


async def resolve_host(host: str, port: int) -> list[str]:
    """The addresses `host` resolves to, in the resolver's order (OSError when it does not)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


async def checked_addresses(url: str, *, allow_private: bool) -> list[str]:
    """Resolves the URL's host once and returns the addresses a request may connect to.

    Every address must be public unless `allow_private`. The sender connects to these very
    addresses: resolving the name again would let a short-TTL name pass this check and then
    point at loopback or the metadata address (DNS rebinding).
    """
    host, port = host_and_port(url)
    try:
        addresses = await resolve_host(host, port)
    except (OSError, UnicodeError) as exc:
        raise EndpointUrlRefused(f"the host {host!r} does not resolve") from exc
    if not addresses:
        raise EndpointUrlRefused(f"the host {host!r} does not resolve")
    if not allow_private and not all(_is_public(address) for address in addresses):
        raise EndpointUrlRefused(
            "it resolves to a loopback, link-local, private or otherwise non-public address"
        )
    return addresses


async def check_url(url: str, *, allow_private: bool) -> None:
    """Refuses a URL that is not http(s) or that resolves to a non-public address."""
    host_and_port(url)
    if not allow_private:
        await checked_addresses(url, allow_private=False)
