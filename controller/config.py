"""The YAML configuration, checked field by field into the frozen settings of settings.py. Reads text, opens
no sockets; the only files it opens besides the configuration are recorder.tls's, to check they are readable.

Every mistake is reported as one line naming the file, the line, the field and what is allowed::

    config/x.yaml:14: rules[2].rate: 12000 is not a multiple of 8000; use 8000, 16000, 24000, 32000 or 48000

To know lines, the file is composed into PyYAML's node tree (each node keeps its position) and the nodes
are read here, rather than loading plain Python objects that have forgotten where they came from.

What each section may hold is data: a ``Section`` per mapping (the tables near the end of this file) lists
its ``Field``s in the order they are read and named in messages, each with its kind (how the value is read
and checked, and the "allowed" text its messages end with; a range's bounds are filled into that text from
the check) and whether it is required. A row's default and whether its value is secret are not written in
the table: the Section takes both from the row's dataclass field in settings.py, and refuses (TypeError on
import) a row that disagrees with its field. One walker (``_Reader.section``) reads any section from its
table; what a table cannot say (one field against another, derived values) is a named function in the
section's ``after``. To add a key: add the dataclass field with its default to settings.py, add a ``Field``
row, document the key in config/controller.yaml (a test walks the tables and fails on any key the example
does not show) and list it in the README's Configuration section.

``${NAME}`` anywhere in a scalar is replaced from the environment (``$${`` writes a literal ``${``). Secrets
(the ESL password, the recorder token, hook header values) never appear in an error message or a repr.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import re
import stat
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol
from urllib.parse import urlsplit

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.resolver import Resolver

from . import audio_stream
from .ops.addresses import is_loopback, is_wildcard
from .recorder.filenames import TEMPLATE_RULES, FilenameTemplate
from .settings import CatalogConfig, StorageConfig, UploadConfig
from .storage.keys import KEY_RULES, S3_URL_RULES, KeyTemplate, parse_s3_url
# The settings are imported from here too (cli, app, tests): re-exported, so those imports keep working.
from .settings import (DIRECTIONS, LOG_LEVELS, RELAY_PROTOCOLS, TIMESTAMPS, Config, EslConfig,  # noqa: F401
                       HookConfig, HttpConfig, LimitsConfig, LoggingConfig, Match, MetricsConfig, ReconnectConfig,
                       RecorderConfig, RelayConfig, Rule, TextPattern, TlsConfig, is_secret)

_TAG = "tag:yaml.org,2002:"
STR, INT, FLOAT, BOOL, NULL = (_TAG + t for t in ("str", "int", "float", "bool", "null"))

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


# ---- the schema's shape ---------------------------------------------------------------------------------

class _Defaults:
    def __repr__(self) -> str:
        return "DEFAULTS"


# A section left out is read as an empty one: its own defaults, and its ``after`` functions still run.
DEFAULTS: Any = _Defaults()


class _FromSettings:
    def __repr__(self) -> str:
        return "FROM_SETTINGS"


# A row that writes no default takes its dataclass field's, from settings.py (where each default is written once).
_FROM_SETTINGS: Any = _FromSettings()


class Kind(Protocol):
    """How one value is read and checked."""

    allowed: str  # what every message about the value ends with

    def read(self, r: "_Reader", node: Node, path: str) -> Any: ...


@dataclass(frozen=True)
class Field:
    """One key of a section."""

    name: str  # the key in the file, and the dataclass field it fills
    kind: Kind  # one of Text, Whole, Number, Flag, Custom, Headers, Argv, Sub, ListOf
    # When the key is left out or empty (``key:``). Not written in a row: the Section fills in the dataclass
    # field's default (a nested section's default_factory becomes DEFAULTS). Written only where the dataclass
    # field has none: None for a value derived in ``after`` (public_url), DEFAULTS for a section (recorder).
    default: Any = _FROM_SETTINGS
    required: str | None = None  # set: the key must be given, and this says what to write
    # Never shown in a message or a repr. Not written in a row: the Section copies it from the dataclass
    # field (declared with settings.secret), which the repr reads too.
    secret: bool = False


@dataclass(frozen=True)
class Section:
    """One YAML mapping: its keys, and the dataclass it becomes."""

    what: str  # as named in "expected <what> (a mapping of keys)"
    build: Callable[..., Any]
    fields: tuple[Field, ...]
    # Run once the fields are read, as fn(reader, mapping, values): checks of one field against another,
    # and values that are not read from a key (they may set values[...]).
    after: tuple[Callable[["_Reader", "_Mapping", dict[str, Any]], None], ...] = ()

    def __post_init__(self) -> None:
        declared = {spec.name: spec for spec in dataclasses.fields(self.build)}
        object.__setattr__(self, "fields", tuple(_settled(self, row, declared.get(row.name)) for row in self.fields))

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)


def _settled(section: Section, row: Field, spec: dataclasses.Field[Any] | None) -> Field:
    """The row with its default and its secrecy taken from its dataclass field; TypeError when the two disagree
    (raised on import, so a table and its dataclass cannot drift apart)."""
    where = f"{section.build.__name__}.{row.name}"
    if spec is None:
        raise TypeError(f"{where}: the table has a row for a field the dataclass does not have")
    has_default = spec.default is not dataclasses.MISSING or spec.default_factory is not dataclasses.MISSING
    if row.required is not None or row.default is not _FROM_SETTINGS:
        if has_default:
            raise TypeError(f"{where}: settings.py gives it a default; the row must not make it required or "
                            "write another")
        default = None if row.required is not None else row.default  # a required key has none
    elif not has_default:
        raise TypeError(f"{where}: has no default in settings.py; make the row required or write its default")
    elif spec.default is not dataclasses.MISSING:
        default = spec.default
    elif isinstance(row.kind, Sub):
        default = DEFAULTS  # read from an empty mapping, so the section's own checks run
    else:
        default = spec.default_factory()  # type: ignore[misc]  # e.g. {}; the walker copies it per object

    secret, kind = is_secret(spec), row.kind
    if secret and isinstance(kind, Text):
        kind = dataclasses.replace(kind, secret=True)
    if secret != getattr(kind, "secret", False):
        raise TypeError(f"{where}: settings.py declares it {'secret' if secret else 'not secret'}, but a "
                        f"{type(kind).__name__} {'cannot keep a value out of messages' if secret else 'always does'}")
    return dataclasses.replace(row, default=default, kind=kind, secret=secret)


# ---- kinds of value: each reads one node and fails with its own allowed text ------------------------------

@dataclass(frozen=True)
class Text:
    allowed: str = "write it as text"
    # Turns the text into the value, or raises ValueError whose text is the problem (e.g. "'x' is not ...").
    parse: Callable[[str], Any] | None = None
    secret: bool = False  # set by the Section from the settings field: the value is never shown in messages

    def read(self, r: "_Reader", node: Node, path: str) -> Any:
        value = r.text(node, path, allowed=self.allowed, secret=self.secret)
        if self.parse is None:
            return value
        try:
            return self.parse(value)
        except ValueError as exc:
            r.fail(node, path, str(exc), self.allowed)


def _bound(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


@dataclass(frozen=True)
class Whole:
    lo: int
    hi: int
    allowed: str  # {lo}, {hi} and {step} are filled in from the check itself, so the text cannot drift from it
    step: int | None = None  # the value must be a multiple of this

    def __post_init__(self) -> None:
        object.__setattr__(self, "allowed", self.allowed.format(lo=self.lo, hi=self.hi, step=self.step))

    def read(self, r: "_Reader", node: Node, path: str) -> int:
        value = r.whole(node, path, self.lo, self.hi, self.allowed)
        if self.step and value % self.step:
            r.fail(node, path, f"{value} is not a multiple of {self.step}", self.allowed)
        return value


@dataclass(frozen=True)
class Number:
    lo: float
    hi: float
    allowed: str  # {lo} and {hi} are filled in from the check itself, so the text cannot drift from it
    lo_open: bool = False  # lo itself is not allowed

    def __post_init__(self) -> None:
        object.__setattr__(self, "allowed", self.allowed.format(lo=_bound(self.lo), hi=_bound(self.hi)))

    def read(self, r: "_Reader", node: Node, path: str) -> float:
        return r.number(node, path, self.lo, self.hi, self.allowed, lo_open=self.lo_open)


@dataclass(frozen=True)
class Flag:
    allowed: str = "use true or false"

    def read(self, r: "_Reader", node: Node, path: str) -> bool:
        return r.boolean(node, path)


@dataclass(frozen=True)
class Custom:
    """A value with rules of its own, read by a named function."""

    reader: Callable[["_Reader", Node, str], Any]
    allowed: str

    def read(self, r: "_Reader", node: Node, path: str) -> Any:
        return self.reader(r, node, path)


@dataclass(frozen=True)
class Sub:
    """A nested section."""

    section: Section

    @property
    def allowed(self) -> str:
        return f"allowed keys: {', '.join(self.section.keys)}"

    def read(self, r: "_Reader", node: Node, path: str) -> Any:
        return r.section(self.section, node, path)


@dataclass(frozen=True)
class ListOf:
    """A non-empty list of sections (the rules)."""

    section: Section
    allowed: str
    empty: str  # what to write when the list is empty
    # Run once every item is read, as fn(reader, list node, path, items).
    after: tuple[Callable[["_Reader", SequenceNode, str, list[Any]], None], ...] = ()

    def read(self, r: "_Reader", node: Node, path: str) -> tuple[Any, ...]:
        if not isinstance(node, SequenceNode):
            r.fail(node, path, f"expected a list, got {_kind(node)}", self.allowed)
        if not node.value:
            r.fail(node, path, "is empty", self.empty)
        items = [r.section(self.section, item, f"{path}[{index}]") for index, item in enumerate(node.value)]
        for check in self.after:
            check(r, node, path, items)
        return tuple(items)


# HTTP header names are RFC 9110 tokens.
_HTTP_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")
# Framing headers come from the body the hook sends; a configured one would corrupt every request.
_FRAMING_HEADERS = ("content-length", "transfer-encoding")


@dataclass(frozen=True)
class Headers:
    """HTTP request headers: a mapping of names to secret values."""

    allowed: str = ("a mapping of header names (letters, digits and !#$%&'*+-.^_`|~) to text without line breaks, "
                    "e.g. Authorization: Bearer ${HOOK_TOKEN}")
    secret: bool = True

    def read(self, r: "_Reader", node: Node, path: str) -> dict[str, str]:
        if not isinstance(node, MappingNode):
            r.fail(node, path, f"expected a mapping of header names to values, got {_kind(node)}", self.allowed)
        headers: dict[str, str] = {}
        first: dict[str, tuple[str, int]] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode) or key_node.tag not in (STR, INT):
                r.fail(key_node, path, f"a header name is {_kind(key_node)}", self.allowed)
            name = key_node.value
            name_path = _join(path, name)
            if not _HTTP_TOKEN.fullmatch(name):
                r.fail(key_node, name_path, f"{name!r} is not a header name", self.allowed)
            if name.lower() in _FRAMING_HEADERS:
                r.fail(key_node, name_path, "is set by the hook from the body it sends", "leave it out")
            if name.lower() in first:
                spelled, line = first[name.lower()]
                r.fail(key_node, name_path, f"duplicate header (first on line {line} as {spelled})",
                       "write each header once (names are not case-sensitive)")
            first[name.lower()] = (name, _line(key_node))
            value = r.text(value_node, name_path, allowed=self.allowed, secret=True)
            if any(ch < " " and ch != "\t" or ch == "\x7f" for ch in value):
                r.fail(value_node, name_path, "contains a control character", self.allowed)
            headers[name] = value
        return headers


@dataclass(frozen=True)
class Argv:
    """A program and its arguments, as a list (no shell, so nothing is split or expanded)."""

    allowed: str = "a list: the program, then its arguments, e.g. [/usr/local/bin/archive-call, --site, ber]"

    def read(self, r: "_Reader", node: Node, path: str) -> tuple[str, ...]:
        if isinstance(node, ScalarNode) and node.tag == STR:
            # One string would have to be split, and no shell does it here: ask for the list it means.
            r.fail(node, path, "expected a list (the program, then its arguments), got text",
                   "write it as a list, e.g. [/usr/local/bin/archive-call, --site, ber]")
        if not isinstance(node, SequenceNode):
            r.fail(node, path, f"expected a list, got {_kind(node)}", self.allowed)
        if not node.value:
            r.fail(node, path, "is empty", self.allowed)
        return tuple(r.text(item, f"{path}[{index}]", allowed=self.allowed) for index, item in enumerate(node.value))


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


class _Mapping:
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

    def where(self, key: str) -> Node:
        """The node to blame for ``key``: its value when written, else the mapping."""
        return self.values.get(key, self.node)


class _Reader:
    def __init__(self, source: str, environ: Mapping[str, str]) -> None:
        self.source = source
        self.environ = environ
        self.resolver = Resolver()
        self.constructor = SafeConstructor()
        self.metadata_nodes = 0

    def fail(self, node: Node | None, path: str, problem: str, allowed: str) -> None:
        raise ConfigError(self.source, None if node is None else _line(node), path, problem, allowed)

    # -- the walker --

    def section(self, section: Section, node: Node, path: str) -> Any:
        m = _Mapping(self, node, path, section.keys, section.what)
        values: dict[str, Any] = {}
        for f in section.fields:
            key_path = _join(path, f.name)
            value_node = m.get(f.name)
            if value_node is not None:
                values[f.name] = f.kind.read(self, value_node, key_path)
            elif f.required is not None:
                self.fail(m.where(f.name), key_path, "is required but missing", f.required)
            elif f.default is DEFAULTS:
                empty = MappingNode(_TAG + "map", [], node.start_mark, node.end_mark)
                values[f.name] = self.section(f.kind.section, empty, key_path)
            else:
                values[f.name] = copy.copy(f.default)  # a fresh {} per object
        for check in section.after:
            check(self, m, values)
        return section.build(**values)

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
        return self.section(CONFIG, root, "")


# ---- values with rules of their own -------------------------------------------------------------------------

def _choice(choices: tuple[str, ...], what: str, note: str = "") -> Text:
    def parse(value: str) -> str:
        if value not in choices:
            raise ValueError(f"{value!r} is not {what}")
        return value

    return Text(f"use {', '.join(choices[:-1])} or {choices[-1]}{note}", parse)


def _host(text: str) -> str:
    if any(ch.isspace() for ch in text) or "/" in text:
        raise ValueError(f"{text!r} is not a host name")
    return text


def _log_level(text: str) -> str:
    if text.upper() not in LOG_LEVELS:
        raise ValueError(f"{text!r} is not a log level")
    return text.upper()


def _ws_base_url(text: str) -> str:
    problem = audio_stream.ws_url_problem(text, base=True)
    if problem:
        raise ValueError(problem)
    return text.rstrip("/")


def _http_url(text: str) -> str:
    try:
        parts = urlsplit(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a URL that can be read (check the brackets around an IPv6 host)") from None
    if parts.scheme not in ("http", "https") or not text.lower().startswith(f"{parts.scheme}://"):
        raise ValueError(f"{text!r} does not start with http:// or https://")
    if "@" in parts.netloc:
        # Not echoed: it holds a password. Headers keep credentials out of logs and reprs.
        raise ValueError("has a user name or password before the host (not shown)")
    if not parts.hostname:
        raise ValueError(f"{text!r} has no host")
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        raise ValueError(f"{text!r} has a port that is not a number from 1 to 65535")
    if any(ch.isspace() for ch in text):
        raise ValueError(f"{text!r} contains a space")
    return text


def _agent_url(text: str) -> str:
    # The URL is secret (an agent's key often rides in its query): no message repeats it.
    try:
        parts = urlsplit(text)
    except ValueError:
        raise ValueError("is not a URL that can be read (check the brackets around an IPv6 host)") from None
    if parts.scheme not in ("ws", "wss") or not text.lower().startswith(f"{parts.scheme}://"):
        raise ValueError("does not start with ws:// or wss://")
    if "@" in parts.netloc:
        raise ValueError("has a user name or password before the host (not shown)")
    if not parts.hostname:
        raise ValueError("has no host")
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0 or any(ch.isspace() for ch in text):
        raise ValueError("has a port that is not a number from 1 to 65535, or a space")
    return text


def _parameters(r: "_Reader", node: Node, path: str) -> dict[str, str]:
    """Names to text: numbers and true/false are sent as text, as Twilio sends every custom parameter."""
    allowed = _PARAMETER_RULES
    if not isinstance(node, MappingNode):
        r.fail(node, path, f"expected a mapping of names to values, got {_kind(node)}", allowed)
    values: dict[str, str] = {}
    for key_node, value_node in node.value:
        if not isinstance(key_node, ScalarNode) or key_node.tag not in (STR, INT):
            r.fail(key_node, path, f"a name is {_kind(key_node)}", allowed)
        name = key_node.value
        if name in values:
            r.fail(key_node, _join(path, name), "duplicate name", "write each name once")
        text, tag = r.scalar(value_node, _join(path, name), "text", allowed)
        if tag not in (STR, INT, FLOAT, BOOL):
            r.fail(value_node, _join(path, name), f"expected text, got {_kind(value_node, tag)}", allowed)
        values[name] = text
    return values


def _record_or_relay(r: _Reader, m: _Mapping, values: dict[str, Any]) -> None:
    if not values["record"] and values["relay"] is None:
        r.fail(m.where("record"), _join(m.path, "record"), "is false and the rule has no relay: the call's audio "
               "would go nowhere", "keep record: true, or add a relay")


_CATALOG_URL_RULES = ("sqlite:///<absolute path of a file> (made if missing) or postgresql://user:password@host:port/"
                      "database (e.g. ${CATALOG_URL}); leave it out for sqlite beside the recordings")
_CONTROLLER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_REGION = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd])")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _catalog_url(text: str) -> str:
    # Secret (a password may ride in it): no message repeats it.
    if text.startswith("sqlite://"):
        path = text[len("sqlite://"):]
        if not path.startswith("/") or path.rstrip("/") == "":
            raise ValueError("sqlite:// is not followed by an absolute path (sqlite:///var/lib/fsctl/catalog.sqlite3)")
        return text
    try:
        parts = urlsplit(text)
    except ValueError:
        raise ValueError("is not a URL that can be read") from None
    if parts.scheme not in ("postgresql", "postgres"):
        raise ValueError("starts with neither sqlite:// nor postgresql://")
    if not parts.path.strip("/") and "dbname=" not in parts.query:
        raise ValueError("names no database (postgresql://host/<database>)")
    return text


def _controller_id(text: str) -> str:
    if not _CONTROLLER_ID.fullmatch(text):
        raise ValueError(f"{text!r} is not a usable name")
    return text


def _s3_url(text: str) -> str:
    parse_s3_url(text)  # raises ValueError naming what is wrong
    return text


def _region(text: str) -> str:
    if not _REGION.fullmatch(text):
        raise ValueError(f"{text!r} is not a region name")
    return text


def _key_template(text: str) -> str:
    KeyTemplate(text)  # raises ValueError naming what is wrong
    return text


def _retention(r: "_Reader", node: Node, path: str) -> float | None:
    allowed = _RETENTION_RULES
    text, tag = r.scalar(node, path, "a duration", allowed)
    if tag == STR and text.strip().lower() == "never":
        return None
    found = _DURATION.fullmatch(text.strip()) if tag == STR else None
    if found is None:
        r.fail(node, path, f"{text!r} is not a duration", allowed)
    seconds = float(found.group(1)) * _DURATION_UNITS[found.group(2)]
    if seconds <= 0:
        r.fail(node, path, f"{text!r} is not above 0", allowed)
    return seconds


_RETENTION_RULES = "never (the default), or a time with its unit: s, m, h or d, e.g. 7d or 12h"


def _retention_needs_upload(r: "_Reader", m: "_Mapping", values: dict[str, Any]) -> None:
    if values["delete_local_after"] is not None and values["upload"] is None:
        r.fail(m.where("delete_local_after"), _join(m.path, "delete_local_after"),
               "is set but upload is not: the local copy would be the only one",
               "add upload (the recording is removed here only once its upload is verified), or write never")


def _readable_file(text: str) -> str:
    # Checked at load, so a wrong path stops the controller before it listens rather than at the first call.
    try:
        if not stat.S_ISREG(os.stat(text).st_mode):
            raise ValueError(f"{text!r} is not a file")
        with open(text, "rb"):
            pass
    except OSError as exc:
        raise ValueError(f"cannot read {text!r}: {exc.strerror or exc}") from None
    return text


def _template(text: str) -> str:
    FilenameTemplate(text)  # raises ValueError naming what is wrong
    return text


def _token(text: str) -> str:
    try:
        audio_stream.check_token(text)
    except ValueError:
        raise ValueError(f"the token ({len(text)} characters) does not fit the rules") from None
    return text


# RFC 6750's b64token: what may follow "Bearer " in an Authorization header.
_HTTP_TOKEN_CHARS = re.compile(r"[A-Za-z0-9._~+/-]+=*")
MIN_HTTP_TOKEN_LEN, MAX_HTTP_TOKEN_LEN = 16, 512


def _http_token(text: str) -> str:
    if not MIN_HTTP_TOKEN_LEN <= len(text) <= MAX_HTTP_TOKEN_LEN or not _HTTP_TOKEN_CHARS.fullmatch(text):
        raise ValueError(f"the token ({len(text)} characters) does not fit the rules") from None
    return text


def _pem_certificates(text: str) -> str:
    _readable_file(text)
    try:
        with open(text, "rb") as fh:
            found = b"-----BEGIN CERTIFICATE-----" in fh.read(1024 * 1024)
    except OSError as exc:
        raise ValueError(f"cannot read {text!r}: {exc.strerror or exc}") from None
    if not found:
        raise ValueError(f"{text!r} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")
    return text


_HOST_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?")


def _host_names(r: "_Reader", node: Node, path: str) -> tuple[str, ...]:
    allowed = _ALLOWED_HOSTS_RULES
    if not isinstance(node, SequenceNode):
        r.fail(node, path, f"expected a list, got {_kind(node)}", allowed)
    names = []
    for index, item in enumerate(node.value):
        name = r.text(item, f"{path}[{index}]", allowed=allowed)
        if not _HOST_NAME.fullmatch(name) or len(name) > 253:
            r.fail(item, f"{path}[{index}]", f"{name!r} is not a host name", allowed)
        names.append(name.lower().rstrip("."))
    return tuple(names)


# Rule names end up in file names ({rule}) and log lines: keep them plain.
_RULE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}")


def _rule_name(text: str) -> str:
    if not _RULE_NAME.fullmatch(text):
        raise ValueError(f"{text!r} is not a usable name")
    return text


def _rate(r: _Reader, node: Node, path: str) -> int:
    allowed = audio_stream.RATES_TEXT
    text, tag = r.scalar(node, path, "a sample rate", allowed)
    if tag == STR and text in _RATE_WORDS:
        return _RATE_WORDS[text]
    if tag != INT:
        r.fail(node, path, f"{text!r} is not a sample rate", f"{allowed} (or 8k, 16k)")
    value = r.typed(text, tag)
    problem = audio_stream.rate_problem(value)
    if problem:
        r.fail(node, path, problem, allowed)
    return value


_RATE_WORDS = {"8k": 8000, "16k": 16000}
_METADATA_RULES = ("a mapping of names to text, numbers, true/false, lists or mappings; text without quotes, "
                   "backslashes or control characters")
# Far beyond any useful metadata (which must fit in 8000 bytes of JSON), far below trouble.
_MAX_METADATA_DEPTH = 16
_MAX_METADATA_NODES = 2000


def _metadata(r: _Reader, node: Node, path: str) -> dict[str, Any]:
    allowed = _METADATA_RULES
    if not isinstance(node, MappingNode):
        r.fail(node, path, f"expected a mapping (sent as a JSON object), got {_kind(node)}", allowed)
    r.metadata_nodes = 0
    value = _json_value(r, node, path, allowed)
    try:
        audio_stream.metadata_json(value)
    except ValueError as exc:
        r.fail(node, path, str(exc).split("; ")[0], allowed)
    return value


def _json_value(r: _Reader, node: Node, path: str, allowed: str, depth: int = 0) -> Any:
    # YAML aliases can nest a node inside itself or multiply it: bound what one metadata mapping expands to.
    if depth > _MAX_METADATA_DEPTH:
        r.fail(node, path, f"is nested more than {_MAX_METADATA_DEPTH} levels deep", allowed)
    if isinstance(node, MappingNode):
        result: dict[str, Any] = {}
        r.metadata_nodes += len(node.value)
        if r.metadata_nodes > _MAX_METADATA_NODES:
            r.fail(node, path, f"holds more than {_MAX_METADATA_NODES} values", allowed)
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode) or key_node.tag not in (STR, INT):
                r.fail(key_node, path, f"a key is {_kind(key_node)}", "use text keys")
            key = key_node.value
            key_path = _join(path, key)
            if key in result:
                r.fail(key_node, key_path, "duplicate key", "write each key once")
            problem = audio_stream.metadata_text_problem(key)
            if problem:
                r.fail(key_node, key_path, f"the key {problem}", allowed)
            result[key] = _json_value(r, value_node, key_path, allowed, depth + 1)
        return result
    if isinstance(node, SequenceNode):
        r.metadata_nodes += len(node.value)
        if r.metadata_nodes > _MAX_METADATA_NODES:
            r.fail(node, path, f"holds more than {_MAX_METADATA_NODES} values", allowed)
        return [_json_value(r, item, f"{path}[{i}]", allowed, depth + 1) for i, item in enumerate(node.value)]
    text, tag = r.scalar(node, path, "a value", allowed)
    if tag == STR:
        problem = audio_stream.metadata_text_problem(text)
        if problem:
            r.fail(node, path, f"the text {problem}", allowed)
        return text
    if tag in (INT, BOOL, NULL):
        return r.typed(text, tag)
    if tag == FLOAT:
        value = r.typed(text, tag)
        if math.isinf(value) or math.isnan(value):
            r.fail(node, path, f"{text} has no JSON form", "use a finite number")
        return value
    r.fail(node, path, f"{text!r} is read by YAML as a {tag.rsplit(':', 1)[-1]}, which has no JSON form",
           "quote it to send it as text")


# ---- checks a table cannot express: run after a section's fields are read ----------------------------------

def _max_s_at_least_initial_s(r: _Reader, m: _Mapping, values: dict[str, Any]) -> None:
    max_s, initial = values["max_s"], values["initial_s"]
    if max_s < initial:
        r.fail(m.get("max_s") or m.node, _join(m.path, "max_s"), f"{max_s:g} is below initial_s ({initial:g})",
               "make max_s at least initial_s")


def _public_url_fits_tls(r: _Reader, m: _Mapping, values: dict[str, Any]) -> None:
    url, tls = values["public_url"], values["tls"]
    if url is None:
        return  # derived, with the scheme tls calls for
    parts = urlsplit(url)
    node, path = m.where("public_url"), _join(m.path, "public_url")
    if tls is not None and parts.scheme == "ws":
        r.fail(node, path, f"{url!r} is plain ws://, but tls is set (the recorder's port then speaks only TLS)",
               "write wss://, or leave tls out")
    # Without tls a wss:// URL is right for a TLS proxy in front of the recorder (and worked before tls
    # existed), so only a URL naming the recorder's own plain port is refused.
    own_port = (values["listen_host"].lower(), values["listen_port"])
    if tls is None and parts.scheme == "wss" and (parts.hostname, parts.port or 443) == own_port:
        r.fail(node, path, f"{url!r} asks for TLS from listen_host:listen_port, which speak plain WebSocket "
               "(tls is not set)", "set tls (certfile and keyfile), or write ws://; wss:// without tls is for a "
               "TLS proxy in front of the recorder")


def _public_url_or_derived(r: _Reader, m: _Mapping, values: dict[str, Any]) -> None:
    if m.get("public_url") is not None:
        return
    scheme = "ws" if values["tls"] is None else "wss"
    path, host, port = _join(m.path, "public_url"), values["listen_host"], values["listen_port"]
    if is_wildcard(host):
        r.fail(m.where("public_url"), path, "is required when listen_host is a wildcard",
               f"give the URL FreeSWITCH connects to, e.g. {scheme}://10.0.0.5:8080")
    if port == 0:
        # <scheme>://<listen_host>:<the port the recorder is given>, known once it listens (app.py derives it).
        values["public_url"] = None
        return
    derived = f"{scheme}://{host}:{port}"
    problem = audio_stream.ws_url_problem(derived, base=True)
    if problem:
        r.fail(m.node, path, f"derived from listen_host and listen_port as {problem}", _PUBLIC_URL_RULES)
    values["public_url"] = derived


def _more_connections_than_streams(r: _Reader, m: _Mapping, values: dict[str, Any]) -> None:
    streams, connections = values["recorder_max_streams"], values["recorder_max_connections"]
    if connections <= streams:
        r.fail(m.where("recorder_max_connections"), _join(m.path, "recorder_max_connections"),
               f"{connections} is not above recorder_max_streams ({streams})",
               "allow more connections than streams, so a refused client can still be told why (503)")


def _destination_or_caller(r: _Reader, m: _Mapping, values: dict[str, Any]) -> None:
    if values["destination"] is None and values["caller"] is None:
        r.fail(m.node, m.path, "has neither destination nor caller",
               "give destination and/or caller (an exact value or /regex/)")


def _rule_line(r: _Reader, m: _Mapping, values: dict[str, Any]) -> None:
    values["line"] = _line(m.node)  # for log messages about the rule


def _unique_rule_names(r: _Reader, node: SequenceNode, path: str, rules: list[Rule]) -> None:
    first_use: dict[str, int] = {}
    for index, (rule_node, rule) in enumerate(zip(node.value, rules)):
        if rule.name in first_use:
            other = first_use[rule.name]
            name_node = next(v for k, v in rule_node.value if k.value == "name")
            r.fail(name_node, f"{path}[{index}].name",
                   f"{rule.name!r} is already the name of {path}[{other}] (line {rules[other].line})",
                   "give each rule a unique name")
        first_use[rule.name] = index


def _hook_has_an_action(r: _Reader, m: _Mapping, values: dict[str, Any]) -> None:
    if values["url"] is None and values["command"] is None:
        r.fail(m.node, m.path, "has neither url nor command",
               "give url (the sidecar JSON is POSTed there) and/or command (a list: the program, then its arguments)")
    if values["headers"] and values["url"] is None:
        r.fail(m.where("headers"), _join(m.path, "headers"), "are given but url is not",
               "headers go with the POST to url; give url or leave headers out")


def _source(r: _Reader, m: _Mapping, values: dict[str, Any]) -> None:
    values["source"] = r.source


def _child(node: Node | None, key: str) -> Node | None:
    """The value node of ``key`` in a mapping node, if written."""
    if isinstance(node, MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, ScalarNode) and key_node.value == key:
                return value_node
    return None


def _listener_guarded(r: _Reader, m: _Mapping, values: dict[str, Any]) -> None:
    """The HTTP listener lists live calls and places test calls: on an address other hosts reach, only with the
    API token."""
    metrics, http = values["metrics"], values["http"]
    if metrics is None or not metrics.enabled or http.token is not None or is_loopback(metrics.listen_host):
        return
    section = m.get("metrics")
    node = _child(section, "listen_host") or section or m.node
    r.fail(node, "metrics.listen_host",
           f"{metrics.listen_host} is not a loopback address and http.token is not set: anyone who can reach port "
           f"{metrics.listen_port} could list the live calls and make the switch place test calls",
           "set http.token (e.g. token: ${FSCTL_HTTP_TOKEN} in an http: section), or listen on 127.0.0.1")


def _relay_transport(r: _Reader, m: _Mapping, values: dict[str, Any]) -> None:
    """Credentials for the agent travel only encrypted, unless the agent is on this host or the file says the
    network is trusted; a CA file is for wss:// (never shown: the URL is secret)."""
    parts = urlsplit(values["url"])
    if values["ca_file"] is not None and parts.scheme != "wss":
        r.fail(m.where("ca_file"), _join(m.path, "ca_file"), "is given but url is not wss://",
               "ca_file verifies the agent's certificate on wss://; use a wss:// url or leave ca_file out")
    if parts.scheme != "ws" or values["insecure"] or is_loopback(parts.hostname or ""):
        return
    carried = []
    if values["headers"]:
        carried.append(f"the headers ({', '.join(values['headers'])})")
    if parts.query:
        carried.append("the URL's query (a key, not shown)")
    if carried:
        r.fail(m.where("url"), _join(m.path, "url"),
               f"ws:// would send {' and '.join(carried)} unencrypted to {parts.hostname}, which is not this host",
               "use wss:// (the agent's certificate is verified), or set insecure: true if the network between is "
               "trusted")


