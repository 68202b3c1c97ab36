"""The settings the controller runs with: frozen dataclasses, and each field's default, written here once.

A leaf: it imports nothing from the controller, so the loader (``config.py``, which fills these from YAML),
the rule matching (``rules.py``) and every other module can import it without forming an import cycle.

A field declared with ``secret(...)`` is never shown: reprs print '***' for it (a mapping keeps its keys),
and the loader keeps its value out of error messages.
"""

from __future__ import annotations

import re
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Mapping

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# auto: none of our own when JOURNAL_STREAM is set (run by systemd, whose journal stamps every line).
TIMESTAMPS = ("auto", "always", "never")
RELAY_PROTOCOLS = ("twilio", "raw")
DIRECTIONS = ("inbound", "outbound", "any")


def secret(default: Any = MISSING, *, default_factory: Any = MISSING, hash: bool | None = None) -> Any:
    """A dataclass field whose value is kept out of reprs and error messages."""
    return field(default=default, default_factory=default_factory, hash=hash, metadata={"secret": True})


def is_secret(spec: Any) -> bool:
    """Whether a dataclasses.Field was declared with ``secret(...)``."""
    return bool(spec.metadata.get("secret"))


class _MaskedRepr:
    """A repr that shows '***' for the fields declared secret (a mapping keeps its keys)."""

    def __repr__(self) -> str:
        parts = []
        for spec in fields(self):  # type: ignore[arg-type]
            value = getattr(self, spec.name)
            if is_secret(spec) and isinstance(value, Mapping):
                shown = repr({key: "***" for key in value})
            elif is_secret(spec) and value is not None:
                shown = "'***'"
            else:
                shown = repr(value)
            parts.append(f"{spec.name}={shown}")
        return f"{type(self).__name__}({', '.join(parts)})"


@dataclass(frozen=True)
class ReconnectConfig:
    initial_s: float = 0.5
    max_s: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.2


@dataclass(frozen=True, repr=False)
class EslConfig(_MaskedRepr):
    password: str = secret()
    host: str = "127.0.0.1"
    port: int = 8021
    connect_timeout_s: float = 5.0
    command_timeout_s: float = 5.0
    reconnect: ReconnectConfig = field(default_factory=ReconnectConfig)
    # Nothing at all received for this long (FreeSWITCH sends HEARTBEAT every 20 s): the connection is
    # taken for half-open, dropped and made again.
    liveness_timeout_s: float = 60.0


@dataclass(frozen=True)
class TlsConfig:
    """The certificate the recorder's port presents; with it the port speaks TLS only (FreeSWITCH uses wss://)."""

    certfile: str  # PEM: the recorder's certificate, then any intermediate certificates
    keyfile: str  # PEM: its private key, not encrypted (no one is there to type a passphrase)


@dataclass(frozen=True, repr=False)
class RecorderConfig(_MaskedRepr):
    public_url: str | None  # None: listen_port is 0, the URL is derived from the port the recorder gets
    listen_host: str = "127.0.0.1"
    listen_port: int = 8080
    directory: str = "./recordings"
    filename_template: str = "{date}/{uuid}.wav"
    max_call_s: float = 4 * 3600.0
    max_call_bytes: int = 1024**3
    token: str | None = secret(None)  # None: the app makes a random token per call
    # Health checks and doctor report trouble when the recordings directory has less free space than this.
    min_free_mb: int = 500
    # None: plain WebSocket (ws://, or wss:// through a TLS proxy in front). Set: TLS on listen_port itself.
    tls: TlsConfig | None = None


@dataclass(frozen=True)
class MetricsConfig:
    # False: no HTTP listener at all (metrics are on unless switched off).
    enabled: bool = True
    listen_host: str = "127.0.0.1"
    listen_port: int = 9464
    # /healthz and /metrics answer without the API token on a loopback listener; on any other address only
    # when this says so (and the controller warns at start that they are exposed).
    public: bool = False


@dataclass(frozen=True, repr=False)
class HttpConfig(_MaskedRepr):
    """What guards the HTTP listener's API (the listener itself is metrics.listen_host:listen_port)."""

    # The API token: `Authorization: Bearer <token>` on /calls, POST /doctor/chain and every endpoint added
    # later. None: those endpoints answer 403, and the listener must be on a loopback address.
    token: str | None = secret(None)
    # Host names (besides IP addresses, localhost, listen_host and this machine's own name) that requests may
    # name in their Host header: a name behind which a browser could be pointed at us (DNS rebinding) is not.
    allowed_hosts: tuple[str, ...] = ()


@dataclass(frozen=True)
class LimitsConfig:
    # The module's free build streams at most 10 channels at once; beyond the cap calls are not streamed.
    max_streams: int = 10
    # The recorder's own caps: WebSocket streams it records at once (beyond: 503 before the upgrade), and
    # TCP connections it serves at once (upgrades in progress and refused clients included). Sized from the
    # benchmark: above what one core sustains, so the caps guard against floods, not against load.
    recorder_max_streams: int = 2000
    recorder_max_connections: int = 4000
    # Connections from one source address that may be in their HTTP handshake (not yet admitted) at once,
    # so that one host cannot hold the connection slots with upgrades it never finishes.
    recorder_max_pending_per_address: int = 64


@dataclass(frozen=True)
class LoggingConfig:
    level: str = "INFO"  # one of LOG_LEVELS
    timestamps: str = "auto"  # one of TIMESTAMPS


