"""The recordings API of the HTTP listener, as plain functions (tested without HTTP; ops/http.py serves them
behind its token):

    GET /api/recordings?caller=&destination=&rule=&switch=&since=&until=&limit=   newest first, as JSON
    GET /api/recordings/<uuid>                                                   every row of that call
    GET /api/recordings/<uuid>/audio                                             the WAV: from this host's disk,
                                                                                 else streamed from the bucket;
                                                                                 HTTP Range requests (206)

Each returns (status, headers, body) where body is bytes or an iterator of bytes (the audio is streamed).
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping
from urllib.parse import parse_qs

from .schema import listed
from .store import CatalogError, iso

PREFIX = "/api/recordings"
DEFAULT_LIMIT = 50
MAX_LIMIT = 1000
CHUNK = 64 * 1024
_FILTERS = ("caller", "destination", "rule", "switch")
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
_RELATIVE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

Answer = tuple[str, list[tuple[str, str]], Any]


def parse_when(text: str, now: datetime | None = None) -> str:
    """A time to search from or to: ISO 8601 (a date is its midnight UTC; no zone is UTC), or a duration ago
    (30m, 2h, 7d). ValueError saying what is allowed."""
    text = text.strip()
    now = now or datetime.now(timezone.utc)
    found = _RELATIVE.fullmatch(text)
    if found:
        return iso(now - timedelta(seconds=float(found.group(1)) * _UNITS[found.group(2)]))
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is not a time: give ISO 8601 (2026-11-25, 2026-11-25T06:00:00Z) or a time ago "
                         "(30m, 2h, 7d)") from None
    return iso(moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc))


def search_filters(query: Mapping[str, Iterable[str]]) -> dict[str, Any]:
    """The store's search arguments from a query (each key once); ValueError saying which one is wrong."""
    allowed = (*_FILTERS, "since", "until", "limit")
    filters: dict[str, Any] = {}
    for key, values in query.items():
        values = list(values)
        if key not in allowed:
            raise ValueError(f"unknown parameter {key!r}; allowed: {', '.join(allowed)}")
        if len(values) != 1 or not values[0]:
            raise ValueError(f"give {key} once, with a value")
        value = values[0]
        if key in ("since", "until"):
            filters[key] = parse_when(value)
        elif key == "limit":
            if not value.isdigit() or not 1 <= int(value) <= MAX_LIMIT:
                raise ValueError(f"limit must be a whole number from 1 to {MAX_LIMIT}")
            filters[key] = int(value)
        else:
            filters[key] = value
    filters.setdefault("limit", DEFAULT_LIMIT)
    return filters


def _json(status: str, body: Any) -> Answer:
    data = (json.dumps(body, indent=1) + "\n").encode("utf-8")
    return status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))], data


def _error(status: str, text: str) -> Answer:
    return _json(status, {"error": text})


def handle(archive, method: str, path: str, query_string: str, headers: Mapping[str, str]) -> Answer | None:
    """The answer for a request under /api/recordings, or None when the path is not one of these."""
    if path.rstrip("/") == PREFIX:
        if method != "GET":
            return _error("405 Method Not Allowed", f"{method} {path} is not served")
        return list_recordings(archive, parse_qs(query_string, keep_blank_values=True))
    if not path.startswith(PREFIX + "/"):
        return None
    rest = path[len(PREFIX) + 1:].split("/")
    if method != "GET":
        return _error("405 Method Not Allowed", f"{method} {path} is not served")
    if len(rest) == 1 and rest[0]:
        return show_recording(archive, rest[0])
    if len(rest) == 2 and rest[0] and rest[1] == "audio":
        return recording_audio(archive, rest[0], headers.get("Range"))
    return _error("404 Not Found", f"no such endpoint {path}")


def list_recordings(archive, query: Mapping[str, Iterable[str]]) -> Answer:
    if archive.store is None:
        return _error("404 Not Found", "the catalog is off (catalog.enabled: false)")
    try:
        filters = search_filters(query)
    except ValueError as exc:
        return _error("400 Bad Request", str(exc))
    try:
        rows = archive.db(archive.store.search, **filters)
    except CatalogError as exc:
        return _error("503 Service Unavailable", f"the catalog {archive.catalog_shown} cannot be read: {exc}")
    return _json("200 OK", {"recordings": [listed(row) for row in rows], "limit": filters["limit"]})


def _rows(archive, key: str) -> tuple[list[dict], Answer | None]:
    if archive.store is None:
        return [], _error("404 Not Found", "the catalog is off (catalog.enabled: false)")
    try:
        rows = archive.db(archive.store.get, key)
    except CatalogError as exc:
        return [], _error("503 Service Unavailable", f"the catalog {archive.catalog_shown} cannot be read: {exc}")
    if not rows:
        return [], _error("404 Not Found", f"no recording {key} in the catalog")
    return rows, None


