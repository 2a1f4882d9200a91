"""Reading typed options out of parsed TOML tables: the reader every config table and every
source or channel kind uses, the checks they share, and secrets from the environment."""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Mapping
from email.headerregistry import AddressHeader, HeaderRegistry
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar, TypeVar, cast
from urllib.parse import SplitResult, urlsplit

# What may sit in a URL an HTTP client sends: no spaces, no control characters.
URL_JUNK = re.compile(r"[\s\x00-\x1f\x7f]")
_HEADERS = HeaderRegistry()
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


class Secret:
    """A value read from the environment; never shown in reprs, logs or errors."""

    __slots__ = ("_value", "env")

    def __init__(self, value: str, env: str) -> None:
        self._value = value
        self.env = env

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret(${self.env}=***)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)



MISSING = object()


class OptionReader:
    """Collects problems while reading typed values out of parsed TOML tables."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self.problems: list[tuple[str, str]] = []
        self.env: Mapping[str, str] = env if env is not None else {}

    def problem(self, path: str, reason: str) -> None:
        self.problems.append((path, reason))

    def secret(self, table: Mapping[str, Any], key: str, path: str, *,
               required: bool = False) -> tuple[str | None, Secret | None]:
        """An ``*_env`` key: the variable's name, and its value when the variable is set.

        A variable named but not set is not a problem here: ``check`` and the run report
        it through ``KindOptions.secrets``, so a config can be checked on another machine.
        """
        env_var = self.value(table, key, path, str, MISSING if required else None, env_name)
        if env_var and self.env.get(env_var):
            return env_var, Secret(self.env[env_var], env_var)
        return env_var, None

    def table(self, value: Any, path: str) -> dict[str, Any]:
        if value is MISSING:
            return {}
        if not isinstance(value, dict):
            self.problem(path, f"must be a table, got {type_name(value)}")
            return {}
        return value

    def known_keys(self, table: Mapping[str, Any], allowed: tuple[str, ...], path: str) -> None:
        for key in table:
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                self.problem(join_path(path, key), f"unknown key{hint}")

    def value(
        self,
        table: Mapping[str, Any],
        key: str,
        path: str,
        kind: type | tuple[type, ...],
        default: Any = MISSING,
        check: Callable[[Any], str | None] | None = None,
    ) -> Any:
        where = join_path(path, key)
        raw = table.get(key, MISSING)
        if raw is MISSING:
            if default is MISSING:
                self.problem(where, "is required")
                return None
            return default
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if float in kinds and isinstance(raw, int) and not isinstance(raw, bool):
            raw = float(raw)
        if not isinstance(raw, kinds) or (isinstance(raw, bool) and bool not in kinds):
            expected = " or ".join(_TYPE_NAMES.get(k, k.__name__) for k in kinds)
            self.problem(where, f"must be {expected}, got {type_name(raw)}")
            return default if default is not MISSING else None
        if isinstance(raw, float) and not math.isfinite(raw):
            # TOML has nan and inf; no setting means either, and each range check passes nan
            self.problem(where, f"must be a finite number, got {raw}")
            return default if default is not MISSING else None
        if check is not None:
            reason = check(raw)
            if reason:
                self.problem(where, reason)
                return default if default is not MISSING else None
        return raw

    def strings(
        self,
        table: Mapping[str, Any],
        key: str,
        path: str,
        default: tuple[str, ...] = (),
        check: Callable[[str], str | None] | None = None,
        empty: str = "empty string",
    ) -> tuple[str, ...]:
        raw = self.value(table, key, path, list, default=list(default))
        out = []
        for i, item in enumerate(raw or []):
            where = f"{join_path(path, key)}[{i}]"
            if not isinstance(item, str):
                self.problem(where, f"must be a string, got {type_name(item)}")
                continue
            if not item.strip():
                self.problem(where, empty)
                continue
            if check is not None and (reason := check(item)):
                self.problem(where, reason)
                continue
            out.append(item.strip())
        return tuple(out)


_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
               list: "a list", dict: "a table"}


def type_name(value: Any) -> str:
    return {str: "a string", int: "an integer", float: "a number", bool: "a boolean",
            list: "a list", dict: "a table"}.get(type(value), type(value).__name__)


def join_path(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def in_range(low: float, high: float | None = None) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if value < low or (high is not None and value > high):
            return f"must be {low:g}-{high:g}" if high is not None else f"must be >= {low:g}"
        return None

    return check


def one_of(options: tuple[str, ...]) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if value in options else f"must be one of {', '.join(options)}"

    return check



def _is_local(location: str, scheme: str) -> bool:
    # The rule of digest.http.is_local (a path, a file: URL, a Windows drive letter), which
    # this layer cannot import; tests/test_check.py holds the two together.
    return scheme in ("", "file") or (len(scheme) == 1 and location[1:2] == ":")


def url_problem(value: str, *, local: bool) -> str | None:
    """Why a URL cannot be fetched as written, or None. ``local`` admits paths and file:."""
    if not value.strip():
        return "empty url"
    try:
        parts = urlsplit(value)
    except ValueError as exc:
        return f"not a valid URL ({exc})"
    scheme = parts.scheme.lower()
    if local and _is_local(value, scheme):
        return local_path(value) if scheme == "" and value.startswith("~") else None
    if scheme not in ("http", "https"):
        allowed = "http://, https://, file: or a local path" if local else "http:// or https://"
        return f"unsupported URL scheme '{scheme}:' (use {allowed})"
    if URL_JUNK.search(value):
        return "not a valid URL (it holds a space or a control character)"
    if not parts.hostname:
        return "not a valid URL (no host name)"
    return _port_problem(parts)


def _port_problem(parts: SplitResult) -> str | None:
    try:
        port = parts.port
    except ValueError:
        written = parts.netloc.rpartition(":")[2]
        if not written.isdigit():
            return f"not a valid URL (port '{written}' is not a number)"
        port = int(written)
    if port is not None and not 1 <= port <= 65535:
        return f"port {port} is out of range (must be 1-65535)"
    return None


def source_url(value: str) -> str | None:
    return url_problem(value, local=True)


@lru_cache(maxsize=1 << 12)
def address(value: str) -> str | None:
    """One mailbox, strictly parsed: a local part and a domain, optionally a display name."""
    try:
        parsed = _HEADERS("to", value)
        header = cast(AddressHeader, parsed)  # the registry makes "to" an address header
        addresses, groups, defects = header.addresses, header.groups, parsed.defects
    # Beside its parse errors, the parser slips on some inputs with whatever Python raised
    # deep inside it: AttributeError for a name starting with a dot (".Jane <j@x.org>") or
    # a group left open ("a:b;c"), UnboundLocalError for "a@[ ". Whatever it raises, the
    # value is not an address.
    except Exception:
        return f"'{value}' is not an email address like name@example.org"
    if len(addresses) > 1:
        return f"'{value}' holds {len(addresses)} addresses; write one address per entry"
    if (defects or not addresses or not addresses[0].username or not addresses[0].domain
            or any(group.display_name for group in groups)):
        return f"'{value}' is not an email address like name@example.org"
    return None


def local_path(value: str) -> str | None:
    """A file or folder path: not empty, no NUL, and a leading "~name" names a user this
    machine knows (Path.expanduser cannot expand it otherwise)."""
    if not value.strip() or "\x00" in value:
        return "must be a path, like ~/paper-digest/digest.db"
    try:
        Path(value).expanduser()
    except RuntimeError:
        home = value.split("/", 1)[0]
        return f"'{home}' names no user's home folder on this machine"
    return None


def env_name(value: str) -> str | None:
    return None if _ENV_NAME.match(value) else "must be an environment variable name"


def entry_name(value: str) -> str | None:
    if _NAME.match(value):
        return None
    return "must be letters, digits, '-', '_' or '.', starting with a letter or digit"


K = TypeVar("K", bound="KindOptions")


def options_of(settings: Any, kind_options: type[K]) -> K:
    """A source's or channel's options as its kind's type; the kind's defaults when the
    settings were built without any (a test, a library caller)."""
    options = settings.options
    return options if isinstance(options, kind_options) else kind_options()


class KindOptions:
    """What a source or channel kind reads from its own table, beyond the shared keys.

    A kind's module subclasses this as a frozen dataclass: ``KEYS`` names the keys it
    accepts, ``read`` checks them (reporting each problem with its key path), ``secrets``
    names the environment variables it needs, with their values when set.
    """

    KEYS: ClassVar[tuple[str, ...]] = ()
    # Keys that change how a digest looks, not where it goes: a change to one of them does
    # not make a failed digest worth trying again.
    COSMETIC: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def read(cls, reader: OptionReader, table: Mapping[str, Any], path: str) -> Any:
        return cls()

    def secrets(self) -> dict[str, Secret | None]:
        return {}

    def secret_problems(self) -> list[str]:
        """What is wrong with a secret's value (never quoting it), once all are set."""
        return []

    def local_problems(self) -> list[tuple[str, str]]:
        """(key, reason) for each file this machine lacks, checked before a run."""
        return []
