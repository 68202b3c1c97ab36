"""Tests drive real sockets from gevent greenlets; patch the stdlib before anything imports it."""

from gevent import monkey

monkey.patch_all()

import pathlib  # noqa: E402

import pytest  # noqa: E402

FIXTURES = pathlib.Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "freeswitch-1.10.12"


@pytest.fixture(scope="session")
def captures() -> pathlib.Path:
    """The byte-exact captures from a real FreeSWITCH 1.10.12 + mod_audio_stream (../shared/fixtures)."""
    if not FIXTURES.is_dir():
        pytest.skip(f"captures not found at {FIXTURES}")
    return FIXTURES
