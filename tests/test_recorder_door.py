"""The recorder's front door, through real sockets: what a stranger on the network can learn, how much of
the process one client can hold, what the log shows under a flood, and TLS (wss://) for the module.
"""

import logging
import re
import select
import socket
import ssl

import gevent
import pytest

from harness import self_signed_certificate, wait_until
from test_recorder_server import (OP_BINARY, OTHER, TIMEOUT, TOKEN, UUID, FakeClock, RawClient, captured_frames,
                                  close_frame, frame, read_wav, recorder,  # noqa: F401  (the fixture, by name)
                                  upgrade_request)


def refusal(rec, captures, uuid, headers):
    """(status, body with the uuid masked) for an upgrade request for `uuid` with these headers."""
    client, (status, _, body) = rec.connect(captures, path=f"/calls/{uuid}", headers=headers)
    client.close()
    return status, body.decode().replace(uuid, "<uuid>")


# ---- no live-call oracle ----------------------------------------------------------------------------------

def test_an_unknown_call_and_a_wrong_token_get_the_same_answer(recorder, captures):
    """Whether a call is live is not given away: an unknown call uuid and a live call with a wrong token both
    get 403 with the same text."""
    rec = recorder()
    rec.expect(uuid=UUID)
    wrong = {"Authorization": "Bearer not-the-token"}
    unknown = refusal(rec, captures, OTHER, wrong)
    live = refusal(rec, captures, UUID, wrong)
    assert unknown[0] == 403
    assert unknown == live
    assert rec.files() == []


def test_a_missing_authorization_header_is_401_for_known_and_unknown_calls(recorder, captures):
    """Without credentials the answer is 401 whether or not the call is live."""
    rec = recorder()
    rec.expect(uuid=UUID)
    unknown = refusal(rec, captures, OTHER, {})
    live = refusal(rec, captures, UUID, {})
    assert unknown[0] == live[0] == 401
    assert unknown == live


# ---- how much one client can hold ---------------------------------------------------------------------------

def test_an_oversized_request_head_is_refused_after_a_few_kilobytes(recorder, captures):
    """A request whose headers run to megabytes (99 of 60 KB) is answered 431 or 400, and the connection is
    closed, while the client is still sending: the recorder never reads more than a small cap of it."""
    rec = recorder()  # the default cap, 16 KB
    rec.expect()
    pad = {f"X-Pad-{n:02d}": "a" * 60_000 for n in range(99)}
    request = upgrade_request((captures / "ws/mono_8000/conn1.request.bin").read_bytes(), f"/calls/{UUID}",
                              rec.port, {"Authorization": f"Bearer {TOKEN}", **pad})
    client = RawClient(rec.port)
    sent, answered, reset = 0, False, False
    while sent < len(request):
        try:
            sent += client.sock.send(request[sent:sent + 16384])
        except (BrokenPipeError, ConnectionResetError):
            reset = True
            break
        gevent.sleep(0)  # a yield: the recorder reads as the bytes come
        if select.select([client.sock], [], [], 0)[0]:
            answered = True
            break
    assert answered or reset, f"all {len(request)} bytes were taken without an answer"
    assert sent < len(request)
    if answered:
        try:
            head = client.sock.recv(65536).split(b"\r\n", 1)[0]
        except ConnectionResetError:
            head = None  # the answer was lost to the reset: closed all the same
        assert head is None or head.split(b" ")[1] in (b"431", b"400"), head
    assert rec.files() == []


def test_a_request_trickled_past_the_handshake_timeout_is_dropped(recorder):
    """A client that sends its request a byte at a time, each read quick, is dropped at the handshake
    deadline, long before its request is complete."""
    rec = recorder(handshake_timeout_s=0.5)
    client = RawClient(rec.port)
    request = f"GET /calls/{UUID} HTTP/1.1\r\nHost:x\r\nX-Pad:{'a' * 1000}".encode()
    trickled = []

    def trickle():
        for byte in request:
            client.send(bytes([byte]))
            trickled.append(byte)
            gevent.sleep(0.05)  # the trickle itself, not a wait for anything

    trickler = gevent.spawn(trickle)
    try:
        try:
            assert client.sock.recv(1) == b""
        except ConnectionResetError:
            pass  # closed with a trickled byte unread: closed all the same
        assert len(trickled) < len(request) // 2
    finally:
        trickler.kill()
        client.close()


