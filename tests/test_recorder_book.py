"""The recorder's book of calls, without a socket or a file: what it decides for each turn of a call's life."""

from pathlib import Path
from types import SimpleNamespace

from controller.recorder.book import (AlreadyFinished, Admit, Attach, Detach, EndConnection, Finalise, OpenNew,
                                      RecordingBook, Refuse, Resume, RetrySidecar, Upkeep)
from controller.recorder.recording import Ending, StreamSpec

UUID = "166eb301-3ca5-4fc5-9751-d8ca093577dd"
OTHER = "0b0e5f4a-8c3d-4e8f-9a6b-1c2d3e4f5a6b"


def book(**options) -> RecordingBook:
    settings = {"max_streams": 2, "linger_s": 30.0, "end_grace_s": 5.0, "idle_timeout_s": 60.0,
                "sidecar_retry_s": 5.0}
    return RecordingBook(**(settings | options))


def connection(uuid=UUID, heartbeat_s=0):
    return SimpleNamespace(spec=StreamSpec(uuid=uuid, token="t", rate=8000, channels=1, heartbeat_s=heartbeat_s),
                           heard_at=0.0)


def recording(uuid=UUID):
    return SimpleNamespace(path=Path(f"/rec/{uuid}.wav"))


def streaming(b: RecordingBook, uuid=UUID, **conn_options):
    """A call whose connection is admitted, upgraded and writing its recording."""
    conn, rec = connection(uuid, **conn_options), recording(uuid)
    assert b.admit(uuid) == Admit(None)
    b.reserve(uuid, conn)
    assert b.opening(uuid, conn) == OpenNew()
    b.opened(uuid, rec)
    return conn, rec


# ---- admission ------------------------------------------------------------------------------------------------

def test_the_stream_limit_refuses_a_new_call_but_never_a_restart_of_a_call_already_streaming():
    b = book(max_streams=1)
    conn, _ = streaming(b)
    assert isinstance(b.admit(OTHER), Refuse) and "limit is 1" in b.admit(OTHER).reason
    assert b.admit(UUID) == Admit(conn)  # the module's restart: its new connection replaces the old one


def test_a_stopping_recorder_admits_nobody():
    b = book()
    b.stop(0.0)
    assert b.admit(UUID) == Refuse("503 Service Unavailable", "the recorder is shutting down")


def test_a_replaced_connection_ends_without_touching_the_recording_its_successor_continues():
    b = book()
    old, rec = streaming(b)
    new = connection()
    b.reserve(UUID, new)
    assert b.connection_ended(UUID, old, Ending.REPLACED, at=1.0) == []
    assert b.opening(UUID, new) == Attach(rec)
    assert b.opening(UUID, old) is None  # the old one, upgraded late, writes nothing


# ---- a connection ends ----------------------------------------------------------------------------------------

def test_a_lost_connection_detaches_and_a_limit_finalises():
    b = book()
    conn, rec = streaming(b)
    assert b.connection_ended(UUID, conn, Ending.EOF, at=3.0) == [Detach(UUID, rec, Ending.EOF, 3.0)]
    conn2 = connection()
    b.reserve(UUID, conn2)
    assert b.opening(UUID, conn2) == Attach(rec)
    b.opened(UUID, rec)
    [final] = b.connection_ended(UUID, conn2, Ending.MAX_BYTES, at=9.0)
    assert final == Finalise(UUID, rec, Ending.MAX_BYTES, None, close_code=1000, close_text="max_bytes")


def test_a_call_over_while_attached_ends_at_the_earlier_of_the_hangup_and_the_close_however_late_either_is_seen():
    b = book()
    conn, rec = streaming(b)
    assert b.call_ended(UUID, at=10.4, why=None, now=10.6) == []  # finalised when its connection ends
    [final] = b.connection_ended(UUID, conn, Ending.CLIENT_CLOSE, at=10.0, close_code=1000, close_text="")
    assert final.end_at == 10.0 and final.reason == Ending.CLIENT_CLOSE and final.call_over


