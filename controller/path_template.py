"""A relative path template for one recording (``{date}/{uuid}.wav`` and the like), as both the local file name
(recorder/filenames.py) and the bucket's key (storage/keys.py) have it: the rules checked once, at start-up, with
a message that says what is wrong, and the same template filled per recording. Pure.
"""

from __future__ import annotations

import re
import string
from pathlib import PurePosixPath

_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")
_MAX_FIELD = 64


def safe_component(value: object) -> str:
    """A field's value as a path component: only characters that mean nothing to a filesystem, a shell or an
    object store; no leading dot, so never "." or ".."."""
    cleaned = _UNSAFE.sub("_", str(value or "")).lstrip(".")[:_MAX_FIELD]
    return cleaned or "unknown"


class PathTemplate:
    """Raises ValueError saying what is wrong: a field not in `fields` (or with a format spec), a backslash, a
    path that is not relative (``outside``: how to say so), no ``.wav`` at the end, no ``{uuid}`` (then two
    calls could share one ``thing``)."""

    def __init__(self, template: str, fields: tuple[str, ...], *, outside: str, thing: str,
                 double_slash: bool = True) -> None:
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
            if name not in fields or spec or conversion:
                written = f"{{{name}{'!' + conversion if conversion else ''}{':' + spec if spec else ''}}}"
                raise ValueError(f"{template!r} uses {written}, which is not a plain allowed field")
            used.add(name)
        if "\\" in template:
            raise ValueError(f"{template!r} contains a backslash; separate folders with '/'")
        if (template.startswith(("/", "~")) or ".." in PurePosixPath(template).parts
                or (not double_slash and "//" in template)):
            raise ValueError(f"{template!r} {outside}")
        if not template.endswith(".wav"):
            raise ValueError(f"{template!r} does not end in .wav")
        if "uuid" not in used:
            raise ValueError(f"{template!r} does not contain {{uuid}}, so two calls could share a {thing}")
        self.template = template

    def fill(self, values: dict[str, object]) -> str:
        return self.template.format(**{name: safe_component(value) for name, value in values.items()})
