"""A hostile voice agent, run as its own process (so its flood costs this process nothing): it accepts the
WebSocket upgrade, never reads again, and for `seconds` per connection floods tiny Twilio `media` messages
mixed with binary garbage, as fast as the socket takes them. It prints its port, serves connections one after
another, and exits after `lifetime` seconds.

    python hostile.py SECONDS LIFETIME
"""

import base64
import hashlib
import json
import socket
import sys
import time


def frame(opcode: int, payload: bytes) -> bytes:
    n = len(payload)
    head = bytes((0x80 | opcode, n)) if n < 126 else bytes((0x80 | opcode, 126)) + n.to_bytes(2, "big")
    return head + payload


def upgrade(conn: socket.socket) -> bool:
    request = b""
    while b"\r\n\r\n" not in request:
        chunk = conn.recv(4096)
        if not chunk:
            return False
        request += chunk
    key = next(line.split(b":", 1)[1].strip() for line in request.split(b"\r\n")
               if line.lower().startswith(b"sec-websocket-key:"))
    accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
    conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
    return True


def main() -> None:
    seconds, lifetime = float(sys.argv[1]), float(sys.argv[2])
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    print(listener.getsockname()[1], flush=True)
    media = frame(1, json.dumps({"event": "media", "streamSid": "MZ0", "media": {"payload": "/w=="}}).encode())
    batch = media * 40 + frame(2, b"\xde\xad\xbe\xef" * 3)
    ends = time.monotonic() + lifetime
    while time.monotonic() < ends:
        listener.settimeout(max(0.01, ends - time.monotonic()))
        try:
            conn, _ = listener.accept()
        except OSError:
            break
        conn.settimeout(2.0)
        try:
            if upgrade(conn):
                stop = min(ends, time.monotonic() + seconds)
                while time.monotonic() < stop:
                    conn.sendall(batch)
        except OSError:
            pass  # the controller ended the connection: good; serve the next
        conn.close()


if __name__ == "__main__":
    main()
