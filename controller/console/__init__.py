"""The web console (issue #19): live calls, the recordings catalog and one recording's player and timeline, served by
the controller's own HTTP listener (ops/http.py) under ``/console``. Plain HTML, CSS and JavaScript modules from
``static/`` (package data): no build step, no CDN.

Who may look (ops/guard.py does every check):

- ``POST /console/login`` takes the API token (``{"token": ...}`` as JSON, after the Host/Origin/Sec-Fetch-Site
  check: a page elsewhere cannot post it) and answers with a session cookie: ``HttpOnly; SameSite=Strict;
  Path=/``, expiring (``Max-Age``, and the server forgets it then too), ``Secure`` when the request came over TLS.
  A wrong token gets 401 and no cookie; ten wrong ones from an address within a minute, 429 until the minute
  has passed (``LoginThrottle``).
- ``SessionCookie`` is an authenticator with ``ambient = True``: a browser attaches it to anything, so the guard
  lets it read (GET/HEAD) and never change anything. A change (logout, the doctor's test call) needs
  ``CsrfHeader`` as well: the session's CSRF token in ``X-CSRF-Token``, a header no other site can make a browser
  send, checked against the session the cookie names.
- The pages and their scripts hold no data and are served after the site check only; every answer with data
  (``/console/api/...``, ``/api/recordings/...``, ``/calls``, ``/healthz``) goes through the guard.

Endpoints (besides the pages ``/console/login``, ``/console/live``, ``/console/recordings``,
``/console/recording?id=<uuid>`` and ``/console/static/<file>``):

    GET  /console/api/session               {"csrf": ..., "expires_in_s": ...}
    GET  /console/api/live                  {"calls": [...], "health": {...}}; each call with its level (dBFS per
                                            channel, the RMS of the last 100 ms its file holds: read off the
                                            file, never on the frame path)
    GET  /console/api/events                the same, as Server-Sent Events, every 0.25 s (health every 1 s)
    GET  /console/api/recordings?caller=&destination=&rule=&since=&until=&close_reason=&gaps=yes|no
                                 &relayed=yes|no&page=1&per_page=25      newest first, paginated in the database
    GET  /console/api/recordings/<id>       the catalog row, the sidecar (from this host's disk, else the copy in
                                            the bucket)
    GET  /console/api/recordings/<id>/peaks the waveform: per channel, min and max of each of PEAK_BUCKETS slices,
                                            computed once per recording (from the disk, else the bucket; kept in
                                            memory, keyed by the file's size and modification time, or the object's
                                            URL and SHA-256)
    POST /console/logout                    (CSRF) forgets the session, expires the cookie
"""

from __future__ import annotations

import audioop
import hashlib
import hmac
import json
import math
import secrets
import tempfile
import time
import wave
from collections import OrderedDict
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs

import gevent

PREFIX = "/console"
COOKIE = "fsctl_session"
CSRF_HEADER = "HTTP_X_CSRF_TOKEN"
SESSION_TTL_S = 8 * 3600
MAX_SESSIONS = 200
EVENT_INTERVAL_S = 0.25
HEALTH_INTERVAL_S = 1.0
EVENT_STREAM_MAX_S = 600  # an event stream ends after this; the browser reconnects (and is checked again)
PEAK_BUCKETS = 1200
PEAK_CACHE = 256
PER_PAGE = 25
MAX_PER_PAGE = 200
STATIC = Path(__file__).resolve().parent / "static"
PAGES = {"/console/login": "login.html", "/console/live": "live.html", "/console/recordings": "recordings.html",
         "/console/recording": "recording.html"}
TYPES = {".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8",
         ".js": "text/javascript; charset=utf-8", ".png": "image/png", ".svg": "image/svg+xml"}
# Only this listener's own scripts, styles and media; never framed.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; media-src 'self'; "
       "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
PAGE_HEADERS = (("Content-Security-Policy", CSP), ("X-Frame-Options", "DENY"), ("Referrer-Policy", "no-referrer"),
                ("X-Content-Type-Options", "nosniff"), ("Cache-Control", "no-store"))


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8", errors="replace")).digest()


def cookie_value(environ: dict, name: str = COOKIE) -> str | None:
    header = environ.get("HTTP_COOKIE")
    if not header:
        return None
    try:
        jar = SimpleCookie()
        jar.load(header)
    except CookieError:
        return None
    morsel = jar.get(name)
    return morsel.value if morsel is not None else None


