"""The JSON file beside each WAV: who called whom, under which rule, what arrived, how it ended. No gevent.

It is rewritten atomically (temporary file + rename) when the recording opens, resumes, gets a gap (at most
once a second), and ends, so a reader never sees half a JSON document, and a killed process leaves one that
says the call never finished and lists the gaps written up to a second before.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .wav import RecordingError

SIDECAR_SUFFIX = ".json"

# Text frames are metadata and the odd note; a client flooding them must not grow memory without bound.
MAX_TEXT_FRAMES = 1000
MAX_TEXT_CHARS = 4096
# A stream that stutters all call long makes a gap a second. Beyond this many they are counted, not listed,
# so the file stays small while the totals (captured_s) stay exact.
MAX_GAPS = 1000


def sidecar_path_for(wav_path: os.PathLike | str) -> Path:
    return Path(wav_path).with_suffix(SIDECAR_SUFFIX)


def iso_utc(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Sidecar:
    uuid: str
    caller: str
    destination: str
    rule: str
    rate: int
    channels: int
    wav: str  # the recording's file name, relative to the sidecar
    started_at: datetime
    metadata: str | None = None
    ended_at: datetime | None = None
    bytes: int = 0
    duration_s: float = 0.0
    frames: int = 0  # binary WebSocket frames received
    text_frames: list[dict[str, Any]] = field(default_factory=list)
    text_frames_dropped: int = 0
    dropped_bytes: int = 0  # partial samples that could not be kept
    close_reason: str | None = None
    close_code: int | None = None  # the WebSocket close code, from whichever side closed
    close_text: str | None = None
    error: str | None = None
    gaps: list[dict[str, Any]] = field(default_factory=list)
    gaps_unlisted: int = 0  # gaps beyond MAX_GAPS, all after the listed ones
    gaps_unlisted_frames: int = 0  # their silence, in sample frames
    connections: int = 0  # WebSocket connections that carried this call's audio
    captured_s: float = 0.0  # audio actually received (the WAV's duration less its gaps)
    relay: dict[str, Any] | None = None  # the voice agent the call was relayed to, and how that went
    switch: str = ""  # the switch's FreeSWITCH-Hostname, written from the start: a crash keeps it too

    def add_text(self, offset_s: float, text: str) -> None:
        """Keep a text frame with its arrival time (seconds into the recording), within limits."""
        if len(self.text_frames) >= MAX_TEXT_FRAMES:
            self.text_frames_dropped += 1
            return
        entry: dict[str, Any] = {"t": round(offset_s, 3), "text": text[:MAX_TEXT_CHARS]}
        if len(text) > MAX_TEXT_CHARS:
            entry["truncated_from"] = len(text)
        self.text_frames.append(entry)

    def add_gap(self, gap: dict[str, Any]) -> None:
        if len(self.gaps) >= MAX_GAPS:
            self.gaps_unlisted += 1
            self.gaps_unlisted_frames += int(gap["frames"])
            return
        self.gaps.append(gap)

    def to_dict(self) -> dict[str, Any]:
        return {
            "uuid": self.uuid,
            "caller": self.caller,
            "destination": self.destination,
            "rule": self.rule,
            **({"switch": self.switch} if self.switch else {}),
            "metadata": self.metadata,
            "wav": self.wav,
            "rate": self.rate,
            "channels": self.channels,
            "sample_width": 2,
            "start_time": iso_utc(self.started_at),
            "end_time": iso_utc(self.ended_at),
            "bytes": self.bytes,
            "duration_s": round(self.duration_s, 3),
            "frames": self.frames,
            "text_frames": self.text_frames,
            "text_frames_dropped": self.text_frames_dropped,
            "dropped_bytes": self.dropped_bytes,
            "close_reason": self.close_reason,
            "close_code": self.close_code,
            "close_text": self.close_text,
            "error": self.error,
            "gaps": self.gaps,
            "gaps_unlisted": self.gaps_unlisted,
            "gaps_unlisted_frames": self.gaps_unlisted_frames,
            "connections": self.connections,
            "captured_s": round(self.captured_s, 3),
            "captured_ratio": round(self.captured_s / self.duration_s, 4) if self.duration_s else 0.0,
            **({"relay": dict(self.relay)} if self.relay is not None else {}),
        }

    def write(self, path: os.PathLike | str) -> None:
        write_json_atomically(path, self.to_dict())


def write_json_atomically(path: os.PathLike | str, data: dict[str, Any]) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, ensure_ascii=False)
            f.write("\n")
        os.replace(tmp, path)
    except OSError as exc:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise RecordingError(path, "cannot write the sidecar", exc) from exc
