"""The paper-digest command: a thin face over the library. Only here do errors become text."""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from digest import __version__
from digest.config import Settings, load_settings
from digest.errors import ConfigError, DigestError, LockedError
from digest.models import Paper, RunReport
from digest.pipeline import build_matcher, preflight, run_once
from digest.scoring import Explanation
from digest.store import Store

EXIT_OK, EXIT_PARTIAL, EXIT_CONFIG, EXIT_LOCKED = 0, 1, 2, 3

EPILOG = """\
exit status: 0 all went well; 1 a source or channel failed (the rest ran, failures are
retried next run); 2 bad configuration; 3 another run holds the store.

examples:
  paper-digest check --config config/digest.toml
  paper-digest run --once --config config/digest.toml
  paper-digest run --once --config config/demo.toml --outbox outbox
  paper-digest serve --config config/digest.toml
  paper-digest explain --config config/digest.toml 2611.04001
  paper-digest status --config config/digest.toml
  paper-digest requeue --config config/digest.toml team-slack
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
    add("serve", "Keep running and send each watchlist's digest on its cron schedule.",
        "paper-digest serve --config config/digest.toml")
    add("check", "Validate a config file and list every problem with its key path.",
        "paper-digest check --config config/digest.toml")
    add("status", "Show each source's health and each channel's sent, waiting and failed "
                  "digests.", "paper-digest status --config config/digest.toml")
    requeue = add("requeue", "Send a channel's digests that failed for good again on the next "
                             "run, e.g. after replacing a Slack hook that was gone.",
                  "paper-digest requeue --config config/digest.toml team-slack")
    requeue.add_argument("channel", metavar="CHANNEL", help="a channel name from the config")
    explain = add("explain", "Show how each watchlist scores a stored paper, part by part.",
                  'paper-digest explain --config config/digest.toml 2611.04001')
    explain.add_argument("paper", metavar="ID_OR_TITLE",
                         help="an arXiv id (any version), a DOI, or words of the title")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    # httpx logs full request URLs, and a Slack webhook URL is a secret.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    try:
        settings = load_settings(args.config)
        _redact_secrets_in_logs(settings)
        if args.command == "check":
            return _check(settings)
        if args.command == "serve":
            return _serve(settings)
        if args.command == "explain":
            return _explain(settings, args.paper)
        if args.command == "status":
            return _status(settings)
        if args.command == "requeue":
            return _requeue(settings, args.channel)
        return _run(settings, args)
    except ConfigError as exc:
        _print_config_error(exc)
        return EXIT_CONFIG
    except LockedError as exc:
        print(f"paper-digest: {exc}", file=sys.stderr)
        return EXIT_LOCKED
    except DigestError as exc:
        print(f"paper-digest: {printable(str(exc))}", file=sys.stderr)
        return EXIT_PARTIAL


class _RedactSecrets(logging.Filter):
    """Replaces every configured secret in a log line with ***, whoever logged it."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = sorted(secrets, key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        for secret in self.secrets:
            message = message.replace(secret, "***")
        record.msg, record.args = message, None
        return True


def _redact_secrets_in_logs(settings: Settings) -> None:
    secrets = [value.reveal() for channel in settings.channels.values()
               for value in channel.secret_envs().values() if value and value.reveal()]
    for handler in logging.getLogger().handlers:
        handler.addFilter(_RedactSecrets(secrets))


def _print_config_error(exc: ConfigError) -> None:
    print(f"{exc.path or 'config'}: {len(exc.problems)} problem"
          f"{'s' if len(exc.problems) != 1 else ''}", file=sys.stderr)
    for key, reason in exc.problems:
        print(f"  {key}: {reason}" if key else f"  {reason}", file=sys.stderr)


def _check(settings: Settings) -> int:
    problems = preflight(settings)
    if problems:
        raise ConfigError(problems, path=str(settings.path))
    print(f"{settings.path}: ok ({len(settings.sources)} sources, "
          f"{len(settings.watchlists)} watchlists, {len(settings.channels)} channels)")
    return EXIT_OK


def _run(settings: Settings, args: argparse.Namespace) -> int:
    report = run_once(settings, outbox=args.outbox, watchlists=args.watchlist,
                      progress=lambda line: print(line, file=sys.stderr, flush=True))
    print(format_report(report, outbox=args.outbox))
    return EXIT_OK if report.ok else EXIT_PARTIAL


