"""The log format: one line per event, ``key=value``, the call's uuid first, so that a line is found by the call
it is about (``journalctl -u fs-stream-controller | grep call=<uuid>``) and read by machines as easily as by
people. Under systemd (JOURNAL_STREAM set) the lines carry no timestamp of their own: journald adds one.

    ts=2026-11-30T02:03:04.567Z call=166eb301-... level=info logger=recorder msg="stream detached (eof)"

Messages name their call the one way the controller writes them ("call <uuid>: ..."); the formatter lifts
that into ``call=``. A traceback becomes one ``exc="..."`` field, its line breaks escaped.
"""

from __future__ import annotations

import logging
import os
import re
import time

_CALL_PREFIX = re.compile(r"call ([0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}):? ")
_PLAIN = re.compile(r"[A-Za-z0-9._:/@+-]+")


def quote(value: str) -> str:
    """A value as it goes on the line: bare when that is unambiguous, else double-quoted with escapes."""
    if _PLAIN.fullmatch(value):
        return value
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return f'"{escaped}"'


class KeyValueFormatter(logging.Formatter):
    def __init__(self, timestamps: bool) -> None:
        super().__init__()
        self.timestamps = timestamps

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        call = getattr(record, "call", None)
        if call is None:
            match = _CALL_PREFIX.match(message)
            if match:
                call, message = match.group(1), message[match.end():]
        fields = []
        if self.timestamps:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            fields.append(f"ts={stamp}.{int(record.msecs):03d}Z")
        if call:
            fields.append(f"call={call}")
        fields.append(f"level={record.levelname.lower()}")
        fields.append(f"logger={record.name.removeprefix('controller.') or record.name}")
        fields.append(f"msg={quote(message)}")
        if record.exc_info:
            fields.append(f"exc={quote(self.formatException(record.exc_info))}")
        return " ".join(fields)


def timestamps_wanted(setting: str, environ=os.environ) -> bool:
    """``auto``: none of our own under systemd, whose journal stamps every line."""
    if setting == "auto":
        return "JOURNAL_STREAM" not in environ
    return setting == "always"


def configure(level: str, timestamps: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(KeyValueFormatter(timestamps_wanted(timestamps)))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