@dataclass
class Session:
    csrf: str
    expires: float  # monotonic


class Sessions:
    """The console's logins, in memory (a restart logs everyone out). Kept by the SHA-256 of the cookie's value,
    so not even this process's memory holds the cookie itself."""

    def __init__(self, ttl_s: float = SESSION_TTL_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self.clock = clock
        self._sessions: dict[bytes, Session] = {}

    def create(self) -> tuple[str, Session]:
        now = self.clock()
        for key in [k for k, s in self._sessions.items() if s.expires <= now]:
            del self._sessions[key]
        while len(self._sessions) >= MAX_SESSIONS:  # the oldest goes
            del self._sessions[min(self._sessions, key=lambda k: self._sessions[k].expires)]
        value = secrets.token_urlsafe(32)
        session = Session(csrf=secrets.token_urlsafe(32), expires=now + self.ttl_s)
        self._sessions[_digest(value)] = session
        return value, session

    def find(self, environ: dict) -> Session | None | bool:
        """None: no session cookie; False: one this process does not know (or expired); else the session."""
        value = cookie_value(environ)
        if value is None:
            return None
        session = self._sessions.get(_digest(value))
        if session is None:
            return False
        if session.expires <= self.clock():
            self._sessions.pop(_digest(value), None)
            return False
        return session

    def end(self, environ: dict) -> None:
        value = cookie_value(environ)
        if value is not None:
            self._sessions.pop(_digest(value), None)


class LoginThrottle:
    """Wrong tokens at the login, per address: after MAX_WRONG_LOGINS in a minute that address is told to wait
    (429) until the oldest falls out of the minute. Behind a proxy the address is the proxy's: all wait."""

    def __init__(self, limit: int = 10, window_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.window_s, self.clock = limit, window_s, clock
        self._wrong: dict[str, list[float]] = {}

    def wait_s(self, address: str) -> float:
        """0 when this address may try; else how long it must wait."""
        now = self.clock()
        recent = [t for t in self._wrong.get(address, []) if now - t < self.window_s]
        if recent:
            self._wrong[address] = recent
        else:
            self._wrong.pop(address, None)
        return self.window_s - (now - recent[0]) if len(recent) >= self.limit else 0.0

    def wrong(self, address: str) -> None:
        if len(self._wrong) > 10000:  # many addresses: forget the lot rather than grow
            self._wrong.clear()
        self._wrong.setdefault(address, []).append(self.clock())


class SessionCookie:
    """The console's session cookie. Ambient: the guard never lets it alone change anything."""

    ambient = True

    def __init__(self, sessions: Sessions) -> None:
        self.sessions = sessions

    def check(self, environ: dict) -> bool | None:
        found = self.sessions.find(environ)
        return None if found is None else found is not False


class CsrfHeader:
    """``X-CSRF-Token``: the session's CSRF token, sent by the console's own scripts with every change. Not
    ambient: no other site can make a browser send this header (and none can read the token to send)."""

    ambient = False

    def __init__(self, sessions: Sessions) -> None:
        self.sessions = sessions

    def check(self, environ: dict) -> bool | None:
        given = environ.get(CSRF_HEADER)
        if not given:
            return None
        session = self.sessions.find(environ)
        if not isinstance(session, Session):
            return False
        return hmac.compare_digest(_digest(given), _digest(session.csrf))


# ---- the recordings, a page at a time ----

def _yes_no(value: str, name: str) -> bool:
    value = value.strip().lower()
    if value in ("yes", "true", "1"):
        return True
    if value in ("no", "false", "0"):
        return False
    raise ValueError(f"{name} is yes or no")


def page_filters(query: dict[str, list[str]]) -> dict[str, Any]:
    """The search a query asks for; ValueError saying what is wrong. Empty values are no filter (a form sends
    every field)."""
    from ..catalog.api import parse_when

    allowed = ("caller", "destination", "rule", "switch", "since", "until", "close_reason", "gaps", "relayed",
               "page", "per_page")
    out: dict[str, Any] = {"page": 1, "per_page": PER_PAGE}
    for key, values in query.items():
        if key not in allowed:
            raise ValueError(f"unknown parameter {key!r}; allowed: {', '.join(allowed)}")
        value = values[-1].strip()
        if not value:
            continue
        if key in ("since", "until"):
            out[key] = parse_when(value)
        elif key in ("gaps", "relayed"):
            out[key] = _yes_no(value, key)
        elif key in ("page", "per_page"):
            if not value.isdigit() or int(value) < 1 or (key == "per_page" and int(value) > MAX_PER_PAGE):
                raise ValueError(f"{key} must be a whole number from 1" + (f" to {MAX_PER_PAGE}" if key == "per_page"
                                                                               else ""))
            out[key] = int(value)
        else:
            out[key] = value
    return out


def search_page(store, filters: dict[str, Any]) -> tuple[int, list[dict[str, Any]]]:
    """(how many match, this page of them), newest first: the filtering, counting and paging done by the
    database."""
    criteria = {key: value for key, value in filters.items() if key not in ("page", "per_page")}
    per_page = filters["per_page"]
    return store.count(**criteria), store.search(**criteria, limit=per_page, offset=(filters["page"] - 1) * per_page)


# ---- the waveform ----

def compute_peaks(path, buckets: int = PEAK_BUCKETS) -> dict[str, Any]:
    """Per channel, [min, max] of each of `buckets` equal slices of the WAV (a path or an open file; as -1..1),
    with what they span."""
    with wave.open(path, "rb") as wav:
        rate, channels, width, total = wav.getframerate(), wav.getnchannels(), wav.getsampwidth(), wav.getnframes()
        per = max(1, math.ceil(total / buckets)) if total else 1
        full = float(1 << (8 * width - 1))
        lanes: list[list[list[float]]] = [[] for _ in range(channels)]
        while True:
            data = wav.readframes(per)
            if not data:
                break
            for channel in range(channels):
                mono = data if channels == 1 else audioop.tomono(data, width, 1.0 if channel == 0 else 0.0,
                                                                 1.0 if channel == 1 else 0.0)
                low, high = audioop.minmax(mono, width)
                lanes[channel].append([round(low / full, 4), round(high / full, 4)])
    return {"rate": rate, "channels": channels, "frames": total, "duration_s": total / rate if rate else 0.0,
            "frames_per_bucket": per, "peaks": lanes}


class PeakCache:
    """Peaks computed once per recording (in a thread: a long WAV takes a moment), kept for the last few."""

    def __init__(self, size: int = PEAK_CACHE) -> None:
        self.size = size
        self._kept: OrderedDict[tuple, dict] = OrderedDict()
        self.computed = 0

    def get(self, path: Path) -> dict[str, Any]:
        stat = path.stat()
        return self.get_or_make((str(path), stat.st_size, stat.st_mtime_ns),
                                lambda: gevent.get_hub().threadpool.apply(compute_peaks, (str(path),)))

    def get_or_make(self, key: tuple, make: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        found = self._kept.get(key)
        if found is not None:
            self._kept.move_to_end(key)
            return found
        peaks = make()
        self.computed += 1
        self._kept[key] = peaks
        while len(self._kept) > self.size:
            self._kept.popitem(last=False)
        return peaks


# ---- the level meter ----

LEVEL_WINDOW_S = 0.1  # the RMS of the last 100 ms written
LEVEL_EVERY_S = 0.2  # computed at most this often, whoever asks
LEVEL_FLOOR_DB = -90.0
WAV_HEADER = 44  # recorder/wav.py writes the canonical header, data from here


def level_of(part: str, channels: int, rate: int, window_s: float = LEVEL_WINDOW_S) -> list[float] | None:
    """Per channel, the RMS of the last `window_s` of audio in a recording's file as dBFS (LEVEL_FLOOR_DB for
    silence): read from the file the recorder writes (flushed every few tens of milliseconds), so the frame path
    is never touched. None when there is no file (yet) or no audio in it."""
    frame = 2 * channels
    try:
        with open(part, "rb") as f:
            size = f.seek(0, 2)
            if size <= WAV_HEADER + frame:
                return None
            start = max(WAV_HEADER, size - int(rate * window_s) * frame)
            start = WAV_HEADER + (start - WAV_HEADER) // frame * frame
            f.seek(start)
            data = f.read(size - start)
    except OSError:
        return None
    data = data[:len(data) // frame * frame]
    if not data:
        return None
    levels = []
    for channel in range(channels):
        mono = data if channels == 1 else audioop.tomono(data, 2, 1.0 if channel == 0 else 0.0,
                                                         1.0 if channel == 1 else 0.0)
        rms = audioop.rms(mono, 2)
        levels.append(round(max(LEVEL_FLOOR_DB, 20 * math.log10(rms / 32768)) if rms else LEVEL_FLOOR_DB, 1))
    return levels


class Levels:
    """Each live call's level, computed at most every LEVEL_EVERY_S however many pages watch."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._at = -1e9
        self._levels: dict[str, list[float] | None] = {}

    def get(self, recorder) -> dict[str, list[float] | None]:
        now = self.clock()
        if now - self._at >= LEVEL_EVERY_S:
            from ..recorder.wav import part_path_for

            self._at = now
            self._levels = {uuid: level_of(str(part_path_for(stats["path"])), int(stats["channels"]),
                                           int(stats["rate"]))
                            for uuid, stats in recorder.live_stats().items() if stats.get("path")}
        return self._levels


class ConsoleError(Exception):
    def __init__(self, status: str, error: str) -> None:
        super().__init__(error)
        self.status, self.error = status, error


class Console:
    """The console for one HttpListener: ``listener`` gives the guard, the controller and the JSON helpers."""

    def __init__(self, listener, token: str | None, *, health: Callable[[Any], dict], live_calls: Callable[[Any], list],
                 read_json: Callable[[dict], tuple[Any, tuple[str, str] | None]], reply: Callable) -> None:
        """health, live_calls, read_json(environ) -> (body, None | (status, error)) and reply(start_response,
        status, body, headers): the listener's own (ops/http.py), handed in so that this module never imports it."""
        self._health, self._live_calls, self._read_json, self._reply = health, live_calls, read_json, reply
        self.listener = listener
        self.controller = listener.controller
        self.guard = listener.guard
        self.sessions = Sessions()
        self.throttle = LoginThrottle()
        self.peaks = PeakCache()
        self.levels = Levels()
        self._token_digest = _digest(token) if token else None
        if token:
            self.guard.authenticators += [SessionCookie(self.sessions), CsrfHeader(self.sessions)]

    def wants(self, path: str) -> bool:
        return path == "/" or path == PREFIX or path.startswith(PREFIX + "/")

    # ---- WSGI ----

    def app(self, environ, start_response):
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "/")
        refusal = self.guard.site(environ)
        if refusal is not None:
            return self.listener._refuse(start_response, environ, refusal)
        if path in ("/", PREFIX, PREFIX + "/"):
            return self._redirect(start_response, PREFIX + "/live")
        if path == PREFIX + "/login" and method == "POST":
            return self._login(environ, start_response)
        if path in PAGES or path.startswith(PREFIX + "/static/"):
            if method not in ("GET", "HEAD"):
                return self._json(start_response, "405 Method Not Allowed", {"error": f"{method} {path} is not served"})
            return self._file(start_response, PAGES.get(path) or path[len(PREFIX + "/static/"):])
        # Everything else holds data or changes something: the guard's full check.
        refusal = self.guard.check(environ, open_route=False)
        if refusal is not None:
            return self.listener._refuse(start_response, environ, refusal)
        try:
            if path == PREFIX + "/logout" and method == "POST":
                self.sessions.end(environ)
                return self._json(start_response, "200 OK", {"logged_out": True},
                                  (("Set-Cookie", self._cookie(environ, "", 0)),))
            if method != "GET":
                raise ConsoleError("405 Method Not Allowed", f"{method} {path} is not served")
            if path == PREFIX + "/api/session":
                session = self.sessions.find(environ)
                if isinstance(session, Session):
                    return self._json(start_response, "200 OK", {
                        "csrf": session.csrf, "expires_in_s": round(session.expires - self.sessions.clock())})
                return self._json(start_response, "200 OK", {"csrf": None, "expires_in_s": None})
            if path == PREFIX + "/api/live":
                return self._json(start_response, "200 OK", self.live(with_health=True))
            if path == PREFIX + "/api/events":
                return self._events(environ, start_response)
            if path == PREFIX + "/api/recordings":
                return self._json(start_response, "200 OK", self.recordings(environ.get("QUERY_STRING", "")))
            if path.startswith(PREFIX + "/api/recordings/"):
                rest = path[len(PREFIX + "/api/recordings/"):].split("/")
                if len(rest) == 1 and rest[0]:
                    return self._json(start_response, "200 OK", self.recording(rest[0]))
                if len(rest) == 2 and rest[0] and rest[1] == "peaks":
                    return self._json(start_response, "200 OK", self.recording_peaks(rest[0]))
            raise ConsoleError("404 Not Found", f"no such endpoint {path}")
        except ConsoleError as exc:
            return self._json(start_response, exc.status, {"error": exc.error})

    # ---- login ----

    def _login(self, environ, start_response):
        if self._token_digest is None:
            return self._json(start_response, "403 Forbidden", {
                "error": "the console needs the API token, and the controller has none: set http.token"})
        address = environ.get("REMOTE_ADDR", "?")
        wait_s = self.throttle.wait_s(address)
        if wait_s > 0:
            return self._json(start_response, "429 Too Many Requests",
                              {"error": f"too many wrong tokens from {address}: try again in {math.ceil(wait_s)} s"},
                              (("Retry-After", str(math.ceil(wait_s))),))
        body, problem = self._read_json(environ)
        if problem is not None:
            return self._json(start_response, problem[0], {"error": problem[1]})
        token = body.get("token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not hmac.compare_digest(_digest(token), self._token_digest):
            self.throttle.wrong(address)
            self.listener._refuse(lambda *a: None, environ, _refusal("401 Unauthorized",
                                                                      "a console login with a wrong token"))
            return self._json(start_response, "401 Unauthorized", {"error": "that is not the API token"})
        value, session = self.sessions.create()
        return self._json(start_response, "200 OK", {"csrf": session.csrf, "expires_in_s": self.sessions.ttl_s},
                          (("Set-Cookie", self._cookie(environ, value, int(self.sessions.ttl_s))),))

    @staticmethod
    def _cookie(environ, value: str, max_age: int) -> str:
        secure = environ.get("wsgi.url_scheme") == "https" or \
            environ.get("HTTP_X_FORWARDED_PROTO", "").lower() == "https"
        return (f"{COOKIE}={value}; Max-Age={max_age}; Path=/; HttpOnly; SameSite=Strict"
                + ("; Secure" if secure else ""))

    # ---- live ----

    def live(self, *, with_health: bool) -> dict[str, Any]:
        calls = self._live_calls(self.controller)
        relays = getattr(self.controller, "relays", {}) or {}
        levels = self.levels.get(self.controller.recorder)
        for call in calls:
            call["level_db"] = levels.get(call["uuid"])
            link = relays.get(call["uuid"])
            if link is None:
                call["agent"] = None
                continue
            stats = {k: v for k, v in dict(link.stats).items() if isinstance(v, (int, float, str, type(None)))}
            call["agent"] = {"url": link.shown_url, "connected": link.connected, "stats": stats}
        answer: dict[str, Any] = {"calls": calls, "at": time.time()}
        if with_health:
            answer["health"] = self._health(self.controller)
        return answer

    def _events(self, environ, start_response):
        sessions = self.sessions
        by_cookie = sessions.find(environ) is not None

        def stream():
            yield b"retry: 1000\n\n"
            started = time.monotonic()
            health_at = 0.0
            while time.monotonic() - started < EVENT_STREAM_MAX_S:
                if by_cookie and not isinstance(sessions.find(environ), Session):
                    yield b"event: logout\ndata: {}\n\n"
                    return
                now = time.monotonic()
                with_health = now - health_at >= HEALTH_INTERVAL_S
                if with_health:
                    health_at = now
                yield f"event: live\ndata: {json.dumps(self.live(with_health=with_health))}\n\n".encode()
                gevent.sleep(EVENT_INTERVAL_S)

        start_response("200 OK", [("Content-Type", "text/event-stream; charset=utf-8"), ("Cache-Control", "no-store"),
                                  ("X-Accel-Buffering", "no"), ("X-Content-Type-Options", "nosniff")])
        return stream()

    # ---- recordings ----

    def _archive(self):
        archive = getattr(self.controller, "archive", None)
        if archive is None or archive.store is None:
            raise ConsoleError("404 Not Found", "the catalog is off (catalog.enabled: false)")
        return archive

    def recordings(self, query_string: str) -> dict[str, Any]:
        from ..catalog.store import CatalogError

        archive = self._archive()
        try:
            filters = page_filters(parse_qs(query_string, keep_blank_values=True))
        except ValueError as exc:
            raise ConsoleError("400 Bad Request", str(exc)) from None
        try:
            total, rows = archive.db(search_page, archive.store, filters)
        except CatalogError as exc:
            raise ConsoleError("503 Service Unavailable",
                               f"the catalog {archive.catalog_shown} cannot be read: {exc}") from None
        return {"recordings": [_shown(row) for row in rows], "total": total, "page": filters["page"],
                "per_page": filters["per_page"], "pages": max(1, math.ceil(total / filters["per_page"]))}

    def _row(self, key: str) -> tuple[Any, dict[str, Any]]:
        from ..catalog import api

        archive = self._archive()
        rows, error = api._rows(archive, key)
        if error is not None:
            status, _, body = error
            raise ConsoleError(status, json.loads(body)["error"])
        return archive, api.choose(rows, key)

    def recording(self, key: str) -> dict[str, Any]:
        """The row, and the sidecar: from this host's disk, else the copy uploaded beside the WAV in the bucket."""
        from ..catalog.api import local_file

        archive, row = self._row(key)
        path = local_file(archive, row)
        sidecar, where, problem = None, None, None
        if path is not None:
            try:
                sidecar, where = json.loads(path.with_suffix(".json").read_text()), "disk"
            except (OSError, ValueError) as exc:
                problem = f"the sidecar beside the WAV cannot be read: {exc}"
        elif _in_bucket(archive, row):
            from ..storage.keys import sidecar_key
            from ..storage.s3 import StorageError

            try:
                chunks, _, _ = archive.bucket.open(sidecar_key(archive.bucket.key_of(row["object_url"])))
                sidecar, where = json.loads(b"".join(chunks)), "bucket"
            except (StorageError, ValueError) as exc:
                problem = f"the sidecar cannot be read from the bucket: {exc}"
        else:
            problem = "the recording is neither on this host's disk nor (yet) in the bucket"
        return {"recording": _shown(row), "sidecar": sidecar, "sidecar_source": where, "sidecar_problem": problem,
                "audio_url": f"/api/recordings/{row['recording_id']}/audio"}

    def recording_peaks(self, key: str) -> dict[str, Any]:
        """Computed once per recording: from the WAV on this host's disk, else read once from the bucket."""
        from ..catalog.api import local_file

        archive, row = self._row(key)
        path = local_file(archive, row)
        if path is not None:
            return self.peaks.get(path)
        if not _in_bucket(archive, row):
            raise ConsoleError("404 Not Found", f"recording {row['recording_id']} is neither on this host's disk "
                                                "nor (yet) in the bucket: no waveform")
        from ..storage.s3 import StorageError

        def from_bucket() -> dict[str, Any]:
            with tempfile.TemporaryFile() as f:
                chunks, _, _ = archive.bucket.open(archive.bucket.key_of(row["object_url"]))
                for chunk in chunks:
                    f.write(chunk)
                f.seek(0)
                return gevent.get_hub().threadpool.apply(compute_peaks, (f,))

        try:
            return self.peaks.get_or_make(("bucket", row["object_url"], row.get("sha256")), from_bucket)
        except StorageError as exc:
            raise ConsoleError("502 Bad Gateway", f"cannot read {row['object_url']}: {exc}") from None

    # ---- plumbing ----

    def _file(self, start_response, name: str):
        path = (STATIC / name).resolve()
        if path.parent != STATIC or path.suffix not in TYPES or not path.is_file():
            return self._json(start_response, "404 Not Found", {"error": f"no such file {name[:100]}"})
        body = path.read_bytes()
        start_response("200 OK", [("Content-Type", TYPES[path.suffix]), ("Content-Length", str(len(body))),
                                  *PAGE_HEADERS])
        return [body]

    @staticmethod
    def _redirect(start_response, where: str):
        start_response("303 See Other", [("Location", where), ("Content-Length", "0"), ("Cache-Control", "no-store")])
        return [b""]

    def _json(self, start_response, status: str, body: Any, headers: tuple[tuple[str, str], ...] = ()):
        return self._reply(start_response, status, body, headers)


def _in_bucket(archive, row: dict[str, Any]) -> bool:
    return bool(row.get("object_url")) and row.get("upload_state") == "verified" and archive.bucket is not None


def _refusal(status: str, error: str):
    from ..ops.guard import Refusal

    return Refusal(status, error)


def _shown(row: dict[str, Any]) -> dict[str, Any]:
    """A catalog row as the console shows it (everything but the host's paths)."""
    return {k: v for k, v in row.items() if k not in ("local_path", "revision")} | \
        {"on_disk": bool(row.get("local_path"))}
