"""What a configured host (a listen_host, an agent URL's host) means: loopback or not, a wildcard or not, and
the address this host's own tools use to reach a listener on it. One place for it: the configuration's checks,
the HTTP listener's guard, ``status`` and ``doctor`` all ask here.

Pure: ``ipaddress`` only, no name is resolved (the configuration is read without a network). A name other than
``localhost`` is therefore taken for a non-loopback address: a mistake on the safe side.
"""

from __future__ import annotations

import ipaddress

LOCALHOST_NAMES = ("localhost", "localhost.")


def ip_of(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a host written as an IP literal stands for (IPv6 with or without brackets, an IPv4-mapped
    IPv6 address as its IPv4 address), or None for a name."""
    text = host.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    text = text.split("%", 1)[0]  # a zone index (fe80::1%eth0) names a link, not another address
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_wildcard(host: str) -> bool:
    """Listening on every address of the host: "", 0.0.0.0, :: (or another spelling of them)."""
    if not host.strip():
        return True
    address = ip_of(host)
    return address is not None and address.is_unspecified


def is_loopback(host: str) -> bool:
    """Only this host can reach it: 127.0.0.0/8, ::1 or localhost. Wildcards and other names are not."""
    if host.strip().lower() in LOCALHOST_NAMES:
        return True
    address = ip_of(host)
    return address is not None and address.is_loopback


def reachable_host(host: str) -> str:
    """The address this host's own tools connect to for a listener on ``host``: a wildcard is reached on the
    loopback address of its own family (0.0.0.0 and "" at 127.0.0.1, :: at ::1, which a socket bound to :: always
    accepts, dual-stack or not); any other host as written."""
    if is_wildcard(host):
        address = ip_of(host)
        return "::1" if isinstance(address, ipaddress.IPv6Address) else "127.0.0.1"
    return host


def url_host(host: str) -> str:
    """``host`` as it is written in a URL's authority: an IPv6 address between brackets."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def http_base(host: str, port: int) -> str:
    """http://<reachable host>:<port>, where this host's tools find a listener bound to host:port."""
    return f"http://{url_host(reachable_host(host))}:{port}"