# ---- the tables -----------------------------------------------------------------------------------------------

_SECONDS_300 = "seconds, above {lo} and at most {hi}"
_PORT_OR_ANY = "use a port number from 1 to {hi} (0: any free port)"
_PUBLIC_URL_RULES = f"{audio_stream.WS_URL_RULES}, no query; e.g. ws://127.0.0.1:8080"
_PASSWORD_RULES = "give the event socket password (e.g. ${ESL_PASSWORD})"
_HTTP_TOKEN_RULES = (f"{MIN_HTTP_TOKEN_LEN} to {MAX_HTTP_TOKEN_LEN} letters, digits, '-', '.', '_', '~', '+' or "
                     "'/' (then any '='), e.g. ${FSCTL_HTTP_TOKEN}; make one with: openssl rand -base64 32")
_ALLOWED_HOSTS_RULES = ("a list of host names (letters, digits, '-' and '.'), e.g. [fsctl.example.net]; IP "
                        "addresses, localhost and this machine's name are always allowed")
_TOKEN_RULES = (f"{audio_stream.MIN_TOKEN_LEN} to {audio_stream.MAX_TOKEN_LEN} letters, digits, '-', '_', '.' "
                "or '~' (e.g. ${RECORDER_TOKEN}), or leave it out for a random token per call")