def test_connections_in_their_handshake_are_capped_per_source_address(recorder, captures):
    """Four connections from one address that send nothing hold four handshake slots; a fifth is turned away
    at once; once the four are gone, a stream from that address is admitted as usual."""
    rec = recorder(max_pending_per_address=4, handshake_timeout_s=30)
    rec.expect()
    idle = [RawClient(rec.port) for _ in range(4)]
    fifth = RawClient(rec.port)
    fifth.sock.settimeout(2.0)
    try:
        answer = b""
        while chunk := fifth.sock.recv(4096):
            answer += chunk
    except ConnectionResetError:
        answer = b""
    except socket.timeout:
        pytest.fail("the fifth pending connection from one address was still open after 2 s")
    assert answer == b"" or answer.startswith(b"HTTP/1.1 503"), answer[:200]
    for client in idle:
        client.sock.shutdown(socket.SHUT_WR)  # gone without a request: the recorder closes its side
        try:
            while client.sock.recv(4096):
                pass
        except ConnectionResetError:
            pass
        client.close()
    client, (status, _, _) = rec.connect(captures)
    assert status == 101
    client.send(frame(OP_BINARY, b"\x01\x00" * 160) + close_frame(1000))
    assert client.recv_close()[0] == 1000
    assert rec.wait_closed() == "client_close"


# ---- the log under a flood ----------------------------------------------------------------------------------

def test_a_flood_of_refusals_is_rate_limited_in_the_log(recorder, captures, caplog):
    """500 upgrades with a wrong token in a minute give about 20 warnings, not 500; a later line says how many
    similar lines were left out. (The limiter's minute is read on the recorder's clock.)"""
    clock = FakeClock()
    rec = recorder(clock=clock, tick_interval_s=0.05)
    rec.expect()
    wrong = {"Authorization": "Bearer not-the-token"}

    def warnings():
        return [r for r in caplog.records
                if r.name.startswith("controller.recorder") and r.levelno == logging.WARNING]

    with caplog.at_level(logging.WARNING, logger="controller.recorder"):
        for n in range(500):
            clock.now = 1000.0 + n * 0.1  # 50 s: all in one minute
            client, (status, _, _) = rec.connect(captures, headers=wrong)
            client.close()
            assert status == 403
        logged = len(warnings())
        assert logged <= 25, f"{logged} warning lines for 500 refusals"
        refusals_logged = sum("suppressed" not in r.getMessage() for r in warnings())
        clock.now = 1000.0 + 61.0  # the minute is over
        client, (status, _, _) = rec.connect(captures, headers=wrong)
        client.close()

        def summaries():
            return [r.getMessage() for r in caplog.records if "suppressed" in r.getMessage()]

        wait_until(lambda: any(str(500 - refusals_logged) in re.findall(r"\d+", m) for m in summaries()), 2.0,
                   f"a line saying {500 - refusals_logged} similar lines were suppressed (seen: {summaries()})")
    assert TOKEN not in caplog.text


# ---- wss:// -------------------------------------------------------------------------------------------------

@pytest.fixture
def certificate(tmp_path):
    return self_signed_certificate(tmp_path, "recorder")


class TlsClient(RawClient):
    """The raw client over TLS, verifying the recorder's certificate, as mod_audio_stream does for wss://."""

    def __init__(self, port, cafile):
        context = ssl.create_default_context(cafile=str(cafile))
        raw = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.sock = context.wrap_socket(raw, server_hostname="127.0.0.1")
        self.buf = b""


def test_a_wss_stream_is_recorded_byte_for_byte_and_plain_ws_gets_nothing(recorder, captures, certificate):
    """With a TLS context the recorder speaks wss://: the module's stream over TLS is recorded exactly; a plain
    ws:// client on that port gets no upgrade and no recording."""
    cert, key = certificate
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))
    rec = recorder(ssl_context=context, handshake_timeout_s=2.0)
    rec.expect()
    captured = (captures / "ws/mono_8000/conn1.request.bin").read_bytes()
    request = upgrade_request(captured, f"/calls/{UUID}", rec.port, {"Authorization": f"Bearer {TOKEN}"})

    plain = RawClient(rec.port)
    plain.send(request)
    answer = b""
    try:
        while chunk := plain.sock.recv(4096):
            answer += chunk
    except ConnectionResetError:
        pass
    plain.close()
    assert not answer.startswith(b"HTTP/1.1 101")
    assert rec.files() == [] and rec.events.empty()

    client = TlsClient(rec.port, cert)
    status, _, _ = client.handshake(request)
    assert status == 101
    frames = captured_frames(captures / "ws/mono_8000")
    client.send(b"".join(frame(op, payload) for op, payload in frames))
    assert client.recv_close()[0] == 1000
    assert rec.wait_closed() == "client_close"
    wav_path, _ = rec.only_recording()
    assert read_wav(wav_path)[3] == (captures / "ws/mono_8000/conn1.audio.raw").read_bytes()