def _requeue(settings: Settings, channel: str) -> int:
    if channel not in settings.channels:
        raise ConfigError([("", f"no channel named '{channel}' (known: "
                                f"{', '.join(settings.channels) or 'none'})")],
                          path=str(settings.path))
    with Store.open(settings.store.path) as store:
        digests, papers = store.requeue(channel, datetime.now(UTC))
    print(f"{channel}: {digests} digest(s) with {papers} papers will be sent again, unchanged, "
          "on the next run")
    return EXIT_OK


def _status(settings: Settings) -> int:
    """What the store knows: the health of sources and the state of deliveries."""
    if not settings.store.path.exists():
        print(f"{settings.store.path}: no store yet; run 'paper-digest run --once' first")
        return EXIT_OK
    healthy = True
    with Store.open(settings.store.path) as store:
        print(f"store: {settings.store.path}, {store.papers_count()} papers")
        print("sources:")
        health = {row["source"]: row for row in store.source_health()}
        for source in settings.sources:
            row = health.get(source.name)
            if row is None:
                print(f"  {source.name}: never fetched")
            elif row["consecutive_failures"]:
                healthy = False
                print(f"  {source.name}: FAILING, {row['consecutive_failures']} run(s) in a row "
                      f"since last success {row['last_success'] or 'never'}: "
                      f"{printable(row['last_error'] or '')}")
            else:
                print(f"  {source.name}: ok, last success {row['last_success']}")
        print("channels:")
        counts = store.digest_counts()
        for name in settings.channels:
            rows = [r for r in counts if r["channel"] == name]
            if not rows:
                print(f"  {name}: nothing sent yet")
            for r in rows:
                label = {"sent": "sent", "pending": "waiting to be sent",
                         "failed_temporary": "FAILED, retried next run",
                         "failed_permanent": "FAILED for good"}[r["status"]]
                error = (f": {printable(r['last_error'])}"
                         if r["status"].startswith("failed") and r["last_error"] else "")
                healthy = healthy and not r["status"].startswith("failed")
                print(f"  {name}: {r['digests']} digest(s), {r['papers']} papers {label} "
                      f"(last {r['last']}){error}")
    return EXIT_OK if healthy else EXIT_PARTIAL


def _explain(settings: Settings, wanted: str) -> int:
    with Store.open(settings.store.path) as store:
        papers = store.find(wanted)
        if not papers:
            print(f"no stored paper matches {wanted!r} (run 'paper-digest run --once' first, "
                  "or give an arXiv id)", file=sys.stderr)
            return EXIT_PARTIAL
        matcher = build_matcher(settings.watchlists, store)
        now = datetime.now(UTC)
        for paper in papers:
            print(format_explanations(paper, matcher.explain(paper, now=now), settings))
            for channel, watchlist, when in store.deliveries_of(paper.key):
                print(f"delivered to {channel} with {watchlist} at {when}")
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
            lines.append(f"    {r.points:+7.2f}  {printable(r.describe())}{detail}")
    return "\n".join(lines)


def _serve(settings: Settings) -> int:
    from digest.schedule import serve

    def run(names: list[str]) -> None:
        try:
            report = run_once(settings, watchlists=names,
                              progress=lambda line: print(line, flush=True))
            print(format_report(report), flush=True)
        except DigestError as exc:  # a scheduled pass must never kill the service
            print(f"paper-digest: run for {', '.join(names)} stopped: {exc}", flush=True)

    serve(settings, run)
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
            lines.append(f"  {s.name}: {s.read} read, {s.new} new, {s.known} already known"
                         f"{skipped}")
    lines.append("watchlists:")
    for w in report.watchlists:
        digests = [d for d in report.deliveries if d.watchlist == w.name and not d.resent]
        lines.append(f"  {w.name}: {w.matched} of {w.recent} recent papers matched, "
                     f"{w.unsent} not yet sent to its channels, "
                     f"{len(digests)} digest{'s' if len(digests) != 1 else ''}")
    if report.deliveries:
        lines.append("deliveries:")
    for d in report.deliveries:
        again = " (recorded earlier, sent again)" if d.resent else ""
        where = f" -> {d.location}" if d.location else ""
        error = f": {printable(d.error)}" if d.error else ""
        lines.append(f"  {d.watchlist} -> {d.channel}: {d.papers} papers, {d.status}{again}"
                     f"{where}{error}")
    total_new = report.new_papers
    lines.append(f"{total_new} new paper{'s' if total_new != 1 else ''}; "
                 f"{sum(1 for d in report.deliveries if d.status in ('sent', 'written'))} "
                 f"digest(s) delivered" + (f" into {outbox}/" if outbox else ""))
    return "\n".join(lines)