_PATTERN_RULES = r"an exact value such as 9999, or a regular expression between slashes such as /9\d{3}/"
_RULE_NAME_RULES = "1 to 64 letters, digits, '-', '_' or '.', not starting with '.'"

_CERTFILE_RULES = ("the path of a readable PEM file: the recorder's certificate, then any intermediate "
                   "certificates (a relative path is from the working directory)")
_KEYFILE_RULES = ("the path of a readable PEM file: the certificate's private key, not encrypted (a relative "
                  "path is from the working directory)")

# Defaults are not written here: each row takes its dataclass field's default from settings.py.
TLS = Section("the tls settings", TlsConfig, (
    Field("certfile", Text(_CERTFILE_RULES, _readable_file), required=f"give {_CERTFILE_RULES}"),
    Field("keyfile", Text(_KEYFILE_RULES, _readable_file), required=f"give {_KEYFILE_RULES}"),
))

RECONNECT = Section("the reconnect settings", ReconnectConfig, (
    Field("initial_s", Number(0, 60, "seconds before the first retry, above {lo} and at most {hi}", lo_open=True)),
    Field("max_s", Number(0, 3600, "the longest wait between retries in seconds, above {lo} and at most {hi}",
                          lo_open=True)),
    Field("multiplier", Number(1, 10, "a growth factor from {lo} (constant delay) to {hi}")),
    Field("jitter", Number(0, 1, "a fraction of the delay from {lo} (none) to {hi}")),
), after=(_max_s_at_least_initial_s,))

