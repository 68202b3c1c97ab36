"""The YAML configuration, checked field by field into frozen settings. Pure: reads text, opens no sockets.

Every mistake is reported as one line naming the file, the line, the field and what is allowed::

    config/x.yaml:14: rules[2].rate: 12000 is not a multiple of 8000; use 8000, 16000, 24000, 32000 or 48000

To know lines, the file is composed into PyYAML's node tree (each node keeps its position) and the nodes
are read here, rather than loading plain Python objects that have forgotten where they came from.

``${NAME}`` anywhere in a scalar is replaced from the environment (``$${`` writes a literal ``${``). Secrets
(the ESL password, the recorder token) never appear in an error message or a repr.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Mapping

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.resolver import Resolver

from . import audio_stream
from .recorder.filenames import TEMPLATE_RULES, FilenameTemplate
from .rules import DIRECTIONS, Match, Rule, TextPattern

_TAG = "tag:yaml.org,2002:"
STR, INT, FLOAT, BOOL, NULL = (_TAG + t for t in ("str", "int", "float", "bool", "null"))

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# A WAV file's sizes are 32-bit: the RIFF size (36 + data) must fit in 2**32 - 1.
MAX_WAV_DATA_BYTES = 2**32 - 1 - 36


class ConfigError(ValueError):
    """A configuration the controller refuses to run with. ``str()`` is one line: where, what, what is allowed."""

    def __init__(self, source: str, line: int | None, path: str, problem: str, allowed: str) -> None:
        self.source, self.line, self.path, self.problem, self.allowed = source, line, path, problem, allowed
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.source if self.line is None else f"{self.source}:{self.line}"
        field_part = f" {self.path}:" if self.path else ""
        return f"{where}:{field_part} {self.problem}; {self.allowed}"


def _masked_repr(obj: Any, secrets: tuple[str, ...]) -> str:
    parts = []
    for f in fields(obj):
        value = getattr(obj, f.name)
        shown = "'***'" if f.name in secrets and value is not None else repr(value)
        parts.append(f"{f.name}={shown}")
    return f"{type(obj).__name__}({', '.join(parts)})"


@dataclass(frozen=True)
class ReconnectConfig:
    initial_s: float = 0.5
    max_s: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.2


@dataclass(frozen=True, repr=False)
class EslConfig:
    password: str
    host: str = "127.0.0.1"
    port: int = 8021
    connect_timeout_s: float = 5.0
    command_timeout_s: float = 5.0
    reconnect: ReconnectConfig = field(default_factory=ReconnectConfig)
    # Nothing at all received for this long (FreeSWITCH sends HEARTBEAT every 20 s): the connection is
    # taken for half-open, dropped and made again.
    liveness_timeout_s: float = 60.0

    def __repr__(self) -> str:
        return _masked_repr(self, ("password",))


@dataclass(frozen=True, repr=False)
class RecorderConfig:
    public_url: str | None  # None: listen_port is 0, the URL is derived from the port the recorder gets
    listen_host: str = "127.0.0.1"
    listen_port: int = 8080
    directory: str = "./recordings"
    filename_template: str = "{date}/{uuid}.wav"
    max_call_s: float = 4 * 3600.0
    max_call_bytes: int = 1024**3
    token: str | None = None  # None: the app makes a random token per call

    def __repr__(self) -> str:
        return _masked_repr(self, ("token",))


@dataclass(frozen=True)
class MetricsConfig:
    listen_host: str = "127.0.0.1"
    listen_port: int = 9464


@dataclass(frozen=True)
class LimitsConfig:
    # The module's free build streams at most 10 channels at once; beyond the cap calls are not streamed.
    max_streams: int = 10
    # The recorder's own caps: WebSocket streams it records at once (beyond: 503 before the upgrade), and
    # TCP connections it serves at once (upgrades in progress and refused clients included). Sized from the
    # benchmark: above what one core sustains, so the caps guard against floods, not against load.
    recorder_max_streams: int = 2000
    recorder_max_connections: int = 4000


@dataclass(frozen=True)
class LoggingConfig:
    level: str = "INFO"


@dataclass(frozen=True)
class Config:
    esl: EslConfig
    recorder: RecorderConfig
    rules: tuple[Rule, ...]
    metrics: MetricsConfig | None = None
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    source: str = "<config>"
    limits: LimitsConfig = field(default_factory=LimitsConfig)


def load_config(path: str | os.PathLike[str], environ: Mapping[str, str] | None = None) -> Config:
    source = os.fspath(path)
    try:
        with open(source, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise ConfigError(source, None, "", f"cannot read the file: {exc.strerror or exc}",
                          "give the path of a readable YAML file") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(source, line, "", "the file is not UTF-8 text", "save it as UTF-8") from None
    return parse_config(text, source, environ)


def parse_config(text: str, source_name: str = "<config>", environ: Mapping[str, str] | None = None) -> Config:
    """Check ``text`` as a whole configuration; raises ConfigError. ``environ`` defaults to os.environ."""
    return _Reader(source_name, os.environ if environ is None else environ).config(text)


# ---- reading nodes ----------------------------------------------------------------------------------------

def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _line(node: Node) -> int:
    return node.start_mark.line + 1


def _kind(node: Node, tag: str | None = None) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    return {NULL: "nothing (empty)", BOOL: "true/false", INT: "a number", FLOAT: "a number",
            STR: "text"}.get(tag or node.tag, "a value of another kind")


_ENV_REF = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$\{")


class _Section:
    """One YAML mapping whose keys are checked against the keys it allows."""

    def __init__(self, reader: "_Reader", node: Node, path: str, allowed: tuple[str, ...], what: str) -> None:
        self.reader, self.node, self.path = reader, node, path
        if not isinstance(node, MappingNode):
            reader.fail(node, path, f"expected {what} (a mapping of keys), got {_kind(node)}",
                        f"allowed keys: {', '.join(allowed)}")
        self.values: dict[str, Node] = {}
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _TAG + "merge":
                reader.fail(key_node, path, "merge keys (<<) are not supported", "write the keys out")
            if not isinstance(key_node, ScalarNode) or key_node.tag not in (STR, INT):
                reader.fail(key_node, path, f"a key is {_kind(key_node)}", f"allowed keys: {', '.join(allowed)}")
            key = key_node.value
            if key in seen:
                reader.fail(key_node, _join(path, key), f"duplicate key (first on line {seen[key]})",
                            "write each key once")
            seen[key] = _line(key_node)
            if key not in allowed:
                reader.fail(key_node, _join(path, key), "unknown key", f"allowed keys: {', '.join(allowed)}")
            self.values[key] = value_node

    def get(self, key: str) -> Node | None:
        node = self.values.get(key)
        # `key:` with nothing after it means "not set", so the default applies.
        if isinstance(node, ScalarNode) and node.tag == NULL:
            return None
        return node

    def require(self, key: str, allowed: str) -> Node:
        node = self.get(key)
        if node is None:
            where = self.values.get(key, self.node)
            self.reader.fail(where, _join(self.path, key), "is required but missing", allowed)
        return node

    def read(self, key: str, reader: Callable[[Node, str], Any], default: Any) -> Any:
        node = self.get(key)
        return default if node is None else reader(node, _join(self.path, key))


class _Reader:
    def __init__(self, source: str, environ: Mapping[str, str]) -> None:
        self.source = source
        self.environ = environ
        self.resolver = Resolver()
        self.constructor = SafeConstructor()
        self.metadata_nodes = 0

    def fail(self, node: Node | None, path: str, problem: str, allowed: str) -> None:
        raise ConfigError(self.source, None if node is None else _line(node), path, problem, allowed)

    # -- scalars --

    def scalar(self, node: Node, path: str, expected: str, allowed: str) -> tuple[str, str]:
        """The scalar's text after ${ENV} substitution, and its YAML type tag."""
        if not isinstance(node, ScalarNode):
            self.fail(node, path, f"expected {expected}, got {_kind(node)}", allowed)
        text, tag = node.value, node.tag
        if "${" in text and tag == STR:
            text = self.substitute(text, node, path)
            if node.style is None:
                # Written plain, so `port: ${ESL_PORT}` becomes a number just as `port: 8021` would.
                tag = self.resolver.resolve(ScalarNode, text, (True, False))
        return text, tag

    def substitute(self, text: str, node: Node, path: str) -> str:
        def replace(m: re.Match[str]) -> str:
            if m.group(0) == "$${":
                return "${"
            name = m.group(1)
            if name is None:
                self.fail(node, path, "has a '${' that is not a complete ${NAME} reference",
                          "write ${NAME} with letters, digits and _, or $${ for a literal ${")
            if name not in self.environ:
                self.fail(node, path, f"environment variable {name} is not set",
                          f"set {name} or write the value in the file")
            return self.environ[name]

        return _ENV_REF.sub(replace, text)

    def typed(self, text: str, tag: str) -> Any:
        return self.constructor.construct_object(ScalarNode(tag, text))

    def text(self, node: Node, path: str, *, allowed: str = "write it as text", secret: bool = False) -> str:
        text, tag = self.scalar(node, path, "text", allowed)
        if tag not in (STR, INT, FLOAT):
            # Numbers are read as written (extension 0123 stays "0123"); true/false would lose what was meant.
            self.fail(node, path, f"expected text, got {_kind(node, tag)}", f"{allowed} (quote it)")
        if not text:
            self.fail(node, path, "is empty", allowed)
        if "\n" in text or "\r" in text:
            shown = "" if secret else f"{text!r} "
            self.fail(node, path, f"{shown}contains a line break", allowed)
        return text

    def whole(self, node: Node, path: str, lo: int, hi: int, allowed: str) -> int:
        text, tag = self.scalar(node, path, "a whole number", allowed)
        if tag != INT:
            self.fail(node, path, f"{text!r} is not a whole number", allowed)
        value = self.typed(text, tag)
        if not lo <= value <= hi:
            self.fail(node, path, f"{value} is outside {lo}..{hi}", allowed)
        return value

    def number(self, node: Node, path: str, lo: float, hi: float, allowed: str, *, lo_open: bool = False) -> float:
        text, tag = self.scalar(node, path, "a number", allowed)
        if tag not in (INT, FLOAT):
            self.fail(node, path, f"{text!r} is not a number", allowed)
        value = float(self.typed(text, tag))
        if math.isnan(value) or value > hi or value < lo or (lo_open and value == lo):
            bound = f"above {lo:g}" if lo_open else f"at least {lo:g}"
            self.fail(node, path, f"{text} is out of range (must be {bound} and at most {hi:g})", allowed)
        return value

    def boolean(self, node: Node, path: str) -> bool:
        text, tag = self.scalar(node, path, "true or false", "use true or false")
        if tag != BOOL:
            self.fail(node, path, f"{text!r} is not true or false", "use true or false")
        return self.typed(text, tag)

    def choice(self, node: Node, path: str, choices: tuple[str, ...], what: str, note: str = "") -> str:
        allowed = f"use {', '.join(choices[:-1])} or {choices[-1]}{note}"
        value = self.text(node, path, allowed=allowed)
        if value not in choices:
            self.fail(node, path, f"{value!r} is not {what}", allowed)
        return value

    # -- the document --

    def config(self, text: str) -> Config:
        try:
            root = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            problem = " ".join(f"{exc.problem or 'syntax error'}".split())
            if exc.context:
                problem += f" ({' '.join(exc.context.split())}"
                if exc.context_mark is not None and mark is not None and exc.context_mark.line != mark.line:
                    problem += f" that starts on line {exc.context_mark.line + 1}"
                problem += ")"
            # Only problem and context: str(exc) quotes the offending line, which may hold the password.
            raise ConfigError(self.source, None if mark is None else mark.line + 1, "",
                              f"invalid YAML: {problem}", "fix the YAML syntax (indentation, quoting, colons)") from None
        except yaml.YAMLError as exc:
            position = getattr(exc, "position", 0) or 0
            raise ConfigError(self.source, text[:position].count("\n") + 1, "",
                              f"invalid YAML: {getattr(exc, 'reason', 'unreadable text')}",
                              "remove control characters from the file") from None
        if root is None:
            raise ConfigError(self.source, 1, "", "the file is empty",
                              "write a mapping with esl, recorder and rules sections")
        top = _Section(self, root, "", ("esl", "recorder", "rules", "metrics", "logging", "limits"),
                       "the configuration")
        esl = self.esl(top.require("esl", "add an esl: section with at least password"), "esl")
        recorder_node = top.get("recorder")
        recorder = self.recorder(recorder_node, "recorder") if recorder_node is not None \
            else self.recorder(MappingNode(_TAG + "map", [], root.start_mark, root.end_mark), "recorder")
        rules = self.rules(top.require("rules", "add a rules: list with at least one rule"), "rules")
        metrics = top.read("metrics", self.metrics, None)
        logging_config = top.read("logging", self.logging, LoggingConfig())
        limits = top.read("limits", self.limits, LimitsConfig())
        return Config(esl, recorder, rules, metrics, logging_config, self.source, limits)

    def limits(self, node: Node, path: str) -> LimitsConfig:
        s = _Section(self, node, path, ("max_streams", "recorder_max_streams", "recorder_max_connections"),
                     "the limits")
        streams = s.read("recorder_max_streams", lambda n, p: self.whole(
            n, p, 1, 100000, "a whole number of streams the recorder takes at once, from 1 to 100000"), 2000)
        connections = s.read("recorder_max_connections", lambda n, p: self.whole(
            n, p, 2, 200000, "a whole number of connections the recorder serves at once, from 2 to 200000"), 4000)
        if connections <= streams:
            self.fail(s.values.get("recorder_max_connections", node), _join(path, "recorder_max_connections"),
                      f"{connections} is not above recorder_max_streams ({streams})",
                      "allow more connections than streams, so a refused client can still be told why (503)")
        return LimitsConfig(
            max_streams=s.read("max_streams", lambda n, p: self.whole(
                n, p, 1, 10000, "a whole number of concurrent streams from 1 to 10000"), 10),
            recorder_max_streams=streams,
            recorder_max_connections=connections,
        )

    def esl(self, node: Node, path: str) -> EslConfig:
        s = _Section(self, node, path, ("host", "port", "password", "connect_timeout_s", "command_timeout_s",
                                        "liveness_timeout_s", "reconnect"), "the esl section")
        host_rules = "a host name or IP address without spaces"
        timeout_rules = "seconds, above 0 and at most 300"
        password_node = s.require("password", "give the event socket password (e.g. ${ESL_PASSWORD})")
        password = self.text(password_node, _join(path, "password"), secret=True,
                             allowed="give the event socket password (e.g. ${ESL_PASSWORD})")
        return EslConfig(
            password=password,
            host=s.read("host", lambda n, p: self.hostname(n, p, host_rules), "127.0.0.1"),
            port=s.read("port", lambda n, p: self.whole(n, p, 1, 65535, "use a port number from 1 to 65535"), 8021),
            connect_timeout_s=s.read("connect_timeout_s",
                                     lambda n, p: self.number(n, p, 0, 300, timeout_rules, lo_open=True), 5.0),
            command_timeout_s=s.read("command_timeout_s",
                                     lambda n, p: self.number(n, p, 0, 300, timeout_rules, lo_open=True), 5.0),
            reconnect=s.read("reconnect", self.reconnect, ReconnectConfig()),
            liveness_timeout_s=s.read("liveness_timeout_s", lambda n, p: self.number(
                n, p, 1, 3600, "seconds from 1 to 3600; keep it above FreeSWITCH's event-heartbeat-interval "
                "(20 s by default): three missed heartbeats is the default 60"), 60.0),
        )

    def hostname(self, node: Node, path: str, allowed: str) -> str:
        host = self.text(node, path, allowed=allowed)
        if any(ch.isspace() for ch in host) or "/" in host:
            self.fail(node, path, f"{host!r} is not a host name", allowed)
        return host

    def reconnect(self, node: Node, path: str) -> ReconnectConfig:
        s = _Section(self, node, path, ("initial_s", "max_s", "multiplier", "jitter"), "the reconnect settings")
        initial = s.read("initial_s", lambda n, p: self.number(
            n, p, 0, 60, "seconds before the first retry, above 0 and at most 60", lo_open=True), 0.5)
        max_node = s.get("max_s")
        max_s = s.read("max_s", lambda n, p: self.number(
            n, p, 0, 3600, "the longest wait between retries in seconds, above 0 and at most 3600", lo_open=True), 30.0)
        if max_s < initial:
            self.fail(max_node or node, _join(path, "max_s"), f"{max_s:g} is below initial_s ({initial:g})",
                      "make max_s at least initial_s")
        return ReconnectConfig(
            initial_s=initial,
            max_s=max_s,
            multiplier=s.read("multiplier", lambda n, p: self.number(
                n, p, 1, 10, "a growth factor from 1 (constant delay) to 10"), 2.0),
            jitter=s.read("jitter", lambda n, p: self.number(
                n, p, 0, 1, "a fraction of the delay from 0 (none) to 1"), 0.2),
        )

    def recorder(self, node: Node, path: str) -> RecorderConfig:
        s = _Section(self, node, path, ("listen_host", "listen_port", "public_url", "directory", "filename_template",
                                        "max_call_s", "max_call_bytes", "token"), "the recorder section")
        listen_host = s.read("listen_host", lambda n, p: self.hostname(
            n, p, "an address to listen on, e.g. 127.0.0.1 or 0.0.0.0"), "127.0.0.1")
        listen_port = s.read("listen_port", lambda n, p: self.whole(
            n, p, 0, 65535, "use a port number from 1 to 65535 (0: any free port)"), 8080)
        url_node = s.get("public_url")
        if url_node is not None:
            public_url = self.public_url(url_node, _join(path, "public_url"))
        elif listen_host in ("0.0.0.0", "::", ""):
            self.fail(s.values.get("public_url", node), _join(path, "public_url"),
                      "is required when listen_host is a wildcard",
                      "give the URL FreeSWITCH connects to, e.g. ws://10.0.0.5:8080")
        elif listen_port == 0:
            public_url = None  # ws://<listen_host>:<the port the recorder is given>, known once it listens
        else:
            public_url = self.public_url(None, _join(path, "public_url"), f"ws://{listen_host}:{listen_port}", node)
        max_bytes_rules = f"a whole number of bytes from 1 to {MAX_WAV_DATA_BYTES} (the WAV format's limit)"
        return RecorderConfig(
            public_url=public_url,
            listen_host=listen_host,
            listen_port=listen_port,
            directory=s.read("directory", lambda n, p: self.text(n, p, allowed="a directory path"), "./recordings"),
            filename_template=s.read("filename_template", self.filename_template, "{date}/{uuid}.wav"),
            max_call_s=s.read("max_call_s", lambda n, p: self.number(
                n, p, 0, 7 * 86400, "seconds, above 0 and at most 604800 (7 days)", lo_open=True), 4 * 3600.0),
            max_call_bytes=s.read("max_call_bytes", lambda n, p: self.whole(
                n, p, 1, MAX_WAV_DATA_BYTES, max_bytes_rules), 1024**3),
            token=s.read("token", self.token, None),
        )

    def public_url(self, node: Node | None, path: str, derived: str | None = None, where: Node | None = None) -> str:
        allowed = (f"{audio_stream.WS_URL_RULES}, no query; e.g. ws://127.0.0.1:8080")
        url = derived if node is None else self.text(node, path, allowed=allowed)
        problem = audio_stream.ws_url_problem(url, base=True)
        if problem:
            if node is None:
                problem = f"derived from listen_host and listen_port as {problem}"
            self.fail(node or where, path, problem, allowed)
        return url.rstrip("/")

    def filename_template(self, node: Node, path: str) -> str:
        template = self.text(node, path, allowed=TEMPLATE_RULES)
        try:
            FilenameTemplate(template)
        except ValueError as exc:
            self.fail(node, path, str(exc), TEMPLATE_RULES)
        return template

    def token(self, node: Node, path: str) -> str:
        allowed = (f"{audio_stream.MIN_TOKEN_LEN} to {audio_stream.MAX_TOKEN_LEN} letters, digits, '-', '_', '.' "
                   "or '~' (e.g. ${RECORDER_TOKEN}), or leave it out for a random token per call")
        token = self.text(node, path, allowed=allowed, secret=True)
        try:
            audio_stream.check_token(token)
        except ValueError:
            self.fail(node, path, f"the token ({len(token)} characters) does not fit the rules", allowed)
        return token

    # -- rules --

    def rules(self, node: Node, path: str) -> tuple[Rule, ...]:
        allowed = "a list of rules, each with at least name and match"
        if not isinstance(node, SequenceNode):
            self.fail(node, path, f"expected a list, got {_kind(node)}", allowed)
        if not node.value:
            self.fail(node, path, "is empty", "add at least one rule")
        rules: list[Rule] = []
        first_use: dict[str, tuple[int, int]] = {}
        for index, rule_node in enumerate(node.value):
            rule_path = f"{path}[{index}]"
            rule = self.rule(rule_node, rule_path)
            if rule.name in first_use:
                other, line = first_use[rule.name]
                name_node = _Section(self, rule_node, rule_path, _RULE_KEYS, "a rule").values["name"]
                self.fail(name_node, f"{rule_path}.name",
                          f"{rule.name!r} is already the name of {path}[{other}] (line {line})",
                          "give each rule a unique name")
            first_use[rule.name] = (index, rule.line)
            rules.append(rule)
        return tuple(rules)

    def rule(self, node: Node, path: str) -> Rule:
        s = _Section(self, node, path, _RULE_KEYS, "a rule")
        name_rules = "1 to 64 letters, digits, '-', '_' or '.', not starting with '.'"
        name_node = s.require("name", f"give the rule a name: {name_rules}")
        name = self.text(name_node, _join(path, "name"), allowed=name_rules)
        if not _RULE_NAME.fullmatch(name):
            self.fail(name_node, _join(path, "name"), f"{name!r} is not a usable name", name_rules)
        match = self.match(s.require("match", "add match: with destination and/or caller"), _join(path, "match"))
        return Rule(
            name=name,
            match=match,
            mix=s.read("mix", lambda n, p: self.choice(n, p, audio_stream.MIX_TYPES, "a mix type", " (lower case)"),
                       "mono"),
            rate=s.read("rate", self.rate, 8000),
            buffer_ms=s.read("buffer_ms", self.buffer_ms, 20),
            start_delay_s=s.read("start_delay_s", lambda n, p: self.number(
                n, p, 0, 3600, "seconds after answer, from 0 to 3600"), 0.0),
            max_duration_s=s.read("max_duration_s", lambda n, p: self.number(
                n, p, 0, 7 * 86400, "seconds of streaming before stop, above 0 (leave it out for no limit)",
                lo_open=True), None),
            metadata=s.read("metadata", self.metadata, None),
            heartbeat_s=s.read("heartbeat_s", lambda n, p: self.whole(
                n, p, 0, audio_stream.MAX_HEARTBEAT_S,
                f"whole seconds between pings from 0 (off) to {audio_stream.MAX_HEARTBEAT_S}"), 0),
            deflate=s.read("deflate", self.boolean, False),
            enabled=s.read("enabled", self.boolean, True),
            max_streams=s.read("max_streams", lambda n, p: self.whole(
                n, p, 1, 10000, "a whole number of concurrent streams from 1 to 10000 (leave it out for no cap)"),
                None),
            line=_line(node),
        )

    def match(self, node: Node, path: str) -> Match:
        s = _Section(self, node, path, ("destination", "caller", "context", "direction"), "the match conditions")
        if s.get("destination") is None and s.get("caller") is None:
            self.fail(node, path, "has neither destination nor caller",
                      "give destination and/or caller (an exact value or /regex/)")
        direction_note = " (inbound: the caller's leg, the default; any: both legs of a bridged call)"
        return Match(
            destination=s.read("destination", self.pattern, None),
            caller=s.read("caller", self.pattern, None),
            context=s.read("context", self.pattern, None),
            direction=s.read("direction", lambda n, p: self.choice(n, p, DIRECTIONS, "a direction", direction_note),
                             "inbound"),
        )

    def pattern(self, node: Node, path: str) -> TextPattern:
        allowed = r"an exact value such as 9999, or a regular expression between slashes such as /9\d{3}/"
        text = self.text(node, path, allowed=allowed)
        try:
            return TextPattern.parse(text)
        except ValueError as exc:
            self.fail(node, path, str(exc), allowed)

    def rate(self, node: Node, path: str) -> int:
        allowed = audio_stream.RATES_TEXT
        text, tag = self.scalar(node, path, "a sample rate", allowed)
        if tag == STR and text in _RATE_WORDS:
            return _RATE_WORDS[text]
        if tag != INT:
            self.fail(node, path, f"{text!r} is not a sample rate", f"{allowed} (or 8k, 16k)")
        value = self.typed(text, tag)
        problem = audio_stream.rate_problem(value)
        if problem:
            self.fail(node, path, problem, allowed)
        return value

    def buffer_ms(self, node: Node, path: str) -> int:
        step, top = audio_stream.BUFFER_STEP_MS, audio_stream.MAX_BUFFER_MS
        allowed = f"use a multiple of {step} from {step} to {top} (milliseconds of audio per frame)"
        value = self.whole(node, path, step, top, allowed)
        if value % step:
            self.fail(node, path, f"{value} is not a multiple of {step}", allowed)
        return value

    def metadata(self, node: Node, path: str) -> dict[str, Any]:
        allowed = "a mapping of names to text, numbers, true/false, lists or mappings; text without quotes, " \
                  "backslashes or control characters"
        if not isinstance(node, MappingNode):
            self.fail(node, path, f"expected a mapping (sent as a JSON object), got {_kind(node)}", allowed)
        self.metadata_nodes = 0
        value = self.json_value(node, path, allowed)
        try:
            audio_stream.metadata_json(value)
        except ValueError as exc:
            self.fail(node, path, str(exc).split("; ")[0], allowed)
        return value

    def json_value(self, node: Node, path: str, allowed: str, depth: int = 0) -> Any:
        # YAML aliases can nest a node inside itself or multiply it: bound what one metadata mapping expands to.
        if depth > _MAX_METADATA_DEPTH:
            self.fail(node, path, f"is nested more than {_MAX_METADATA_DEPTH} levels deep", allowed)
        if isinstance(node, MappingNode):
            result: dict[str, Any] = {}
            self.metadata_nodes += len(node.value)
            if self.metadata_nodes > _MAX_METADATA_NODES:
                self.fail(node, path, f"holds more than {_MAX_METADATA_NODES} values", allowed)
            for key_node, value_node in node.value:
                if not isinstance(key_node, ScalarNode) or key_node.tag not in (STR, INT):
                    self.fail(key_node, path, f"a key is {_kind(key_node)}", "use text keys")
                key = key_node.value
                key_path = _join(path, key)
                if key in result:
                    self.fail(key_node, key_path, "duplicate key", "write each key once")
                problem = audio_stream.metadata_text_problem(key)
                if problem:
                    self.fail(key_node, key_path, f"the key {problem}", allowed)
                result[key] = self.json_value(value_node, key_path, allowed, depth + 1)
            return result
        if isinstance(node, SequenceNode):
            self.metadata_nodes += len(node.value)
            if self.metadata_nodes > _MAX_METADATA_NODES:
                self.fail(node, path, f"holds more than {_MAX_METADATA_NODES} values", allowed)
            return [self.json_value(item, f"{path}[{i}]", allowed, depth + 1) for i, item in enumerate(node.value)]
        text, tag = self.scalar(node, path, "a value", allowed)
        if tag == STR:
            problem = audio_stream.metadata_text_problem(text)
            if problem:
                self.fail(node, path, f"the text {problem}", allowed)
            return text
        if tag in (INT, BOOL, NULL):
            return self.typed(text, tag)
        if tag == FLOAT:
            value = self.typed(text, tag)
            if math.isinf(value) or math.isnan(value):
                self.fail(node, path, f"{text} has no JSON form", "use a finite number")
            return value
        self.fail(node, path, f"{text!r} is read by YAML as a {tag.rsplit(':', 1)[-1]}, which has no JSON form",
                  "quote it to send it as text")

    # -- optional sections --

    def metrics(self, node: Node, path: str) -> MetricsConfig:
        s = _Section(self, node, path, ("listen_host", "listen_port"), "the metrics section")
        return MetricsConfig(
            listen_host=s.read("listen_host", lambda n, p: self.hostname(
                n, p, "an address to listen on, e.g. 127.0.0.1"), "127.0.0.1"),
            listen_port=s.read("listen_port", lambda n, p: self.whole(
                n, p, 0, 65535, "use a port number from 1 to 65535 (0: any free port)"), 9464),
        )

    def logging(self, node: Node, path: str) -> LoggingConfig:
        s = _Section(self, node, path, ("level",), "the logging section")
        allowed = f"use {', '.join(LOG_LEVELS)} (any case)"

        def level(n: Node, p: str) -> str:
            value = self.text(n, p, allowed=allowed)
            if value.upper() not in LOG_LEVELS:
                self.fail(n, p, f"{value!r} is not a log level", allowed)
            return value.upper()

        return LoggingConfig(level=s.read("level", level, "INFO"))


_RULE_KEYS = ("name", "match", "mix", "rate", "buffer_ms", "start_delay_s", "max_duration_s", "metadata", "max_streams",
              "heartbeat_s", "deflate", "enabled")
# Rule names end up in file names ({rule}) and log lines: keep them plain.
_RULE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}")
_RATE_WORDS = {"8k": 8000, "16k": 16000}
# Far beyond any useful metadata (which must fit in 8000 bytes of JSON), far below trouble.
_MAX_METADATA_DEPTH = 16
_MAX_METADATA_NODES = 2000