@dataclass(frozen=True, repr=False)
class HookConfig(_MaskedRepr):
    """What is done with each finished recording: its sidecar JSON POSTed to url, and/or command run."""

    url: str | None = None  # http:// or https://; the finished recording's sidecar JSON is POSTed there
    # Extra request headers, e.g. Authorization: Bearer ${HOOK_TOKEN}; the values are secret.
    headers: Mapping[str, str] = secret(default_factory=dict, hash=False)
    command: tuple[str, ...] | None = None  # argv; the WAV path and the sidecar path are appended
    timeout_s: float = 10.0  # per attempt
    max_attempts: int = 8  # per finished recording; waits 1 s, doubling to 300 s, between attempts


@dataclass(frozen=True, repr=False)
class RelayConfig(_MaskedRepr):
    """A voice agent each of a rule's calls is relayed to, live, over its own WebSocket."""

    url: str = secret()  # ws:// or wss://; may carry the agent's key in its query, so it is secret
    protocol: str = "twilio"  # one of RELAY_PROTOCOLS: twilio (Media Streams, as Twilio sends it) or raw
    headers: Mapping[str, str] = secret(default_factory=dict, hash=False)  # on the upgrade
    custom_parameters: Mapping[str, str] = field(default_factory=dict, hash=False)  # in Twilio's start message
    talk_back: bool = True  # the agent's audio is played into the call
    max_queue_s: float = 2.0  # audio queued toward a slow agent; beyond it the oldest is dropped (and counted)
    # wss://: the agent's certificate is verified against these CAs (a PEM file) instead of the system's.
    ca_file: str | None = None
    # ws:// with credentials (headers, or a query in the URL) to a host that is not loopback is refused unless
    # this says the network between is trusted. It never turns off the certificate check of wss://.
    insecure: bool = False


@dataclass(frozen=True)
class TextPattern:
    """An exact string, or ``/regex/`` that must match the whole value."""

    source: str  # as written in the configuration
    regex: re.Pattern[str] | None = None

    @classmethod
    def parse(cls, text: str) -> "TextPattern":
        """Raises ValueError naming the regex problem."""
        if len(text) >= 2 and text.startswith("/") and text.endswith("/"):
            body = text[1:-1]
            if not body:
                raise ValueError("the regex between the slashes is empty")
            try:
                return cls(text, re.compile(body))
            except re.error as exc:
                raise ValueError(f"bad regex {text}: {exc}") from None
        return cls(text)

    def matches(self, value: str) -> bool:
        if self.regex is not None:
            # fullmatch: /9\d{3}/ must not also match 19999 or 99990.
            return self.regex.fullmatch(value) is not None
        return value == self.source

    def __str__(self) -> str:
        return self.source


@dataclass(frozen=True)
class Match:
    destination: TextPattern | None = None
    caller: TextPattern | None = None
    context: TextPattern | None = None
    # One of DIRECTIONS. On a bridged call the outbound B-leg often shows the same destination and may answer
    # first; matching inbound only by default keeps one stream per call.
    direction: str = "inbound"


@dataclass(frozen=True)
class Rule:
    name: str
    match: Match
    mix: str = "mono"
    rate: int = 8000
    buffer_ms: int = 20
    start_delay_s: float = 0.0
    max_duration_s: float | None = None
    # A mapping, sent as a JSON object in the first text frame; not part of the hash (dicts are not hashable).
    metadata: Mapping[str, Any] | None = field(default=None, hash=False)
    heartbeat_s: int = 0
    deflate: bool = False
    enabled: bool = True
    max_streams: int | None = None  # at most this many calls of this rule stream at once (None: no cap)
    # What is done with this rule's finished recordings, instead of the top-level hook (None: that one).
    hook: HookConfig | None = field(default=None, hash=False)
    record: bool = True  # false: the call's audio is relayed only, no WAV is kept
    relay: RelayConfig | None = field(default=None, hash=False)  # live audio to a voice agent
    line: int = 0  # where the rule starts in its file, for log messages


@dataclass(frozen=True, repr=False)
class CatalogConfig(_MaskedRepr):
    """The catalog: one row per finished recording, searchable (controller/catalog/)."""

    enabled: bool = True
    # sqlite:///<path> or postgresql://user:password@host/db; secret (a password may ride in it).
    # None: sqlite:///<recorder.directory>/catalog.sqlite3 (a file beside the recordings, nothing to install).
    url: str | None = secret(None)
    controller_id: str | None = None  # this controller's name in every row it writes (None: the host's name)


@dataclass(frozen=True)
class UploadConfig:
    """Where each finished recording is uploaded: an S3-compatible bucket (controller/storage/)."""

    url: str  # s3://bucket or s3://bucket/prefix
    endpoint_url: str | None = None  # None: AWS S3 itself; http(s)://host:port for MinIO, Ceph and the like
    region: str | None = None  # None: from the environment or the AWS configuration
    key_template: str = "{date}/{switch}/{uuid}.wav"  # below the URL's prefix
    part_size_mb: int = 8  # a WAV larger than this goes up in parts of this size (multipart)
    concurrency: int = 2  # uploads at once


@dataclass(frozen=True)
class StorageConfig:
    upload: UploadConfig | None = None  # None: recordings stay on local disk only
    # Seconds after its upload is verified that a recording's local WAV and sidecar are removed; None: never.
    delete_local_after: float | None = None


@dataclass(frozen=True)
class Config:
    esl: EslConfig
    recorder: RecorderConfig
    rules: tuple[Rule, ...]
    # Always set by the loader (enabled unless the file says otherwise); None is read as no listener too.
    metrics: MetricsConfig | None = field(default_factory=MetricsConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    catalog: CatalogConfig = field(default_factory=CatalogConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    source: str = "<config>"
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    hook: HookConfig | None = None  # for every rule without a hook of its own
    http: HttpConfig = field(default_factory=HttpConfig)
