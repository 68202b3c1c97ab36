"""The log format: key=value, the call first, one line per event, no timestamp of our own under systemd."""

from __future__ import annotations

import logging

from controller.ops.logs import KeyValueFormatter, quote, timestamps_wanted

UUID = "166eb301-3ca5-4fc5-9751-d8ca093577dd"


def record(message: str, *args, level=logging.INFO, name="controller.recorder", exc_info=None):
    return logging.LogRecord(name, level, __file__, 1, message, args, exc_info)


def test_a_call_line_puts_the_call_first():
    line = KeyValueFormatter(timestamps=False).format(record("call %s: stream detached (%s)", UUID, "eof"))
    assert line == f'call={UUID} level=info logger=recorder msg="stream detached (eof)"'


def test_a_line_about_no_call_has_no_call_field_and_values_are_quoted_when_needed():
    line = KeyValueFormatter(timestamps=False).format(record('reload: "a b"\nc', name="controller"))
    assert line == 'level=info logger=controller msg="reload: \\"a b\\"\\nc"'
    assert quote("plain-value_1.2:3/4") == "plain-value_1.2:3/4"


def test_a_traceback_stays_on_the_line():
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        line = KeyValueFormatter(timestamps=False).format(record("call %s failed", UUID, level=logging.ERROR,
                                                                 exc_info=sys.exc_info()))
    assert "\n" not in line
    assert line.startswith(f'call={UUID} level=error logger=recorder msg=failed exc="Traceback')
    assert "ValueError: boom" in line


def test_timestamps_only_outside_systemd_unless_told():
    line = KeyValueFormatter(timestamps=True).format(record("started"))
    assert line.startswith("ts=") and line.split(" ", 1)[0].endswith("Z")
    assert timestamps_wanted("auto", {"JOURNAL_STREAM": "8:12345"}) is False
    assert timestamps_wanted("auto", {}) is True
    assert timestamps_wanted("always", {"JOURNAL_STREAM": "8:1"}) is True
    assert timestamps_wanted("never", {}) is False
