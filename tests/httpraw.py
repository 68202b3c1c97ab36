"""HTTP requests written byte for byte on a socket, as a browser (or anyone) may send them: any Host, Origin,
Content-Type, or none; the answer read back as the client sees it."""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass


@dataclass
class Answer:
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes

    def json(self):
        return json.loads(self.body)

    @property
    def error(self) -> str:
        return self.json().get("error", "")


def request(port: int, method: str, path: str, *, headers: dict[str, str] | None = None, body: bytes = b"",
            host: str | None = None, timeout: float = 30.0) -> Answer:
    """One request to 127.0.0.1:port. ``host``: the Host header (default 127.0.0.1:port; "" leaves it out)."""
    lines = [f"{method} {path} HTTP/1.1"]
    host = f"127.0.0.1:{port}" if host is None else host
    if host:
        lines.append(f"Host: {host}")
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    lines.append("Connection: close")
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, payload = received.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    answer_headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        answer_headers[name.strip().lower()] = value.strip()
    return Answer(int(status_line.split(" ")[1]), answer_headers, payload)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
