"""The paper-digest command: a thin face over the library. Only here do errors become text."""

from __future__ import annotations

import argparse
import ast
import json
import logging
import os
import re
import sqlite3
import sys
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from threading import Event
from typing import Any

from digest import __version__
from digest.calendar import Calendar
from digest.config import (
    Settings,
    SourceSettings,
    load_settings,
    read_settings,
    wording_warnings,
)
from digest.errors import ConfigError, DigestError, LockedError, StoreError, UsageError
from digest.models import Paper, RunReport
from digest.pipeline import (
    Seams,
    build_matcher,
    known_watchlists,
    preflight,
    reads_arxiv_calendar,
    run_once,
)
from digest.render import plural
from digest.scoring import Explanation
from digest.store import FOUND_LISTED, Store, found_several

EXIT_OK, EXIT_PARTIAL, EXIT_CONFIG, EXIT_LOCKED = 0, 1, 2, 3
EXIT_INTERRUPTED = 130  # the shell's convention for a command ended by SIGINT
EXIT_PIPE_CLOSED = 141  # and for one whose reader went away (SIGPIPE), as with | head
INTERRUPTED = ("paper-digest: interrupted; what was recorded is kept and the next run goes on "
               "from there")

EPILOG = """\
exit status: 0 all went well; 1 a source or channel failed (the rest ran, failures are
retried next run); 2 bad configuration; 3 another run holds the store; 130 interrupted
(Ctrl-C): what was recorded is kept.

examples:
  paper-digest check --config config/digest.toml
  paper-digest run --once --config config/digest.toml
  paper-digest run --once --config config/demo.toml --outbox outbox
  paper-digest serve --config config/digest.toml
  paper-digest serve --now --config config/digest.toml
  paper-digest explain --config config/digest.toml 2611.04001
  paper-digest preview --config config/digest.toml -w efficient-llms --days 7
  paper-digest status --config config/digest.toml
  paper-digest web --config config/digest.toml
  paper-digest requeue --config config/digest.toml team-slack
  paper-digest rate --config config/digest.toml -w efficient-llms like 2611.04001
  paper-digest import --config config/digest.toml -w efficient-llms library.bib
  paper-digest drop --config config/digest.toml 42 --skip
  paper-digest backup --config config/digest.toml
  paper-digest restore --config config/digest.toml data/backups/digest-20261124T070000.db
  paper-digest compact --config config/digest.toml
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="paper-digest",
        description="Fetch new papers (arXiv, Hugging Face, any feed), score them against "
                    "your watchlists, and deliver digests by email or Slack.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"paper-digest {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, help_text: str, example: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text,
                                  epilog=f"example:\n  {example}",
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        sub.add_argument("--config", "-c", required=True, metavar="FILE",
                         help="the TOML config (see config/digest.example.toml)")
        sub.add_argument("--verbose", "-v", action="store_true",
                         help="log each request, retry and decision to stderr")
        sub.add_argument("--log-format", choices=("text", "json"), default="text",
                         help="json: one JSON object a line (time, level, logger, message "
                              "and the message's key=value pairs) for a log collector")
        return sub

    run = add("run", "Run the job once: fetch every source, then send the due digests.",
              "paper-digest run --once --config config/digest.toml")
    run.add_argument("--once", action="store_true",
                     help="run one pass and exit (the only mode of 'run'; 'serve' repeats)")
    run.add_argument("--outbox", metavar="DIR", type=Path,
                     help="write each digest into DIR (.eml, .html preview, Slack .json) "
                          "instead of sending it; recorded as delivered, so use a store of "
                          "its own")
    run.add_argument("--watchlist", "-w", action="append", metavar="NAME",
                     help="deliver only this watchlist's digests (repeatable)")
    serve = add("serve", "Keep running and send each watchlist's digest on its cron schedule.",
                "paper-digest serve --now --config config/digest.toml")
    serve.add_argument("--now", action="store_true",
                       help="run one pass for every watchlist at start, then keep the schedule")
    add("check", "Validate a config file and list every problem with its key path.",
        "paper-digest check --config config/digest.toml")
    add("status", "Show each source's health and each channel's sent, waiting and failed "
                  "digests.", "paper-digest status --config config/digest.toml")
    requeue = add("requeue", "Send a channel's digests that failed for good again on the next "
                             "run, e.g. after replacing a Slack hook that was gone.",
                  "paper-digest requeue --config config/digest.toml team-slack")
    requeue.add_argument("channel", metavar="CHANNEL", help="a channel name from the config")
    drop = add("drop", "Give up on digests that are stuck (failed or waiting): their papers "
                       "become due again, or with --skip are never sent to that channel.",
               "paper-digest drop --config config/digest.toml 42 --skip")
    drop.add_argument("digests", metavar="DIGEST", nargs="*", type=int,
                      help="digest ids, as 'status' lists them")
    drop.add_argument("--channel", metavar="NAME",
                      help="drop every stuck digest of this channel")
    drop.add_argument("--skip", action="store_true",
                      help="never send their papers to that channel (default: due again, "
                           "so the next digest carries them)")
    backup = add("backup", "Copy the store safely while it is in use (SQLite's online "
                           "backup), checked before it is kept.",
                 "paper-digest backup --config config/digest.toml")
    backup.add_argument("--to", metavar="FILE", type=Path,
                        help="where to write it (default: backups/ beside the store, named "
                             "by date and time)")
    restore = add("restore", "Put a backup in place of a damaged store; the delivery journal "
                             "beside the store keeps it from resending what went out since.",
                  "paper-digest restore --config config/digest.toml "
                  "data/backups/digest-20261124T070000.db")
    restore.add_argument("backup", metavar="BACKUP", type=Path, help="a file 'backup' wrote")
    add("compact", "Prune what is older than [store] keep_days and keep_payload_days now, "
                   "then rewrite the store to give the space back (waits for no run: it "
                   "stops if one holds the store).",
        "paper-digest compact --config config/digest.toml")
    explain = add("explain", "Show how each watchlist scores a stored paper, part by part.",
                  'paper-digest explain --config config/digest.toml 2611.04001')
    explain.add_argument("paper", metavar="ID_OR_TITLE",
                         help="an arXiv id (any version), a DOI, or words of the title")
    preview = add("preview", "Show what a watchlist as written now would have matched over "
                             "the store's last days, ranked with reasons, and what changed "
                             "since its last preview.",
                  "paper-digest preview --config config/digest.toml -w efficient-llms "
                  "--days 7")
    preview.add_argument("--watchlist", "-w", required=True, metavar="NAME",
                         help="the watchlist to preview, as the config writes it now")
    preview.add_argument("--days", type=_at_least_one, metavar="N",
                         help="papers first seen in the last N days (default: "
                              "store.lookback_days)")
    preview.add_argument("--limit", type=_at_least_one, default=50, metavar="N",
                         help="list at most N papers (default 50)")
    preview.add_argument("--link", action="store_true",
                         help="also print a signed link, valid for an hour, to the preview "
                              "page of the web app, where the watchlist can be edited and "
                              "run again (needs [web] base_url and its key)")
    rate = add("rate", "Rate papers for a watchlist, as the links in its digests do: like, "
                       "dislike, or save (counts as a like).",
               "paper-digest rate --config config/digest.toml -w efficient-llms like "
               "2611.04001 2611.04002")
    rate.add_argument("--watchlist", "-w", required=True, metavar="NAME",
                      help="the watchlist the rating is for")
    rate.add_argument("action", choices=("like", "dislike", "save"),
                      help="save is kept apart from like but counts as one")
    rate.add_argument("papers", nargs="+", metavar="PAPER",
                      help="an arXiv id (any version) or URL, a DOI, or words of a stored "
                           "paper's title (quoted); arXiv papers not stored yet are fetched")
    likes = add("import", "Like, for a watchlist, every paper in a BibTeX file, a Zotero "
                          "export (BibTeX or CSL JSON) or a list of arXiv ids.",
                "paper-digest import --config config/digest.toml -w efficient-llms "
                "library.bib")
    likes.add_argument("--watchlist", "-w", required=True, metavar="NAME",
                       help="the watchlist the likes are for")
    likes.add_argument("files", nargs="+", metavar="FILE", type=Path,
                       help="BibTeX, CSL JSON, or arXiv ids/URLs one a line (# comments); "
                            "the format is told by the content")
    web = add("web", "Serve the one-click rating links digests carry ([web] base_url and its "
                     "key must be set); put a TLS proxy in front.",
              "paper-digest web --config config/digest.toml")
    web.add_argument("--host", metavar="HOST",
                     help="address to listen on (default: web.host, 127.0.0.1)")
    web.add_argument("--port", metavar="PORT", type=_port,
                     help="port to listen on (default: web.port, 8080)")
    return parser


def _port(text: str) -> int:
    port = _whole(text)
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text}: a port is 1-65535")
    return port


def _at_least_one(text: str) -> int:
    number = _whole(text)
    if number < 1:
        raise argparse.ArgumentTypeError(f"{text}: must be at least 1")
    return number


def _whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if args.log_format == "json":
        for handler in logging.getLogger().handlers:
            if type(handler) is logging.StreamHandler:  # the one basicConfig made
                handler.setFormatter(JsonLogFormatter())
    # httpx logs full request URLs, and a Slack webhook URL is a secret.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    try:
        code = _command(args)
        sys.stdout.flush()  # here, where a reader that went away can still be answered
    except BrokenPipeError:
        # Whoever read the output stopped reading (| head): stop too, without a traceback.
        # What is still buffered goes nowhere, not to a second error at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_PIPE_CLOSED
    return code


def _command(args: argparse.Namespace) -> int:
    """Run the command asked for; each kind of failure becomes its exit status."""
    try:
        if args.command == "check":
            return _check(Path(args.config))
        settings = load_settings(args.config)
        _redact_secrets_in_logs(settings)
        if args.command == "serve":
            return _serve(settings, first_pass=args.now)
        if args.command == "explain":
            return _explain(settings, args.paper)
        if args.command == "preview":
            return _preview(settings, args.watchlist, days=args.days, limit=args.limit,
                            link=args.link)
        if args.command == "status":
            return _status(settings)
        if args.command == "web":
            return _web(settings, host=args.host, port=args.port)
        if args.command == "requeue":
            return _requeue(settings, args.channel)
        if args.command == "rate":
            return _rate(settings, args.watchlist, args.action, args.papers)
        if args.command == "import":
            return _import_likes(settings, args.watchlist, args.files)
        if args.command == "drop":
            return _drop(settings, args.digests, args.channel, skip=args.skip)
        if args.command == "backup":
            return _backup(settings, args.to)
        if args.command == "restore":
            return _restore(settings, args.backup)
        if args.command == "compact":
            return _compact(settings)
        return _run(settings, args)
    except ConfigError as exc:
        _print_config_error(exc)
        return EXIT_CONFIG
    except UsageError as exc:
        print(f"paper-digest: {printable(str(exc))}", file=sys.stderr)
        return EXIT_CONFIG
    except LockedError as exc:
        print(f"paper-digest: {exc}", file=sys.stderr)
        return EXIT_LOCKED
    except DigestError as exc:
        print(f"paper-digest: {printable(str(exc))}", file=sys.stderr)
        return EXIT_PARTIAL
    except sqlite3.DatabaseError as exc:  # a damaged store, met while reading it
        from digest.store.db import describe_store_error

        path = settings.store.path if "settings" in locals() else None
        print(f"paper-digest: {printable(describe_store_error(path, exc))}", file=sys.stderr)
        return EXIT_PARTIAL
    except KeyboardInterrupt:
        # Each fact is written in its own transaction after it happened, so whatever the
        # moment, the store holds only what happened and the next run resumes from it.
        print(INTERRUPTED, file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED


class _RedactSecrets(logging.Filter):
    """Replaces every configured secret in a log line with ***, whoever logged it.

    Only whole values are masked: a short SMTP login such as "so" inside "source" is a
    coincidence of letters, and masking it would garble the line without hiding anything.
    """

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = sorted(set(secrets), key=len, reverse=True)
        self._pattern = (re.compile("|".join(_whole_value(s) for s in self.secrets))
                         if self.secrets else None)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if self._pattern is not None:
            message = self._pattern.sub("***", message)
            # A traceback quotes exception messages, and one may hold a webhook URL: it is
            # formatted here, masked, and cached where every formatter looks for it.
            if record.exc_info and not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            if record.exc_text:
                record.exc_text = self._pattern.sub("***", record.exc_text)
            if record.stack_info:
                record.stack_info = self._pattern.sub("***", record.stack_info)
        record.msg, record.args = message, None
        return True


def _whole_value(secret: str) -> str:
    """A pattern for the secret not run together with letters or digits on either side.

    An edge of the secret that is not itself a letter or digit cannot continue a word, so
    that side needs no guard: a password ending in "!" is masked even when a word follows.
    """
    head = r"(?<![^\W_])" if secret[:1].isalnum() else ""
    tail = r"(?![^\W_])" if secret[-1:].isalnum() else ""
    return head + re.escape(secret) + tail


# A key=value pair in a log message: the key starts the message or follows a space, '(',
# '[' or ','; the value is quoted (as %r writes it) or runs to a space, ',' or ';'.
_CONTEXT = re.compile(r"(?<![^\s(\[,])([A-Za-z_][\w.]*)="
                      r"""('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|[^\s,;]+)""")
_JSON_FIELDS = ("time", "level", "logger", "message", "exception", "stack")


class JsonLogFormatter(logging.Formatter):
    """One JSON object a line: time (UTC, ISO 8601), level, logger, message, and each
    key=value pair of the message as a field of its own (``ctx_KEY`` where KEY is taken)."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"),
            "level": record.levelname, "logger": record.name, "message": message}
        for key, raw in _CONTEXT.findall(message):
            entry.setdefault(f"ctx_{key}" if key in _JSON_FIELDS else key, _context_value(raw))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(entry, ensure_ascii=False, default=str)


def _context_value(raw: str) -> Any:
    """A logged value as JSON would hold it: numbers and booleans typed, quotes removed."""
    if raw[:1] in "'\"" and len(raw) > 1:
        try:
            return ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            return raw[1:-1]
    raw = raw.rstrip(".:") or raw
    if re.fullmatch(r"-?\d+", raw):
        return int(raw)
    if re.fullmatch(r"-?\d+\.\d+", raw):
        return float(raw)
    return {"True": True, "False": False, "None": None}.get(raw, raw)


def _redact_secrets_in_logs(settings: Settings) -> None:
    needed = [*(c.secret_envs() for c in settings.channels.values()),
              *(s.secret_envs() for s in settings.sources)]
    secrets = [value.reveal() for envs in needed for value in envs.values()
               if value and value.reveal()]
    if settings.web.secret and settings.web.secret.reveal():
        secrets.append(settings.web.secret.reveal())
    for handler in logging.getLogger().handlers:
        handler.addFilter(_RedactSecrets(secrets))


def _print_config_error(exc: ConfigError) -> None:
    print(f"{exc.path or 'config'}: {len(exc.problems)} problem"
          f"{'s' if len(exc.problems) != 1 else ''}", file=sys.stderr)
    for key, reason in exc.problems:
        print(f"  {key}: {reason}" if key else f"  {reason}", file=sys.stderr)


def _check(path: Path) -> int:
    """Every problem in one report: the file's own, then what would stop a run."""
    settings, problems = read_settings(path)
    if settings is not None:
        _redact_secrets_in_logs(settings)
        problems += [p for p in preflight(settings) if p not in problems]
    if problems or settings is None:
        raise ConfigError(problems, path=str(path))
    for key, warning in wording_warnings(settings):
        print(f"warning: {key}: {warning}")
    for warning in _rename_warnings(settings):
        print(f"warning: {warning}")
    print(f"{settings.path}: ok ({plural(len(settings.sources), 'source')}, "
          f"{plural(len(settings.watchlists), 'watchlist')}, "
          f"{plural(len(settings.channels), 'channel')})")
    return EXIT_OK


def _rename_warnings(settings: Settings) -> list[str]:
    """Names the store still files deliveries or ratings under that the config has lost.

    A channel renamed without previous_names starts from nothing and sends again what
    the old name had; a renamed watchlist forgets what its readers rated.
    """
    if not settings.store.path.exists():
        return []
    try:
        with Store.open(settings.store.path) as store:
            delivered = store.delivery_counts()
            rated = {name: len(papers) for name, papers in store.ratings().items()}
    except (StoreError, sqlite3.Error) as exc:
        return [f"cannot read {settings.store.path} to look for renamed channels: "
                f"{printable(str(exc))}"]
    channels = set(settings.channels).union(
        *(c.previous_names for c in settings.channels.values()))
    watchlists = {w.name for w in settings.watchlists}.union(
        *(w.previous_names for w in settings.watchlists))
    warnings = []
    for name, papers in sorted(delivered.items()):
        if name not in channels:
            warnings.append(
                f"the store holds {plural(papers, 'paper')} delivered to channel '{name}', "
                "which is not "
                f"configured; if you renamed it, add previous_names = [\"{name}\"] to the "
                "renamed channel, or the next run sends those papers again")
    for name, count in sorted(rated.items()):
        if name not in watchlists:
            warnings.append(
                f"the store holds {count} rated papers of watchlist '{name}', which is not "
                f"configured; if you renamed it, add previous_names = [\"{name}\"] to the "
                "renamed watchlist, or it loses those ratings")
    return warnings


def _run(settings: Settings, args: argparse.Namespace) -> int:
    report = run_once(settings, outbox=args.outbox, watchlists=args.watchlist,
                      progress=lambda line: print(line, file=sys.stderr, flush=True))
    print(format_report(report, outbox=args.outbox))
    return EXIT_OK if report.ok else EXIT_PARTIAL


def _requeue(settings: Settings, channel: str) -> int:
    _known_channel(settings, channel)
    with _existing_store(settings) as store:
        digests, papers = store.requeue(channel, datetime.now(UTC))
    print(f"{channel}: {plural(digests, 'digest')} with {plural(papers, 'paper')} will be sent "
          "again, unchanged, on the next run")
    return EXIT_OK


def _drop(settings: Settings, digest_ids: list[int], channel: str | None, *,
          skip: bool) -> int:
    if not digest_ids and not channel:
        raise UsageError("name the digests to drop by id, or --channel NAME for all of a "
                         "channel's stuck digests (see 'paper-digest status')")
    if channel is not None:
        _known_channel(settings, channel)
    with _existing_store(settings) as store, store.run_lock():
        stuck = {d.id: d for d in store.stuck_digests(channel)}
        unknown = [i for i in digest_ids if i not in stuck]
        if unknown:
            print(f"paper-digest: not a stuck digest: {', '.join(map(str, unknown))} (see "
                  "'paper-digest status')", file=sys.stderr)
            return EXIT_PARTIAL
        chosen = digest_ids or sorted(stuck)
        dropped = store.drop(chosen, skip=skip, now=datetime.now(UTC))
    for digest in dropped:
        papers = len(digest.paper_keys)
        if digest.status == "sent":
            fate = "its refused recipients will not get it"
        elif skip:
            fate = f"its {plural(papers, 'paper')} will never be sent to {digest.channel}"
        else:
            fate = (f"its {plural(papers, 'paper')} {'is' if papers == 1 else 'are'} due "
                    f"again for {digest.channel}")
        print(f"dropped digest {digest.id} ({digest.watchlist} to {digest.channel}): {fate}")
    if not dropped:
        print("nothing to drop")
    return EXIT_OK


def _backup(settings: Settings, destination: Path | None) -> int:
    path = settings.store.path
    if not path.exists():
        print(f"paper-digest: {path}: no store yet; nothing to back up", file=sys.stderr)
        return EXIT_PARTIAL
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    target = destination or path.parent / "backups" / f"{path.stem}-{stamp}{path.suffix}"
    with Store.open(path) as store:
        written = store.backup(target)
    print(f"backed up {path} to {written} ({written.stat().st_size // 1024} KB); restore it "
          f"with: paper-digest restore --config {settings.path} {written}")
    return EXIT_OK


def _compact(settings: Settings) -> int:
    """Prune now, then VACUUM, holding the run lock so that no run writes meanwhile."""
    from digest.pipeline import prune_store

    path = settings.store.path
    if not path.exists():
        print(f"paper-digest: {path}: no store yet; nothing to compact", file=sys.stderr)
        return EXIT_PARTIAL
    with Store.open(path) as store, store.run_lock():
        before = store.size_on_disk()
        pruned = prune_store(settings, store, datetime.now(UTC).replace(microsecond=0))
        assert pruned is not None  # not quiet: a failure raised StoreError
        store.vacuum()
        after = store.size_on_disk()
    print(f"pruned {pruned.papers} papers, {pruned.digests} digests and {pruned.payloads} "
          f"payloads; {path}: {_size(before)} before, {_size(after)} after (file and -wal)")
    return EXIT_OK


def _size(size: int) -> str:
    """Bytes in the unit a person reads at a glance."""
    if size < 1024:
        return f"{size} bytes"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KB"
    return f"{size / 1024 / 1024:.1f} MB"


def _restore(settings: Settings, backup: Path) -> int:
    from digest.store.db import restore, run_lock

    path = settings.store.path
    if not backup.is_file():
        print(f"paper-digest: no such backup: {backup}", file=sys.stderr)
        return EXIT_PARTIAL
    path.parent.mkdir(parents=True, exist_ok=True)
    with run_lock(path):  # nobody may run while the file is swapped
        kept, settled = restore(path, backup, datetime.now(UTC))
    if kept:
        print(f"the store that was there is kept as {kept}")
    print(f"restored {path} from {backup}; {plural(settled, 'paper')} delivered or skipped "
          "since the "
          "backup, as the delivery journal records, will not be sent again")
    return EXIT_OK


def _known_channel(settings: Settings, name: str) -> None:
    if name not in settings.channels:
        raise UsageError(f"no channel named '{name}' (known: "
                         f"{', '.join(settings.channels) or 'none'})")


def _existing_store(settings: Settings) -> Store:
    """The store, for a command that only looks at what runs recorded: a missing one is
    said so, not created empty (its path may be relative to another directory)."""
    path = settings.store.path
    if not path.exists():
        raise UsageError(f"{path.resolve()}: no store yet; run 'paper-digest run --once' "
                         "first, from the directory the store path is relative to")
    return Store.open(path)


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _rate(settings: Settings, watchlist: str, action: str, wanted: list[str]) -> int:
    """Record one rating per named paper; nothing at all when any name is unclear."""
    from digest.http import Fetcher
    from digest.ratings_import import rate, reference_from_argument, resolve
    from digest.sources.arxiv_api import lookup_url

    known_watchlists(settings, [watchlist])
    references = [reference_from_argument(text) for text in wanted]
    now = datetime.now(UTC)
    with Store.open(settings.store.path) as store, Fetcher(settings.http) as fetcher:
        resolution = resolve(store, references, fetcher=fetcher,
                             url=lookup_url(settings.sources, local=False), now=now,
                             progress=_progress)
        for reference, why in resolution.unresolved:
            print(f"paper-digest: {printable(reference.where, 100)}: {why}", file=sys.stderr)
            for paper in resolution.candidates.get(reference.words, [])[:FOUND_LISTED]:
                print(f"  {paper.key}  {printable(paper.title, 100)}", file=sys.stderr)
        if resolution.unresolved:
            print("nothing recorded; name each paper by its arXiv id, DOI, or more words of "
                  "its title", file=sys.stderr)
            return EXIT_PARTIAL
        rated = rate(store, watchlist=watchlist, papers=[p for _, p in resolution.found],
                     action=action, origin="cli", now=now)
    for paper, outcome in rated:
        title = printable(paper.title, 100)
        if not outcome.changed:
            print(f"{watchlist}: {action} already recorded for {paper.key}  {title}")
        else:
            was = f" (was {outcome.previous})" if outcome.previous else ""
            print(f"{watchlist}: {action} recorded for {paper.key}{was}  {title}")
    changed = sum(outcome.changed for _, outcome in rated)
    if changed:
        from digest.feedback import next_step

        [settings_of] = [w for w in settings.watchlists if w.name == watchlist]
        print(next_step(settings_of, action, changed))
    return EXIT_OK


def _import_likes(settings: Settings, watchlist: str, files: list[Path]) -> int:
    """Like every paper the files name; say what was skipped and why."""
    from digest.http import Fetcher
    from digest.ratings_import import import_likes, read_file
    from digest.sources.arxiv_api import lookup_url

    known_watchlists(settings, [watchlist])
    read = [read_file(path) for path in files]  # every file parses before anything is done
    kinds = {"bibtex": "BibTeX", "csl-json": "CSL JSON", "id-list": "list of ids"}
    for imported in read:
        count = len(imported.references)
        print(f"{imported.path}: {count} entr{'ies' if count != 1 else 'y'} "
              f"({kinds[imported.kind]})")
    with Store.open(settings.store.path) as store, Fetcher(settings.http) as fetcher:
        outcome = import_likes(store, read, watchlist=watchlist, fetcher=fetcher,
                               url=lookup_url(settings.sources, local=False),
                               now=datetime.now(UTC),
                               progress=_progress)
    for reference, why in outcome.skipped:
        title = f' "{printable(reference.title, 100)}"' if reference.title else ""
        print(f"skipped {printable(reference.where, 100)}:{title} ({why})")
    for paper in outcome.replaced_dislikes:
        print(f"now liked, was disliked: {paper.key}  {printable(paper.title, 100)}")
    print(f"{watchlist}: {len(outcome.liked)} liked, {len(outcome.already)} already there, "
          f"{len(outcome.skipped)} skipped")
    return EXIT_OK


def _status(settings: Settings) -> int:
    """What the store knows: the health of sources and the state of deliveries."""
    if not settings.store.path.exists():
        print(f"{settings.store.path}: no store yet; run 'paper-digest run --once' first")
        return EXIT_OK
    healthy = True
    with Store.open(settings.store.path) as store:
        print(f"store: {settings.store.path}, {store.papers_count()} papers")
        held = store.counts()
        keep = settings.store
        print(f"  size on disk: {_size(store.size_on_disk())} (file and -wal); "
              f"{held['papers']} papers, {held['digests']} digests, "
              f"{held['deliveries']} deliveries, {held['pruned_papers']} papers pruned; "
              f"keeps {f'{keep.keep_days} days' if keep.keep_days else 'everything'}, "
              f"payloads {f'{keep.keep_payload_days} days' if keep.keep_payload_days else 'all'}")
        for problem in store.health():
            healthy = False
            print(f"  STORE PROBLEM: {printable(problem)}")
        print("sources:")
        health = {row["source"]: row for row in store.source_health()}
        for source in settings.sources:
            row = health.get(source.name)
            if row is None:
                print(f"  {source.name}: never fetched")
            elif row["consecutive_failures"]:
                healthy = False
                print(f"  {source.name}: FAILING, {plural(row['consecutive_failures'], 'run')} "
                      "in a row "
                      f"since last success {row['last_success'] or 'never'}: "
                      f"{printable(row['last_error'] or '')}")
            else:
                print(f"  {source.name}: ok, last success {row['last_success']}")
            for line in _calendar_lines(settings, store, source):
                print(f"    {line}")
        print("channels:")
        counts = store.digest_counts()
        for name in settings.channels:
            rows = [r for r in counts if r["channel"] == name]
            if not rows:
                print(f"  {name}: nothing sent yet")
            for r in rows:
                label = {"sent": "sent", "pending": "waiting to be sent",
                         "failed_temporary": "FAILED, retried next run",
                         "failed_permanent": "FAILED for good (fix the channel, or "
                                             "'paper-digest drop')",
                         "dropped": "dropped"}[r["status"]]
                error = (f": {printable(r['last_error'])}"
                         if r["status"].startswith("failed") and r["last_error"] else "")
                healthy = healthy and not r["status"].startswith("failed")
                print(f"  {name}: {plural(r['digests'], 'digest')}, "
                      f"{plural(r['papers'], 'paper')} {label} "
                      f"(last {r['last']}){error}")
        refused = store.refused_recipients()
        if refused:
            healthy = False
            print("recipients that missed a digest:")
        for r in refused:
            again = ("retried next run" if r["status"] == "failed_temporary"
                     else "refused for good; fix the address or 'paper-digest drop "
                          f"{r['digest_id']}'")
            print(f"  {r['channel']}: {r['recipient']} did not get digest {r['digest_id']} "
                  f"({printable(r['error'] or '')}); {again}")
        stuck = [d for d in store.stuck_digests() if d.status != "sent"]
        if stuck:
            print("stuck digests (drop with 'paper-digest drop ID'): " + ", ".join(
                f"{d.id} ({d.watchlist} to {d.channel}, {d.status})" for d in stuck))
    return EXIT_OK if healthy else EXIT_PARTIAL


def _calendar_lines(settings: Settings, store: Store, source: SourceSettings) -> list[str]:
    """For an arxiv_rss source: whether arXiv announces today, and what catch-up did."""
    if not reads_arxiv_calendar(source):
        return []
    now = datetime.now(UTC)
    calendar = Calendar(settings.arxiv.holidays)
    upcoming = calendar.next_announcement(now)
    lines = []
    if calendar.due_listing(now) is None:
        lines.append(f"no arXiv announcement today ({calendar.why_silent(now)}); the next is "
                     f"{upcoming.label} at 20:00 US Eastern")
    caught = store.catch_up_summary(source.name)
    if caught["done"]:
        lines.append(f"catch-up: {plural(caught['done'], 'missed announcement day')} "
                     f"backfilled through the arXiv API, {plural(caught['new'], 'new paper')} "
                     "(last "
                     f"{caught['last']})")
    if caught["pending"]:
        lines.append(f"catch-up: {plural(caught['pending'], 'announcement day')} still to "
                     "backfill "
                     "(the next run tries)")
    return lines


def _explain(settings: Settings, wanted: str) -> int:
    with _existing_store(settings) as store:
        papers = store.find(wanted, limit=FOUND_LISTED + 1)
        if not papers:
            print(f"no stored paper matches {wanted!r} (run 'paper-digest run --once' first, "
                  "or give an arXiv id)", file=sys.stderr)
            return EXIT_PARTIAL
        if len(papers) > 1:
            print(f"paper-digest: {found_several(papers)} {printable(wanted, 100)!r}; name "
                  "one by its arXiv id, DOI, or more words of its title:", file=sys.stderr)
            for paper in papers[:FOUND_LISTED]:
                print(f"  {paper.key}  {printable(paper.title, 100)}", file=sys.stderr)
            return EXIT_PARTIAL
        [paper] = papers
        matcher = build_matcher(settings.watchlists, store)
        print(format_explanations(paper, matcher.explain(paper, now=datetime.now(UTC)),
                                  settings))
        for channel, watchlist, when in store.deliveries_of(paper.key):
            print(f"delivered to {channel} with {watchlist} at {when}")
    return EXIT_OK


def _preview(settings: Settings, name: str, *, days: int | None, limit: int,
             link: bool) -> int:
    from digest.preview import format_preview, preview_url, run_preview
    from digest.web.app import web_problems

    known_watchlists(settings, [name])
    if link and (problems := web_problems(settings)):
        raise ConfigError(problems, path=str(settings.path))
    watchlist = next(w for w in settings.watchlists if w.name == name)
    now = datetime.now(UTC)
    with _existing_store(settings) as store:
        preview = run_preview(settings, watchlist, store,
                              days=days or settings.store.lookback_days, now=now)
    print(format_preview(preview, limit=limit))
    if link:
        print(f"edit and preview again at {preview_url(settings, name, now=now, days=days)}")
    return EXIT_OK


def format_explanations(paper: Paper, explanations: list[Explanation],
                        settings: Settings) -> str:
    minimum = {w.name: w.min_score for w in settings.watchlists}
    lines = [f"{paper.key}  {printable(paper.title)}"]
    if paper.authors:
        lines.append(f"  {printable(', '.join(paper.authors[:8]))}")
    facts = [", ".join(paper.categories)] if paper.categories else []
    if paper.upvotes is not None:
        facts.append(f"{paper.upvotes} upvotes")
    if facts:
        lines.append(f"  {' · '.join(facts)}")
    for e in explanations:
        mark = "MATCH" if e.passed else "no   "
        tail = "" if e.passed else f" — {e.verdict}"
        lines.append(f"{mark} {e.watchlist}: score {e.score:g} (min_score "
                     f"{minimum[e.watchlist]:g}){tail}")
        for r in e.reasons:
            detail = ""
            if r.kind in ("term", "negative"):
                detail = f" (weight {r.weight:g}, {r.count}x)"
            elif r.kind in ("liked", "unliked") and r.weight:
                detail = (f" (learned from ratings: feedback_weight {r.weight:g} x "
                          f"{r.points / r.weight:+.2f})")
            lines.append(f"    {r.points:+7.2f}  {printable(r.describe())}{detail}")
    return "\n".join(lines)


def _web(settings: Settings, *, host: str | None, port: int | None) -> int:
    from digest.web.server import run

    run(settings, host=host, port=port, announce=lambda line: print(line, flush=True))
    return EXIT_OK


def _start_web_beside(settings: Settings) -> Any:
    """The web app in a thread of 'serve', when [web] is configured; None otherwise."""
    if not settings.web.enabled:
        return None
    from digest.web.app import web_problems
    from digest.web.server import start_in_background

    problems = web_problems(settings)
    if problems:
        for key, reason in problems:
            print(f"paper-digest: not serving rating links: {key}: {reason}", flush=True)
        return None
    handle = start_in_background(settings)
    print(f"serving rating links at {handle.url} for {settings.web.base_url}", flush=True)
    return handle


def _serve(settings: Settings, *, first_pass: bool = False) -> int:
    from digest.schedule import serve

    stop = Event()  # set on SIGTERM/SIGINT: the pass in progress cuts its waits short

    def run(names: list[str]) -> None:
        try:
            report = run_once(settings, watchlists=names, seams=Seams(stop=stop),
                              progress=lambda line: print(line, flush=True))
            print(format_report(report), flush=True)
        except DigestError as exc:  # a scheduled pass must never kill the service
            print(f"paper-digest: run for {', '.join(names)} stopped: {exc}", flush=True)

    web = _start_web_beside(settings)
    try:
        finished = serve(settings, run, stop=stop, first_pass=first_pass)
    finally:
        if web is not None:
            web.stop()
    if not finished:
        # The pass is still inside a network call. Leaving it is safe (each fact is its own
        # transaction, and a digest not yet accepted is sent next run), but its worker
        # thread would hold the interpreter open, so the process ends here.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_OK)
    return EXIT_OK


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str, limit: int = 500) -> str:
    """Error text can quote a feed: no terminal control sequences, no endless lines."""
    text = _CONTROL.sub("?", " ".join(text.split()))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def format_report(report: RunReport, *, outbox: Path | None = None) -> str:
    lines = ["sources:"]
    for s in report.sources:
        if s.error:
            lines.append(f"  {s.name}: FAILED {printable(s.error)}")
        elif s.not_modified:
            lines.append(f"  {s.name}: not modified since last run")
        else:
            skipped = f", {s.skipped} skipped by announce type" if s.skipped else ""
            note = f"; {s.note}" if s.note else ""
            lines.append(f"  {s.name}: {s.read} read, {s.new} new, {s.known} already known"
                         f"{skipped}{note}")
        if s.catch_up_error:
            lines.append(f"    catch-up of {s.catch_up} FAILED {printable(s.catch_up_error)}"
                         f" (tried again next run)")
        elif s.catch_up:
            lines.append(f"    caught up {s.catch_up} through the arXiv API: "
                         f"{plural(s.caught_up, 'new paper')}")
    lines.append("watchlists:")
    digests = Counter(d.watchlist for d in report.deliveries if not d.resent)
    for w in report.watchlists:
        lines.append(f"  {w.name}: {w.matched} of {plural(w.recent, 'recent paper')} matched, "
                     f"{w.unsent} not yet sent to its channels, "
                     f"{plural(digests[w.name], 'digest')}")
    if report.deliveries:
        lines.append("deliveries:")
    for d in report.deliveries:
        again = " (recorded earlier, sent again)" if d.resent else ""
        where = f" -> {d.location}" if d.location else ""
        error = f": {printable(d.error)}" if d.error else ""
        what = f"heartbeat ({d.heartbeat})" if d.heartbeat else plural(d.papers, "paper")
        lines.append(f"  {d.watchlist} -> {d.channel}: {what}, {d.status}{again}"
                     f"{where}{error}")
    if report.interrupted:
        lines.append("interrupted: stopped before the end; what was recorded is kept and the "
                     "next run goes on from there")
    total_new = report.new_papers
    delivered = sum(1 for d in report.deliveries if d.status in ("sent", "written"))
    lines.append(f"{plural(total_new, 'new paper')}; {plural(delivered, 'digest')} delivered"
                 + (f" into {outbox}/" if outbox else ""))
    return "\n".join(lines)
