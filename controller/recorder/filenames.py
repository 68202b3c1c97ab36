"""Where a recording goes: the configured file name template, rendered per call, and a free name. Pure file logic.

The one place the template's rules live: the config loader refuses a bad template with these messages at
start-up, and the recorder renders the same template for each call.
"""

from __future__ import annotations

import re
import string
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

from .sidecar import sidecar_path_for
from .wav import RecordingError, part_path_for

TEMPLATE_FIELDS = ("date", "time", "uuid", "destination", "caller", "rule")
TEMPLATE_RULES = (f"fields {', '.join('{' + f + '}' for f in TEMPLATE_FIELDS)}; a relative path that contains "
                  "{uuid} and ends in .wav, e.g. {date}/{uuid}.wav")
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")
_MAX_FIELD = 64


def _safe_component(value: str) -> str:
    # Only characters that mean nothing to a filesystem or a shell; no leading dot, so never "." or "..".
    cleaned = _UNSAFE.sub("_", str(value or "")).lstrip(".")[:_MAX_FIELD]
    return cleaned or "unknown"


class FilenameTemplate:
    """``{date}/{uuid}.wav`` and the like, relative to the recordings directory.

    Raises ValueError saying what is wrong with a template (the allowed forms are ``TEMPLATE_RULES``).
    """

    def __init__(self, template: str) -> None:
        if not isinstance(template, str) or not template.strip():
            raise ValueError("is empty")
        try:
            parsed = list(string.Formatter().parse(template))
        except ValueError as exc:
            raise ValueError(f"{template!r} is not a valid template ({exc})") from None
        used = set()
        for _literal, name, spec, conversion in parsed:
            if name is None:
                continue
            if name not in TEMPLATE_FIELDS or spec or conversion:
                written = f"{{{name}{'!' + conversion if conversion else ''}{':' + spec if spec else ''}}}"
                raise ValueError(f"{template!r} uses {written}, which is not a plain allowed field")
            used.add(name)
        if "\\" in template:
            raise ValueError(f"{template!r} contains a backslash; separate folders with '/'")
        if template.startswith(("/", "~")) or ".." in PurePosixPath(template).parts:
            raise ValueError(f"{template!r} leaves the recordings directory")
        if not template.endswith(".wav"):
            raise ValueError(f"{template!r} does not end in .wav")
        if "uuid" not in used:
            raise ValueError(f"{template!r} does not contain {{uuid}}, so two calls could share a file")
        self.template = template

    def render(self, *, moment: datetime, uuid: str, caller: str, destination: str, rule: str) -> PurePosixPath:
        moment = moment.astimezone(timezone.utc)
        values = {
            "date": moment.strftime("%Y-%m-%d"),
            "time": moment.strftime("%H%M%S"),
            "uuid": uuid,
            "caller": caller,
            "destination": destination,
            "rule": rule,
        }
        return PurePosixPath(self.template.format(**{k: _safe_component(v) for k, v in values.items()}))


def _taken(final: Path) -> bool:
    return final.exists() or part_path_for(final).exists() or sidecar_path_for(final).exists()


def choose_path(directory: Path, relative: PurePosixPath) -> Path:
    """The final WAV path for a new recording: inside ``directory``, never an existing name."""
    root = directory.resolve()
    final = (root / relative).resolve()
    if not final.is_relative_to(root):
        raise RecordingError(final, f"file name escapes the recordings directory {root}")
    if not _taken(final):
        return final
    # A second recording for the same call (a stream the controller had stopped, started again): keep both.
    for n in range(2, 1000):
        candidate = final.with_name(f"{final.stem}-{n}{final.suffix}")
        if not _taken(candidate):
            return candidate
    raise RecordingError(final, "999 recordings with this name already exist")
