"""The client's address and scheme behind trusted reverse proxies.

Behind nginx every request comes from the proxy's address, so the login limit, the
residents' form limit and the access log would count every client as one: a few bad logins
locked out every member of staff. A proxy says who it forwarded for in ``X-Forwarded-For``
(and whether the client used HTTPS in ``X-Forwarded-Proto``); anyone can send those headers,
so they are believed only from the addresses in the ``TRUSTED_PROXIES`` setting.

Reading ``X-Forwarded-For`` right to left: each trusted proxy appends the address it got
the request from, so the first address that is not a trusted proxy is the client; what lies
to its left came from the client and is not believed. gunicorn (23) believes only the
scheme header, and only from single addresses; this middleware takes networks too, and does
the same under the development server.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_trusted(text: str) -> tuple[bool, tuple[Network, ...]]:
    """``"127.0.0.1, ::1, 10.0.0.0/8"`` or ``"*"`` as (trust every address, networks).
    Raises ``ValueError`` naming an entry that is neither an address nor a network."""
    networks: list[Network] = []
    everyone = False
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if part == "*":
            everyone = True
            continue
        try:
            networks.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ValueError(f"{part!r} is not an IP address or network "
                             "(such as 10.0.0.5, 10.0.0.0/8 or ::1)") from None
    return everyone, tuple(networks)


class ForwardedFor:
    """WSGI middleware: for a request from a trusted proxy, ``REMOTE_ADDR`` becomes the
    client's address from ``X-Forwarded-For`` and ``wsgi.url_scheme`` follows
    ``X-Forwarded-Proto``; the proxy's own address is kept in ``hemei.proxy_addr``."""

    def __init__(self, app: Callable, trusted: str):
        self.app = app
        self.everyone, self.networks = parse_trusted(trusted)

    def trusts(self, address: str | None) -> bool:
        """Whether ``address`` is one of the trusted proxies."""
        if self.everyone:
            return True
        if not address or not self.networks:
            return False
        try:
            ip = ipaddress.ip_address(address.strip())
        except ValueError:
            return False
        return any(ip in net for net in self.networks)

    def client(self, peer: str, forwarded: Iterable[str]) -> str:
        """The client's address: the last one in the chain that is not a trusted proxy
        (the first hop when every hop is trusted). A hop that is not an address ends the
        walk: what a proxy wrote there cannot be read, so the request keeps ``peer``."""
        hops = [h.strip() for part in forwarded for h in part.split(",") if h.strip()]
        client = peer
        for hop in reversed(hops):
            try:
                ipaddress.ip_address(hop)
            except ValueError:
                break
            client = hop
            if not self.trusts(hop):
                break
        return client

    def __call__(self, environ: dict, start_response: Callable):
        peer = environ.get("REMOTE_ADDR")
        # The common case (no proxy in front) costs one dictionary look-up.
        if environ.get("HTTP_X_FORWARDED_FOR") or environ.get("HTTP_X_FORWARDED_PROTO"):
            if self.trusts(peer):
                environ["hemei.proxy_addr"] = peer
                chain = environ.get("HTTP_X_FORWARDED_FOR")
                if chain:
                    environ["REMOTE_ADDR"] = self.client(peer, [chain])
                # The value the nearest proxy (the trusted one) set: the last one.
                proto = (environ.get("HTTP_X_FORWARDED_PROTO") or "").split(",")[-1]
                proto = proto.strip().lower()
                if proto in ("http", "https"):
                    environ["wsgi.url_scheme"] = proto
        return self.app(environ, start_response)