ESL = Section("the esl section", EslConfig, (
    Field("host", Text("a host name or IP address without spaces", _host)),
    Field("port", Whole(1, 65535, "use a port number from {lo} to {hi}")),
    Field("password", Text(_PASSWORD_RULES), required=_PASSWORD_RULES),
    Field("connect_timeout_s", Number(0, 300, _SECONDS_300, lo_open=True)),
    Field("command_timeout_s", Number(0, 300, _SECONDS_300, lo_open=True)),
    Field("liveness_timeout_s", Number(1, 3600, "seconds from {lo} to {hi}; keep it above FreeSWITCH's "
                                       "event-heartbeat-interval (20 s by default): three missed heartbeats is "
                                       "the default 60")),
    Field("reconnect", Sub(RECONNECT)),
))

RECORDER = Section("the recorder section", RecorderConfig, (
    Field("listen_host", Text("an address to listen on, e.g. 127.0.0.1 or 0.0.0.0", _host)),
    Field("listen_port", Whole(0, 65535, _PORT_OR_ANY)),
    Field("public_url", Text(_PUBLIC_URL_RULES, _ws_base_url), None),  # left out: derived, see after
    Field("directory", Text("a directory path")),
    Field("min_free_mb", Whole(0, 10_000_000, "whole megabytes of free space the recordings directory should "
                                              "keep, from {lo} (no floor) to {hi}")),
    Field("filename_template", Text(TEMPLATE_RULES, _template)),
    Field("max_call_s", Number(0, 7 * 86400, "seconds, above {lo} and at most {hi} (7 days)", lo_open=True)),
    Field("max_call_bytes", Whole(1, MAX_WAV_DATA_BYTES, "a whole number of bytes from {lo} to {hi} "
                                                         "(the WAV format's limit)")),
    Field("token", Text(_TOKEN_RULES, _token)),
    Field("tls", Sub(TLS)),
), after=(_public_url_fits_tls, _public_url_or_derived))