def show_recording(archive, key: str) -> Answer:
    rows, error = _rows(archive, key)
    if error is not None:
        return error
    return _json("200 OK", {"recordings": rows})


def choose(rows: list[dict], key: str) -> dict:
    """The recording a uuid (or recording id) names: that id exactly, else the call's latest recording."""
    exact = [row for row in rows if row["recording_id"] == key.lower()]
    return exact[0] if exact else rows[-1]


def local_file(archive, row: dict) -> Path | None:
    """The row's WAV on this host's disk, when it is this controller's and still there."""
    from ..archive import own_recording

    if row.get("controller_id") != archive.controller_id:
        return None
    path = own_recording(archive.directory, row.get("local_path"))
    return path if path is not None and path.is_file() else None


def parse_range(header: str | None, total: int) -> tuple[int, int] | None | str:
    """(first, last) inclusive for one 'bytes=' range; None for no (or an ignorable) Range; 'unsatisfiable'."""
    if not header:
        return None
    found = _RANGE.fullmatch(header.strip())
    if found is None:
        return None  # several ranges or another unit: the whole file, as RFC 9110 allows
    first, last = found.groups()
    if not first and not last:
        return None
    if not first:  # the last N bytes
        n = int(last)
        if n == 0:
            return "unsatisfiable"
        return max(0, total - n), total - 1
    start = int(first)
    end = min(int(last), total - 1) if last else total - 1
    if start >= total or (last and int(last) < start):
        return "unsatisfiable"
    return start, end


def _file_chunks(path: Path, start: int, length: int) -> Iterator[bytes]:
    with open(path, "rb") as f:
        f.seek(start)
        while length > 0:
            chunk = f.read(min(CHUNK, length))
            if not chunk:
                return
            length -= len(chunk)
            yield chunk


def recording_audio(archive, key: str, range_header: str | None = None) -> Answer:
    rows, error = _rows(archive, key)
    if error is not None:
        return error
    row = choose(rows, key)
    name = f"{row['recording_id']}.wav"
    base = [("Content-Type", "audio/wav"), ("Accept-Ranges", "bytes"),
            ("Content-Disposition", f'inline; filename="{name}"')]
    path = local_file(archive, row)
    if path is not None:
        total = path.stat().st_size
        wanted = parse_range(range_header, total)
        if wanted == "unsatisfiable":
            return "416 Range Not Satisfiable", [("Content-Range", f"bytes */{total}"), ("Content-Length", "0")], b""
        if wanted is None:
            return "200 OK", base + [("Content-Length", str(total)), ("X-Recording-Source", "disk")], \
                _file_chunks(path, 0, total)
        start, end = wanted
        return "206 Partial Content", base + [("Content-Range", f"bytes {start}-{end}/{total}"),
                                              ("Content-Length", str(end - start + 1)),
                                              ("X-Recording-Source", "disk")], _file_chunks(path, start, end - start + 1)
    if not row.get("object_url") or row.get("upload_state") != "verified":
        where = "on another controller's host" if row.get("controller_id") != archive.controller_id else "here"
        return _error("404 Not Found", f"recording {row['recording_id']} is not on disk {where} and not (yet) in the "
                                       f"bucket (upload {row.get('upload_state')})")
    if archive.bucket is None:
        return _error("404 Not Found", f"recording {row['recording_id']} is at {row['object_url']}, and this "
                                       "controller has no storage.upload to read it with")
    from ..storage.s3 import StorageError

    try:
        objkey = archive.bucket.key_of(row["object_url"])
        total = int(archive.bucket.head(objkey)["ContentLength"])
        wanted = parse_range(range_header, total)
        if wanted == "unsatisfiable":
            return "416 Range Not Satisfiable", [("Content-Range", f"bytes */{total}"), ("Content-Length", "0")], b""
        if wanted is None:
            chunks, length, _ = archive.bucket.open(objkey)
            return "200 OK", base + [("Content-Length", str(length)), ("X-Recording-Source", "bucket")], chunks
        start, end = wanted
        chunks, length, total = archive.bucket.open(objkey, start, end)
        return "206 Partial Content", base + [("Content-Range", f"bytes {start}-{start + length - 1}/{total}"),
                                              ("Content-Length", str(length)), ("X-Recording-Source", "bucket")], chunks
    except StorageError as exc:
        return _error("502 Bad Gateway", f"cannot read {row['object_url']}: {exc}")


def body_bytes(body: Any) -> bytes:
    """The whole body (tests)."""
    return body if isinstance(body, bytes) else b"".join(body)


__all__ = ["handle", "list_recordings", "show_recording", "recording_audio", "parse_when", "search_filters",
           "parse_range", "body_bytes"]