def test_the_controllers_reason_is_written_unless_the_recorder_ended_the_file_first():
    b = book()
    conn, _ = streaming(b)
    b.call_ended(UUID, at=None, why="rule_max_duration", now=5.0)
    [final] = b.connection_ended(UUID, conn, Ending.CLIENT_CLOSE, at=5.1)
    assert final.reason == "rule_max_duration" and final.end_at == 5.1
    b2 = book()
    conn, _ = streaming(b2)
    b2.call_ended(UUID, at=None, why="rule_max_duration", now=5.0)
    assert b2.connection_ended(UUID, conn, Ending.WRITE_ERROR, at=5.1)[0].reason == Ending.WRITE_ERROR


def test_a_detached_call_that_ends_is_padded_to_the_hangup_unless_the_module_closed_at_the_hangup():
    b = book()
    conn, rec = streaming(b)
    b.connection_ended(UUID, conn, Ending.EOF, at=3.0)  # lost mid-call: silence up to the hangup
    assert b.call_ended(UUID, at=20.0, why=None, now=20.5) == [Finalise(UUID, rec, Ending.EOF, 20.0, call_over=True)]
    b = book()
    conn, rec = streaming(b)
    b.connection_ended(UUID, conn, Ending.CLIENT_CLOSE, at=3.0)  # the module's own close: the call ended there
    assert b.call_ended(UUID, at=3.2, why=None, now=9.0)[0].end_at == 3.0


def test_a_finished_call_gets_no_second_file_but_a_lingering_one_continues_its_own():
    b = book()
    conn, rec = streaming(b)
    [final] = b.connection_ended(UUID, conn, Ending.MAX_DURATION, at=4.0)
    b.finished(UUID, rec, final.reason, sidecar_saved=True, continuable=False, now=4.0, wall_now=1e9)
    late = connection()
    b.reserve(UUID, late)
    assert b.opening(UUID, late) == AlreadyFinished()

    b = book()
    conn, rec = streaming(b)
    b.connection_ended(UUID, conn, Ending.EOF, at=1.0)
    [final] = b.tick(40.0)
    assert final.reason == Ending.LINGER
    b.finished(UUID, rec, final.reason, sidecar_saved=True, continuable=True, now=40.0, wall_now=1e9)
    back = connection()
    b.reserve(UUID, back)
    assert b.opening(UUID, back) == Resume(rec.path, 1e9)


# ---- time -----------------------------------------------------------------------------------------------------

def test_the_tick_keeps_attached_recordings_up_ends_half_open_and_idle_connections():
    b = book()
    conn, rec = streaming(b)
    pinging, _ = streaming(b, OTHER, heartbeat_s=5)
    assert b.tick(10.0) == [Upkeep(conn, rec), Upkeep(pinging, b[OTHER].recording)]
    b.call_ended(UUID, at=10.0, why=None, now=10.0)
    actions = b.tick(61.0)  # the call's connection outlived the grace; the pinging one fell silent for 60 s
    assert [(type(a), a.ending) for a in actions] == [(EndConnection, Ending.CALL_END),
                                                      (EndConnection, Ending.IDLE_TIMEOUT)]


def test_unsaved_sidecars_are_retried_until_written_and_resumables_expire():
    b = book()
    conn, rec = streaming(b)
    b.call_ended(UUID, at=None, why=None, now=1.0)
    [final] = b.connection_ended(UUID, conn, Ending.CLIENT_CLOSE, at=1.0)
    b.finished(UUID, rec, final.reason, sidecar_saved=False, continuable=False, now=1.0, wall_now=1e9)
    assert b.tick(2.0) == [] and b.tick(6.0) == [RetrySidecar(UUID, rec)]
    b.sidecar_retried(UUID, saved=True, now=6.0)
    b.note_resumable(OTHER, Path("/rec/other.wav"), 1e9, now=6.0)
    b.tick(100.0)
    assert b.calls == {}  # nothing is kept for ever


def test_stop_ends_every_connection_and_finalises_detached_recordings_at_the_stop():
    b = book()
    conn, _ = streaming(b)
    _, detached = streaming(b, OTHER)
    b.connection_ended(OTHER, b[OTHER].conn, Ending.EOF, at=2.0)
    actions = b.stop(7.0)
    assert actions == [EndConnection(conn, Ending.SERVER_STOP, "the recorder is stopping"),
                       Finalise(OTHER, detached, Ending.SERVER_STOP, 7.0)]