MATCH = Section("the match conditions", Match, (
    Field("destination", Text(_PATTERN_RULES, TextPattern.parse)),
    Field("caller", Text(_PATTERN_RULES, TextPattern.parse)),
    Field("context", Text(_PATTERN_RULES, TextPattern.parse)),
    Field("direction", _choice(DIRECTIONS, "a direction", " (inbound: the caller's leg, the default; any: both "
                                                          "legs of a bridged call)")),
), after=(_destination_or_caller,))

HOOK = Section("the hook settings", HookConfig, (
    Field("url", Text("an http:// or https:// URL with a host, e.g. https://archive.example.net/calls; "
                      "credentials go in headers, not in the URL", _http_url)),
    Field("headers", Headers()),
    Field("command", Argv()),
    Field("timeout_s", Number(0, 300, "seconds per attempt, above {lo} and at most {hi}", lo_open=True)),
    Field("max_attempts", Whole(1, 100, "a whole number of attempts per recording from {lo} to {hi} (waits 1 s, "
                                        "doubling to 300 s, between them)")),
), after=(_hook_has_an_action,))

_PARAMETER_RULES = "a mapping of names to text (numbers and true/false are sent as text)"

RELAY = Section("the relay settings", RelayConfig, (
    Field("url", Text("a ws:// or wss:// URL of the agent with a host (a key may go in its query; it is never "
                      "shown)", _agent_url), required="give the agent's url, ws:// or wss://"),
    Field("protocol", _choice(RELAY_PROTOCOLS, "a relay protocol", " (twilio: Twilio Media Streams; raw: a JSON "
                                                                  "hello, then the PCM as it comes)")),
    Field("headers", Headers(allowed="a mapping of header names (letters, digits and !#$%&'*+-.^_`|~) to text "
                                     "without line breaks, sent with the upgrade, e.g. Authorization: Bearer "
                                     "${AGENT_TOKEN}")),
    Field("custom_parameters", Custom(_parameters, _PARAMETER_RULES)),
    Field("talk_back", Flag()),
    Field("max_queue_s", Number(0, 60, "seconds of audio queued toward a slow agent before the oldest is dropped, "
                                       "above {lo} and at most {hi}", lo_open=True)),
    Field("ca_file", Text("the path of a readable PEM file of the CA certificates that sign the agent's certificate "
                          "(a relative path is from the working directory)", _pem_certificates)),
    Field("insecure", Flag()),
), after=(_relay_transport,))

