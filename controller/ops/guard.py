"""Who may ask the HTTP listener what, and from where: one check every endpoint goes through.

For each request, in order:

1. Where it comes from (``Guard.site``), for anything a browser could send. ``Host`` must name this listener: an
   IP address, localhost, ``metrics.listen_host``, this machine's own name or one of ``http.allowed_hosts``; a
   page whose name an attacker re-pointed at 127.0.0.1 (DNS rebinding) is refused. ``Origin``, when sent, must be
   the same host and port as ``Host`` (a page elsewhere, or ``null``); ``Sec-Fetch-Site``, when sent, must be
   ``same-origin`` or ``none`` (typed by the user). Refused: 403.
2. Who asks (``Guard.access``). An open route (``/healthz``, ``/metrics``) needs nothing on a loopback listener
   or with ``metrics.public: true``. Everything else needs a credential one of the authenticators accepts:
   ``BearerToken`` (``Authorization: Bearer <http.token>``, compared in constant time), and the console's
   session (console/: ``SessionCookie``, ambient, and ``CsrfHeader``). Missing or wrong: 401 with
   ``WWW-Authenticate``; no token configured at all: 403, since nothing could be accepted.

The authenticators are pluggable, as the console's login shows: one that reads a session cookie declares
``ambient = True`` (a browser attaches it to any request, cross-site ones included), and such a credential is
never enough for a state-changing request (anything but GET and HEAD): those need a non-ambient one, a header
no other site can make a browser send. Nothing here ever answers with CORS headers, so no other origin can
read an answer or send such a header.

Credentials are never logged, echoed or kept: an answer or a log line says which header was missing or that a
token was refused, never what was sent.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Iterable, Protocol
from urllib.parse import urlsplit

from .addresses import ip_of, is_loopback

REALM = "fs-stream-controller"
SAFE_METHODS = ("GET", "HEAD")
# What Sec-Fetch-Site may say: the request comes from this listener's own pages, or the user typed it.
SAME_SITE_FETCH = ("same-origin", "none")


@dataclass(frozen=True)
class Refusal:
    status: str  # e.g. "401 Unauthorized"
    error: str  # what the client is told, and the log says: never a credential
    headers: tuple[tuple[str, str], ...] = ()


class Authenticator(Protocol):
    """One way a request may prove it is allowed."""

    ambient: bool  # a browser sends it on its own (a cookie): never enough for a state-changing request

    def check(self, environ: dict) -> bool | None:
        """None: the request carries no credential of this kind; True or False: it does, right or wrong."""


def _digest(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


class BearerToken:
    """``Authorization: Bearer <token>``. The two are compared as SHA-256 digests with hmac.compare_digest: the
    time taken says nothing about the token, not even its length."""

    ambient = False  # no browser adds an Authorization header to a request another site makes it send

    def __init__(self, token: str) -> None:
        self._digest = _digest(token.encode("utf-8"))

    def check(self, environ: dict) -> bool | None:
        header = environ.get("HTTP_AUTHORIZATION")
        if not header:
            return None
        scheme, _, presented = header.strip().partition(" ")
        if scheme.lower() != "bearer":
            return False
        # WSGI hands header values over as latin-1 text: back to the bytes that came.
        given = _digest(presented.strip().encode("latin-1", errors="replace"))
        return hmac.compare_digest(given, self._digest)


def split_host(value: str) -> tuple[str, int | None]:
    """A Host header value as (host, port): "[::1]:9464" -> ("::1", 9464), "Example.net." -> ("example.net",
    None)."""
    value = value.strip().lower()
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif value.count(":") == 1:
        host, _, port = value.partition(":")
    else:
        host, port = value, ""
    return host.rstrip("."), int(port) if port.isdigit() else None


class Guard:
    """The checks above for one listener. ``listen_host`` as configured (loopback or not decides whether open
    routes are open); ``own_names``: this machine's names, allowed in Host."""

    def __init__(self, *, token: str | None, listen_host: str, public: bool = False,
                 allowed_hosts: Iterable[str] = (), own_names: Iterable[str] = (),
                 authenticators: Iterable[Authenticator] | None = None) -> None:
        self.listen_host = listen_host
        self.exposed = not is_loopback(listen_host)
        self.public = public
        self.authenticators = (list(authenticators) if authenticators is not None
                               else [BearerToken(token)] if token else [])
        self.names = {name.lower().rstrip(".") for name in ("localhost", listen_host, *allowed_hosts, *own_names)
                      if name}

    @property
    def open_routes_open(self) -> bool:
        """Whether /healthz and /metrics answer without a credential."""
        return not self.exposed or self.public

    def check(self, environ: dict, *, open_route: bool) -> Refusal | None:
        return self.site(environ) or self.access(environ, open_route=open_route)

    # ---- 1. where the request comes from ----

    def host_allowed(self, host: str) -> bool:
        # An IP address cannot be re-pointed: a page served from it is this listener's own.
        return ip_of(host) is not None or host in self.names or host.endswith(".localhost")

    def site(self, environ: dict) -> Refusal | None:
        host_header = environ.get("HTTP_HOST")
        if host_header is not None:
            host, _ = split_host(host_header)
            if not self.host_allowed(host):
                return Refusal("403 Forbidden",
                               f"Host {host_header[:100]!r} does not name this listener (an IP address, localhost, "
                               f"{self.listen_host or 'its address'}, this machine's name or http.allowed_hosts)")
        origin = environ.get("HTTP_ORIGIN")
        if origin is not None and not self._same_origin(origin, host_header):
            return Refusal("403 Forbidden", f"a request from another origin ({origin[:100]!r}) is refused")
        fetch_site = environ.get("HTTP_SEC_FETCH_SITE")
        if fetch_site is not None and fetch_site.lower() not in SAME_SITE_FETCH:
            return Refusal("403 Forbidden", f"a {fetch_site[:20]} request (Sec-Fetch-Site) is refused")
        return None

    @staticmethod
    def _same_origin(origin: str, host_header: str | None) -> bool:
        if host_header is None:
            return False
        try:
            parts = urlsplit(origin.strip())
            port = parts.port
        except ValueError:
            return False
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return False  # "null" (a sandboxed page, a file), or nonsense
        default = 80 if parts.scheme == "http" else 443
        host, host_port = split_host(host_header)
        return (parts.hostname.rstrip("."), port or default) == (host, host_port or default)

    # ---- 2. who asks ----

    def access(self, environ: dict, *, open_route: bool) -> Refusal | None:
        if open_route and self.open_routes_open:
            return None
        path = environ.get("PATH_INFO", "/")
        if not self.authenticators:
            return Refusal("403 Forbidden", f"{path} needs the API token, and the controller has none: set "
                                            "http.token in its configuration and restart it")
        state_changing = environ.get("REQUEST_METHOD", "GET") not in SAFE_METHODS
        refused = ambient_only = False
        for authenticator in self.authenticators:
            verdict = authenticator.check(environ)
            if verdict is True and state_changing and authenticator.ambient:
                ambient_only = True
            elif verdict is True:
                return None
            elif verdict is False:
                refused = True
        if refused:
            return Refusal("401 Unauthorized", "the API token was refused",
                           (("WWW-Authenticate", f'Bearer realm="{REALM}", error="invalid_token"'),))
        if ambient_only:
            return Refusal("403 Forbidden", "a request that changes anything needs the API token in its "
                                            "Authorization header")
        why = f" (the listener is on {self.listen_host} and metrics.public is false)" if open_route else ""
        return Refusal("401 Unauthorized", f"{path} needs the API token{why}: send Authorization: Bearer "
                                           "<http.token>", (("WWW-Authenticate", f'Bearer realm="{REALM}"'),))
