"""Which network addresses the crawler may connect to, enforced on the socket it is about to connect.

A URL from Reddit can point anywhere, including at the machine running the crawl (`http://127.0.0.1:6379`),
the cluster's private network (`http://10.0.0.5/`) or a cloud metadata service (`http://169.254.169.254/`).
Checking the URL's host name is not enough: a public name can resolve to a private address, a redirect can
lead there, and a name can resolve differently on a second lookup (DNS rebinding). So the check sits where
no later lookup can change the answer: aiohttp's `socket_factory` hook receives the exact address the
socket is about to connect to, for every new connection (first request, every redirect hop, every retry,
IP literals and resolved names alike), and `guarded_socket_factory` refuses the forbidden ones there.

Forbidden unless `allow_private_networks` is set: loopback, private (RFC 1918, ULA), shared (CGNAT),
link-local, multicast, reserved, unspecified and documentation ranges, for IPv4 and IPv6, including IPv4
addresses embedded in IPv6 (IPv4-mapped `::ffff:a.b.c.d`, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`).

`SpecialNameResolver` answers the RFC 6761 special names itself, as that RFC asks of resolver libraries:
`localhost` (and names under it) is loopback, which the policy above then refuses, and names under `.invalid`
never resolve; neither causes a DNS query. Every other name goes to aiohttp's default resolver.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Callable

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class BlockedAddressError(OSError):
    """A connection to a forbidden address was refused before it was made.

    The message is the same for every address so that aiohappyeyeballs, which merges the errors of all
    addresses a name resolved to, keeps this type when they were all refused.
    """

    def __init__(self):
        super().__init__("refused to connect: address is private, loopback, link-local or reserved")


def is_public_address(ip: IPAddress) -> bool:
    """True when `ip` is a globally routable unicast address (and so is any IPv4 address it embeds)."""
    if ip.version == 6:
        # IPv4-mapped and NAT64 addresses reach exactly the IPv4 address inside them.
        if ip.ipv4_mapped is not None:
            return is_public_address(ip.ipv4_mapped)
        if ip in _NAT64:
            return is_public_address(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        if ip.sixtofour is not None and not is_public_address(ip.sixtofour):
            return False
    # is_global alone lets multicast through (224.0.0.0/4 is "global"); the rest are spelled out so that
    # the rule reads the same on every Python version, whose is_global tables have been corrected over time.
    return ip.is_global and not (
        ip.is_multicast or ip.is_loopback or ip.is_link_local or ip.is_reserved or ip.is_unspecified
        or ip.is_private
    )


def address_policy(allow_private_networks: bool) -> Callable[[IPAddress], bool]:
    """The predicate the crawler uses: every address when private networks are allowed, else public only."""
    return (lambda ip: True) if allow_private_networks else is_public_address


def guarded_socket_factory(allowed: Callable[[IPAddress], bool]):
    """An aiohttp `socket_factory` that raises BlockedAddressError for an address `allowed` rejects."""

    def make_socket(addr_info) -> socket.socket:
        family, sock_type, proto, _, sockaddr = addr_info
        ip = ipaddress.ip_address(sockaddr[0].split("%", 1)[0])  # drop an IPv6 zone id ("fe80::1%eth0")
        if not allowed(ip):
            raise BlockedAddressError()
        return socket.socket(family=family, type=sock_type, proto=proto)

    return make_socket


class SpecialNameResolver(AbstractResolver):
    """aiohttp's default resolver, except for `localhost` (loopback) and `.invalid` (fails), answered here."""

    def __init__(self):
        self._inner = DefaultResolver()

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
                      ) -> list[ResolveResult]:
        name = host.rstrip(".").lower()
        if name == "invalid" or name.endswith(".invalid"):
            raise OSError(f"{host}: names under .invalid never resolve (RFC 6761)")
        if name == "localhost" or name.endswith(".localhost"):
            return [ResolveResult(hostname=host, host="127.0.0.1", port=port, family=socket.AF_INET, proto=0,
                                  flags=socket.AI_NUMERICHOST)]
        return await self._inner.resolve(host, port, family)

    async def close(self) -> None:
        await self._inner.close()
