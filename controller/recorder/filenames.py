"""Where a recording goes: the configured file name template, rendered per call, and a free name. Pure file logic.

The one place the template's rules live: the config loader refuses a bad template with these messages at
start-up, and the recorder renders the same template for each call.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

from ..path_template import PathTemplate
from .sidecar import sidecar_path_for
from .wav import RecordingError, part_path_for

TEMPLATE_FIELDS = ("date", "time", "uuid", "destination", "caller", "rule")
TEMPLATE_RULES = (f"fields {', '.join('{' + f + '}' for f in TEMPLATE_FIELDS)}; a relative path that contains "
                  "{uuid} and ends in .wav, e.g. {date}/{uuid}.wav")


class FilenameTemplate(PathTemplate):
    """``{date}/{uuid}.wav`` and the like, relative to the recordings directory.

    Raises ValueError saying what is wrong with a template (the allowed forms are ``TEMPLATE_RULES``).
    """

    def __init__(self, template: str) -> None:
        super().__init__(template, TEMPLATE_FIELDS, outside="leaves the recordings directory", thing="file")

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
        return PurePosixPath(self.fill(values))


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