RULE = Section("a rule", Rule, (
    Field("name", Text(_RULE_NAME_RULES, _rule_name), required=f"give the rule a name: {_RULE_NAME_RULES}"),
    Field("match", Sub(MATCH), required="add match: with destination and/or caller"),
    Field("mix", _choice(audio_stream.MIX_TYPES, "a mix type", " (lower case)")),
    Field("rate", Custom(_rate, audio_stream.RATES_TEXT)),
    Field("buffer_ms", Whole(audio_stream.BUFFER_STEP_MS, audio_stream.MAX_BUFFER_MS,
                             "use a multiple of {step} from {lo} to {hi} (milliseconds of audio per frame)",
                             step=audio_stream.BUFFER_STEP_MS)),
    Field("start_delay_s", Number(0, 3600, "seconds after answer, from {lo} to {hi}")),
    Field("max_duration_s", Number(0, 7 * 86400, "seconds of streaming before stop, above {lo} (leave it out for "
                                                 "no limit)", lo_open=True)),
    Field("metadata", Custom(_metadata, _METADATA_RULES)),
    Field("max_streams", Whole(1, 10000, "a whole number of concurrent streams from {lo} to {hi} (leave it out "
                                         "for no cap)")),
    Field("heartbeat_s", Whole(0, audio_stream.MAX_HEARTBEAT_S, "whole seconds between pings from {lo} (off) to "
                                                                "{hi}")),
    Field("deflate", Flag()),
    Field("enabled", Flag()),
    Field("hook", Sub(HOOK)),  # replaces the top-level hook for this rule's calls
    Field("record", Flag()),
    Field("relay", Sub(RELAY)),
), after=(_rule_line, _record_or_relay))

