"""The catalog's row: what one finished recording is, as the catalog keeps it, built from its sidecar. Pure.

A row is a plain dict (it travels through the on-disk job queue as JSON): every column below, times as ISO 8601
UTC text (``2026-11-25T06:46:28.547Z``), JSON columns as Python values. ``revision`` orders the writes of one
recording: a write never replaces a row with a newer revision, so queued writes may land in any order.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

# Bumped by each migration (store.py holds them, one list per engine).
SCHEMA_VERSION = 1

# (name, kind): kind is text, int, real, time or json. In this order in CREATE TABLE and in every INSERT.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("recording_id", "text"),  # the call's uuid; with -2, -3 ... for a call's second and later recordings
    ("uuid", "text"),
    ("switch", "text"),  # the FreeSWITCH host (its FreeSWITCH-Hostname)
    ("controller_id", "text"),
    ("caller", "text"),
    ("destination", "text"),
    ("rule", "text"),
    ("start_time", "time"),
    ("end_time", "time"),
    ("duration_s", "real"),
    ("rate", "int"),
    ("channels", "int"),
    ("bytes", "int"),
    ("close_reason", "text"),
    ("error", "text"),
    ("gaps", "int"),  # every gap, listed or not
    ("gap_seconds", "real"),
    ("gaps_by_cause", "json"),  # {"stream_lost": {"count": 1, "seconds": 0.84}, ...}
    ("captured_s", "real"),
    ("captured_ratio", "real"),
    ("relay", "json"),  # the voice agent's figures, when the call was relayed
    ("metadata", "text"),  # the rule's metadata, as the JSON text the module was given
    ("local_path", "text"),  # the WAV on the controller's host; null once removed (storage.delete_local_after)
    ("object_url", "text"),  # s3://bucket/key, once uploaded
    ("sha256", "text"),  # of the WAV, hex
    ("upload_state", "text"),  # none (no storage), pending, verified
    ("uploaded_at", "time"),
    ("revision", "int"),
    ("updated_at", "time"),
)
NAMES = tuple(name for name, _ in COLUMNS)
TIME_COLUMNS = tuple(name for name, kind in COLUMNS if kind == "time")
JSON_COLUMNS = tuple(name for name, kind in COLUMNS if kind == "json")

UPLOAD_NONE, UPLOAD_PENDING, UPLOAD_VERIFIED = "none", "pending", "verified"

# What `recordings --json` and GET /api/recordings print of each row, in this order.
LISTED = ("uuid", "recording_id", "switch", "controller_id", "caller", "destination", "rule", "start_time",
          "end_time", "duration_s", "close_reason", "gaps", "gap_seconds", "captured_ratio", "sha256", "object_url",
          "upload_state", "local_path")


def iso_now() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


def new_revision() -> int:
    """Orders the writes of one recording (nanoseconds: two writes a moment apart still differ)."""
    return time.time_ns()


def recording_id(uuid: str, wav: os.PathLike | str) -> str:
    """The call's uuid, or uuid-N when the recorder named the file for a call's Nth recording (filenames.py adds
    -N to a name already taken)."""
    stem = Path(wav).name[:-4] if str(wav).endswith(".wav") else Path(wav).stem
    found = re.search(r"-(\d{1,3})$", stem)
    if found and uuid in stem[:found.start()] and not stem.endswith(uuid):
        return f"{uuid}-{found.group(1)}"
    return uuid


def gap_figures(sidecar: dict[str, Any]) -> tuple[int, float, dict[str, dict[str, float]]]:
    """(gaps, seconds, by cause) from a sidecar; gaps beyond the listed ones count as cause 'unlisted'."""
    rate = int(sidecar.get("rate") or 8000)
    by_cause: dict[str, dict[str, float]] = {}
    for gap in sidecar.get("gaps") or []:
        entry = by_cause.setdefault(str(gap.get("cause", "unknown")), {"count": 0, "seconds": 0.0})
        entry["count"] += 1
        entry["seconds"] += int(gap.get("frames", 0)) / rate
    unlisted = int(sidecar.get("gaps_unlisted") or 0)
    if unlisted:
        by_cause["unlisted"] = {"count": unlisted, "seconds": int(sidecar.get("gaps_unlisted_frames") or 0) / rate}
    for entry in by_cause.values():
        entry["seconds"] = round(entry["seconds"], 3)
    count = sum(int(e["count"]) for e in by_cause.values())
    return count, round(sum(e["seconds"] for e in by_cause.values()), 3), by_cause


def row_from_sidecar(sidecar: dict[str, Any], wav: os.PathLike | str, *, switch: str | None, controller_id: str,
                     upload_state: str, local: bool = True) -> dict[str, Any]:
    """The catalog row for a finished recording. ``switch``: the FreeSWITCH host, when known; else the sidecar's
    own (written there once uploaded or catalogued), else ''."""
    uuid = str(sidecar.get("uuid") or "")
    gaps, gap_seconds, by_cause = gap_figures(sidecar)
    duration = float(sidecar.get("duration_s") or 0.0)
    return {
        "recording_id": recording_id(uuid, wav),
        "uuid": uuid,
        "switch": switch or sidecar.get("switch") or "",
        "controller_id": controller_id,
        "caller": sidecar.get("caller") or "",
        "destination": sidecar.get("destination") or "",
        "rule": sidecar.get("rule") or "",
        "start_time": sidecar.get("start_time"),
        "end_time": sidecar.get("end_time"),
        "duration_s": duration,
        "rate": int(sidecar.get("rate") or 0),
        "channels": int(sidecar.get("channels") or 0),
        "bytes": int(sidecar.get("bytes") or 0),
        "close_reason": sidecar.get("close_reason"),
        "error": sidecar.get("error"),
        "gaps": gaps,
        "gap_seconds": gap_seconds,
        "gaps_by_cause": by_cause,
        "captured_s": float(sidecar.get("captured_s") or 0.0),
        "captured_ratio": float(sidecar.get("captured_ratio") or 0.0),
        "relay": sidecar.get("relay"),
        "metadata": sidecar.get("metadata"),
        "local_path": str(Path(wav).resolve()) if local else None,
        "object_url": sidecar.get("object_url"),
        "sha256": sidecar.get("sha256"),
        "upload_state": sidecar.get("upload_state") or upload_state,
        "uploaded_at": sidecar.get("uploaded_at"),
        "revision": new_revision(),
        "updated_at": iso_now(),
    }


def listed(row: dict[str, Any]) -> dict[str, Any]:
    """A row as listings print it (`recordings --json`, GET /api/recordings)."""
    return {name: row.get(name) for name in LISTED}
