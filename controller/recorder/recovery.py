"""Start-up recovery: what an earlier process left in the recordings directory, made whole. Pure file logic.

Two things can be left behind, and one walk of the directory finds both:

- a ``*.wav.part`` (the process was killed mid-call): its header is repaired so it plays, it gets its final
  name, and its sidecar is marked ``recovered`` with the gaps clipped to what reached the disk. The call may
  still be live: the server continues the file when the controller announces it again.
- a finished WAV whose sidecar still describes an open recording (the final sidecar could not be written,
  e.g. the disk was full, and the process ended before a retry worked): the sidecar is repaired from the WAV.
  Only sidecars older than their WAV are read, so a large archive costs two ``stat`` calls per recording.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..channel_uuid import normalise_uuid
from .sidecar import SIDECAR_SUFFIX, sidecar_path_for, write_json_atomically
from .wav import HEADER_SIZE, PART_SUFFIX, RecordingError, RepairResult, final_path_for, parse_header, repair

log = logging.getLogger("controller.recorder")

UNFINISHED_NOTE = "the recorder stopped without finalising this recording; repaired at start-up"
SIDECAR_NOTE = ("the recorder could not write this sidecar when the recording ended (e.g. a full disk); "
                "repaired at start-up from the WAV")


@dataclass(frozen=True)
class Recovered:
    final_path: Path
    repair: RepairResult
    renamed: bool  # False when a file with the final name already existed: the .part is kept as it is
    last_write: float = 0.0  # wall-clock time the earlier process last wrote audio (the file's mtime)
    uuid: str | None = None  # the call, from the sidecar (so a live call can continue the same file)


def recover_unfinished(directory: os.PathLike | str) -> list[Recovered]:
    """Repair what an earlier process left (see the module docstring); returns the ``.part`` files recovered.

    Meant for start-up, before the server accepts streams. One file that cannot be saved (empty, not ours,
    unreadable) is logged and left as it is: it must not keep the recorder from starting.
    """
    parts, finished = _walk(Path(directory))
    results = []
    for part in parts:
        try:
            results.append(_recover_part(part))
        except (RecordingError, OSError) as exc:
            log.error("cannot recover unfinished recording %s (%s); leaving the file as it is", part, _why(exc))
    for wav in finished:
        try:
            _repair_stale_sidecar(wav)
        except (RecordingError, OSError) as exc:
            log.error("cannot repair the sidecar of %s (%s); leaving it as it is", wav, _why(exc))
    return results


def _why(exc: Exception) -> str:
    if isinstance(exc, RecordingError):
        return f"{exc.problem}{f': {exc.cause}' if exc.cause else ''}"
    return str(exc)


def _walk(root: Path) -> tuple[list[Path], list[Path]]:
    """Every ``.wav.part``, and every finished ``.wav`` with a sidecar beside it, in a stable order."""
    parts, finished = [], []
    for folder, _dirs, names in os.walk(root):
        present = set(names)
        for name in names:
            if name.endswith(".wav" + PART_SUFFIX):
                parts.append(Path(folder, name))
            elif name.endswith(".wav") and name[:-4] + SIDECAR_SUFFIX in present:
                finished.append(Path(folder, name))
    return sorted(parts), sorted(finished)


def _recover_part(part: Path) -> Recovered:
    last_write = part.stat().st_mtime
    fixed = repair(part)
    final = final_path_for(part)
    renamed = not final.exists()
    if renamed:
        try:
            os.replace(part, final)
        except OSError as exc:
            raise RecordingError(part, "cannot rename the repaired recording", exc) from exc
    data = _read_sidecar(final)
    uuid = normalise_uuid(str(data.get("uuid", ""))) if data is not None else None
    if data is not None and not data.get("close_reason"):
        _mark_recovered(sidecar_path_for(final), data, fixed.data_bytes, fixed.rate, fixed.channels, UNFINISHED_NOTE)
    log.warning("recovered unfinished recording %s: %d bytes of audio, %d trailing bytes cut",
                final if renamed else part, fixed.data_bytes, fixed.truncated_bytes)
    return Recovered(final, fixed, renamed, last_write, uuid)


def _repair_stale_sidecar(wav: Path) -> None:
    side = sidecar_path_for(wav)
    # The final sidecar is written after the WAV is closed: one older than its WAV may never have been.
    if side.stat().st_mtime_ns >= wav.stat().st_mtime_ns:
        return
    data = _read_sidecar(wav)
    if data is None or data.get("close_reason"):
        return
    try:
        with open(wav, "rb") as f:
            found = parse_header(f.read(HEADER_SIZE), wav)
    except OSError as exc:
        raise RecordingError(wav, "cannot read the WAV header", exc) from exc
    _mark_recovered(side, data, found.data_bytes, found.rate, found.channels, SIDECAR_NOTE)
    log.warning("repaired the sidecar of %s: it still described an open recording", wav)


def _read_sidecar(wav: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(sidecar_path_for(wav).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # no sidecar (or an unreadable one): the WAV is what matters
    return data if isinstance(data, dict) else None


def _mark_recovered(path: Path, data: dict[str, Any], data_bytes: int, rate: int, channels: int, note: str) -> None:
    """Make a sidecar agree with the WAV beside it: its length, and the gaps that the WAV really holds."""
    total = data_bytes // (2 * channels)
    # A gap is saved before its silence reaches the disk: keep only what the file really holds.
    gaps, listed_end = [], 0
    for gap in data.get("gaps") or []:
        try:
            start, frames = int(gap["start_frame"]), min(int(gap["frames"]), total - int(gap["start_frame"]))
        except (KeyError, TypeError, ValueError):
            continue
        if frames > 0:
            gaps.append(dict(gap, frames=frames, length_s=round(frames / rate, 3)))
            listed_end = max(listed_end, start + frames)
    try:  # the unlisted gaps all come after the listed ones
        unlisted = min(int(data.get("gaps_unlisted_frames") or 0), total - listed_end)
    except (TypeError, ValueError):
        unlisted = 0
    captured = (total - sum(g["frames"] for g in gaps) - unlisted) / rate
    duration = total / rate
    data.update(close_reason="recovered", bytes=data_bytes, duration_s=round(duration, 3), gaps=gaps,
                gaps_unlisted_frames=unlisted,
                captured_s=round(captured, 3), captured_ratio=round(captured / duration, 4) if duration else 0.0,
                error=note)
    write_json_atomically(path, data)


# ---- across a clean stop ------------------------------------------------------------------------------------

# Beside the recordings: what the last stop() finalised while the calls were still live, so the next start
# can continue those files instead of beginning second ones.
STOPPED_STATE = ".recorder-stopped.json"


def save_stopped(directory: Path, stopped_at: float, recordings: dict[str, str]) -> None:
    """Note the recordings a stop finalised while their calls were live (uuid -> path), at wall time."""
    if not recordings:
        return
    try:
        write_json_atomically(directory / STOPPED_STATE, {"stopped_at": stopped_at, "recordings": recordings})
    except RecordingError as exc:
        log.error("cannot note the recordings to continue after a restart: %s", exc)


def load_stopped(directory: Path) -> tuple[float, dict[str, Path]]:
    """What the last stop noted (read once: the note is removed): its wall time and uuid -> path, only paths
    inside ``directory`` that still exist."""
    path = directory / STOPPED_STATE
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        path.unlink()
        stopped_at = float(state["stopped_at"])
        recordings = dict(state["recordings"])
    except FileNotFoundError:
        return 0.0, {}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring %s: %s", path, exc)
        return 0.0, {}
    root = directory.resolve()
    found = {}
    for uuid, name in recordings.items():
        final = Path(str(name)).resolve()
        uuid = normalise_uuid(str(uuid))
        if uuid and final.is_relative_to(root) and final.exists():
            found[uuid] = final
    return stopped_at, found