METRICS = Section("the metrics section", MetricsConfig, (
    Field("enabled", Flag()),
    Field("listen_host", Text("an address to listen on, e.g. 127.0.0.1", _host)),
    Field("listen_port", Whole(0, 65535, _PORT_OR_ANY)),
    Field("public", Flag()),
))

HTTP = Section("the http section", HttpConfig, (
    Field("token", Text(_HTTP_TOKEN_RULES, _http_token)),
    Field("allowed_hosts", Custom(_host_names, _ALLOWED_HOSTS_RULES)),
))

LOGGING = Section("the logging section", LoggingConfig, (
    Field("level", Text(f"use {', '.join(LOG_LEVELS)} (any case)", _log_level)),
    Field("timestamps", _choice(TIMESTAMPS, "a timestamps setting", " (auto: none of our own when run by systemd, "
                                                                   "whose journal adds them)")),
))

LIMITS = Section("the limits", LimitsConfig, (
    Field("max_streams", Whole(1, 10000, "a whole number of concurrent streams from {lo} to {hi}")),
    Field("recorder_max_streams", Whole(1, 100000, "a whole number of streams the recorder takes at once, from "
                                                   "{lo} to {hi}")),
    Field("recorder_max_connections", Whole(2, 200000, "a whole number of connections the recorder serves at "
                                                       "once, from {lo} to {hi}")),
    Field("recorder_max_pending_per_address", Whole(1, 200000, "a whole number of connections from one address "
                                                               "that may be in their HTTP handshake at once, "
                                                               "from {lo} to {hi}")),
), after=(_more_connections_than_streams,))

