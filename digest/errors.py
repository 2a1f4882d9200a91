"""One tree of exceptions; foreign errors are translated into these at the boundary."""

from __future__ import annotations


class DigestError(Exception):
    """Base of every error paper-digest raises on purpose."""


class ConfigError(DigestError):
    """The configuration file is missing, unreadable or invalid.

    ``problems`` lists every problem found, each as ``(key_path, reason)``.
    """

    def __init__(self, problems: list[tuple[str, str]], *, path: str | None = None) -> None:
        self.problems = list(problems)
        self.path = path
        where = f"{path}: " if path else ""
        lines = [f"{key}: {reason}" if key else reason for key, reason in self.problems]
        super().__init__(where + "; ".join(lines))


class UsageError(DigestError):
    """A command's arguments name what is not there: a watchlist or channel the config does
    not define, a store that does not exist yet, a count that cannot be."""


class SourceError(DigestError):
    """A source could not deliver papers."""

    def __init__(self, message: str, *, source: str | None = None, url: str | None = None) -> None:
        self.source = source
        self.url = url
        super().__init__(message)


class FetchError(SourceError):
    """Bytes could not be fetched (connection, timeout, HTTP status, size limit)."""

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        url: str | None = None,
        status: int | None = None,
        attempts: int = 1,
    ) -> None:
        self.status = status
        self.attempts = attempts
        super().__init__(message, source=source, url=url)


class ParseError(SourceError):
    """Fetched bytes are not the format the source expects."""


class StoreError(DigestError):
    """The SQLite store could not be opened or written."""


class DeliveryError(DigestError):
    """A channel did not accept a digest.

    ``permanent`` is true when trying again cannot help (a Slack hook that is gone,
    an SMTP 5xx reply); temporary failures are retried on the next run.
    """

    def __init__(
        self, message: str, *, channel: str | None = None, permanent: bool = False
    ) -> None:
        self.channel = channel
        self.permanent = permanent
        super().__init__(message)


class LockedError(DigestError):
    """Another run holds the store's run lock."""


class Interrupted(KeyboardInterrupt):
    """A run was asked to stop (SIGTERM or Ctrl-C to ``serve``) and cut a wait short.

    Deliberately outside DigestError, like KeyboardInterrupt: no handler for a failing
    source or channel may record it as that source's or channel's failure. It unwinds the
    run; each store transaction it crosses rolls back, so only facts that happened remain.
    """


def describe_unexpected(exc: BaseException) -> str:
    """One line naming an exception nobody planned for: its type and its message."""
    message = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__