CATALOG = Section("the catalog section", CatalogConfig, (
    Field("enabled", Flag()),
    Field("url", Text(_CATALOG_URL_RULES, _catalog_url)),
    Field("controller_id", Text("1 to 64 letters, digits, '.', '_' or '-' (default: this host's name)",
                                _controller_id)),
))

UPLOAD = Section("the upload settings", UploadConfig, (
    Field("url", Text(S3_URL_RULES, _s3_url), required=f"give the bucket: {S3_URL_RULES}"),
    Field("endpoint_url", Text("an http:// or https:// URL of an S3-compatible server, e.g. http://127.0.0.1:9000 "
                               "(leave it out for AWS S3)", _http_url)),
    Field("region", Text("a region name such as eu-central-1 (default: from the environment or the AWS "
                         "configuration)", _region)),
    Field("key_template", Text(KEY_RULES, _key_template)),
    Field("part_size_mb", Whole(5, 5120, "whole MiB from {lo} (S3's smallest part) to {hi}: a WAV larger than "
                                         "this is uploaded in parts of this size")),
    Field("concurrency", Whole(1, 32, "a whole number of uploads at once from {lo} to {hi}")),
))

STORAGE = Section("the storage section", StorageConfig, (
    Field("upload", Sub(UPLOAD)),
    Field("delete_local_after", Custom(_retention, _RETENTION_RULES)),
), after=(_retention_needs_upload,))

CONFIG = Section("the configuration", Config, (
    Field("esl", Sub(ESL), required="add an esl: section with at least password"),
    Field("recorder", Sub(RECORDER), DEFAULTS),  # Config.recorder has no default: public_url is derived
    Field("rules", ListOf(RULE, "a list of rules, each with at least name and match", "add at least one rule",
                          after=(_unique_rule_names,)), required="add a rules: list with at least one rule"),
    Field("metrics", Sub(METRICS)),
    Field("logging", Sub(LOGGING)),
    Field("limits", Sub(LIMITS)),
    Field("catalog", Sub(CATALOG)),
    Field("storage", Sub(STORAGE)),
    Field("hook", Sub(HOOK)),
    Field("http", Sub(HTTP)),
), after=(_source, _listener_guarded))


def schema_sections(section: Section = CONFIG) -> list[Section]:
    """Every section reachable from ``section`` (itself first), each once."""
    found = [section]
    for f in section.fields:
        inner = getattr(f.kind, "section", None)
        if inner is not None:
            found += [s for s in schema_sections(inner) if s not in found]
    return found


def schema_paths(section: Section = CONFIG) -> list[tuple[str, Field]]:
    """Every key the loader accepts, as ("esl.reconnect.initial_s", field); a list's items add no index.

    A section met more than once (the hook: top-level and per rule) is walked once, where it is nearest the top.
    """
    found: list[tuple[str, Field]] = []
    queue, walked = [(section, "")], {id(section)}
    while queue:
        current, path = queue.pop(0)
        for f in current.fields:
            key_path = _join(path, f.name)
            found.append((key_path, f))
            inner = getattr(f.kind, "section", None)
            if inner is not None and id(inner) not in walked:
                walked.add(id(inner))
                queue.append((inner, key_path))
    return found
