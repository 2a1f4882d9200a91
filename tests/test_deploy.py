"""The recipes in deploy/: each parses, runs commands the CLI accepts, and as far as this
machine allows (no init system, no container engine, no Actions runner) does what it says."""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from apscheduler.triggers.cron import CronTrigger
from conftest import ROOT, Route

from digest.cli import _parser
from digest.config import StoreSettings, WebSettings, load_settings

DEPLOY = ROOT / "deploy"
INSTALLED = "/opt/paper-digest/bin/paper-digest"  # where the recipes expect the command
HERE = Path(sys.executable).parent / "paper-digest"  # where it is on this machine
EXAMPLE = ROOT / "config" / "digest.example.toml"
NEW_YORK = ZoneInfo("America/New_York")


def accepted(argv: list[str]) -> argparse.Namespace:
    """What the CLI makes of a command line; fails the test where it would refuse it."""
    assert Path(argv[0]).name == "paper-digest", argv
    try:
        return _parser().parse_args(argv[1:])
    except SystemExit:
        pytest.fail(f"paper-digest refuses: {shlex.join(argv)}")


def secret_names() -> set[str]:
    """The environment variables the example config reads secrets from."""
    return set(re.findall(r'_env\s*=\s*"([A-Z_]+)"', EXAMPLE.read_text()))


def paper_digest_commands(command: str) -> list[list[str]]:
    """Each paper-digest invocation in a shell command line (split at && || ; |)."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands, current, target = [], [], False
    for token in [*lexer, ";"]:
        if target:  # the file or descriptor a redirection names
            target = False
        elif token in ("&&", "||", ";", "|"):
            if current and Path(current[0]).name == "paper-digest":
                commands.append(current)
            current = []
        elif token[0] in "<>":
            if current and current[-1].isdigit():  # the descriptor of 2>...
                current.pop()
            target = True
        else:
            current.append(token)
    return commands


# ------------------------------------------------------------------ systemd


def unit(path: Path) -> dict[str, list[tuple[str, str]]]:
    """A unit file's sections as (key, value) lists, as systemd reads them."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    text = re.sub(r"\\\n", " ", path.read_text())
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), [])
            continue
        key, _, value = line.partition("=")
        current.append((key.strip(), value.strip()))
    return sections


def values(section: list[tuple[str, str]], key: str) -> list[str]:
    return [value for name, value in section if name == key]


UNITS = sorted((DEPLOY / "systemd").glob("*.service"))


@pytest.mark.parametrize("path", UNITS, ids=lambda p: p.name)
def test_each_service_runs_a_command_the_cli_accepts_under_a_locked_down_user(path):
    service = unit(path)["Service"]
    [start] = values(service, "ExecStart")
    argv = shlex.split(start)
    assert argv[0] == INSTALLED
    args = accepted(argv)
    assert args.config == "/etc/paper-digest/digest.toml"
    assert values(service, "User") and values(service, "User") != ["root"]
    hardening = {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "PrivateTmp": "yes",
                 "ProtectHome": "yes", "CapabilityBoundingSet": ""}
    assert {key: values(service, key) for key in hardening} == {
        key: [value] for key, value in hardening.items()}
    # The one folder it may write is the store's, where it also starts.
    assert values(service, "ReadWritePaths") == values(service, "WorkingDirectory") == [
        "/var/lib/paper-digest"]


def test_the_pass_is_a_oneshot_run_and_the_web_app_restarts_on_failure():
    run = unit(DEPLOY / "systemd" / "paper-digest.service")["Service"]
    run_args = accepted(shlex.split(values(run, "ExecStart")[0]))
    assert (values(run, "Type"), run_args.command, run_args.once) == (["oneshot"], "run", True)
    web = unit(DEPLOY / "systemd" / "paper-digest-web.service")["Service"]
    assert accepted(shlex.split(values(web, "ExecStart")[0])).command == "web"
    assert values(web, "Type") == ["simple"] and values(web, "Restart") == ["on-failure"]
    # Exit status 2 is a configuration the app refuses: restarting it would not help.
    assert values(web, "RestartPreventExitStatus") == ["2"]
    backup = unit(DEPLOY / "systemd" / "paper-digest-backup.service")["Service"]
    assert accepted(shlex.split(values(backup, "ExecStart")[0])).command == "backup"


def test_the_timer_fires_daily_at_half_past_one_in_new_york():
    timer = unit(DEPLOY / "systemd" / "paper-digest.timer")
    [calendar] = values(timer["Timer"], "OnCalendar")
    days, clock, zone = calendar.split()
    assert (days, clock, ZoneInfo(zone)) == ("*-*-*", "01:30:00", NEW_YORK)
    assert values(timer["Timer"], "Unit") == ["paper-digest.service"]
    assert values(timer["Install"], "WantedBy") == ["timers.target"]


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        pytest.skip("systemd-analyze is not installed (Debian's 'systemd' package has it)")
    return found


def test_systemd_reads_the_timers_calendar_as_new_york_time():
    result = subprocess.run([systemd_analyze(), "calendar", "--iterations=2",
                             values(unit(DEPLOY / "systemd" / "paper-digest.timer")["Timer"],
                                    "OnCalendar")[0]],
                            capture_output=True, text=True, env={**os.environ, "TZ": "UTC"},
                            timeout=60)
    assert result.returncode == 0, result.stderr
    elapses = re.findall(r"(?:Next elapse|Iter\. #\d):\s+\w+ (\S+ \S+) UTC", result.stdout)
    assert len(elapses) == 2, result.stdout
    for text in elapses:
        local = datetime.fromisoformat(text).replace(tzinfo=UTC).astimezone(NEW_YORK)
        assert (local.hour, local.minute) == (1, 30)


def test_systemd_analyze_verify_finds_nothing_wrong(tmp_path):
    analyze = systemd_analyze()
    assert HERE.exists()
    files = []
    for path in sorted((DEPLOY / "systemd").iterdir()):
        # verify checks that each command exists: point it at the one installed here.
        copy = tmp_path / path.name
        copy.write_text(path.read_text().replace(INSTALLED, str(HERE)))
        files.append(copy.name)
    result = subprocess.run([analyze, "verify", "--man=no", *files], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    complaints = [line for line in (result.stdout + result.stderr).splitlines()
                  if "paper-digest" in line]
    assert result.returncode == 0 and not complaints, result.stdout + result.stderr


# ------------------------------------------------------------------ cron


def crontab() -> tuple[dict[str, str], list[tuple[str, str]]]:
    """(variables, [(schedule, command)]) of the crontab."""
    variables, jobs = {}, []
    for raw in (DEPLOY / "cron" / "paper-digest.crontab").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if re.match(r"^[A-Z_]+=", line):
            name, _, value = line.partition("=")
            variables[name] = value
            continue
        fields = line.split(None, 5)
        jobs.append((" ".join(fields[:5]), fields[5]))
    return variables, jobs


def test_crontab_runs_in_new_york_time_and_backs_up_daily():
    variables, jobs = crontab()
    zone = ZoneInfo(variables["CRON_TZ"])
    assert zone == NEW_YORK
    assert "%" not in "".join(command for _, command in jobs)  # cron would cut the line there
    fired: dict[str, list[datetime]] = {}
    start = datetime(2026, 7, 1, tzinfo=UTC)  # in summer time, where UTC offsets mislead
    for schedule, command in jobs:
        trigger = CronTrigger.from_crontab(schedule, timezone=zone)
        first = trigger.get_next_fire_time(None, start)
        times = [first, trigger.get_next_fire_time(first, first + timedelta(seconds=1))]
        for argv in paper_digest_commands(command):
            args = accepted(argv)
            assert args.config == "/etc/paper-digest/digest.toml"
            assert args.command != "run" or args.once
            fired[args.command] = [t.astimezone(NEW_YORK) for t in times]
    assert {"run", "backup", "status"} <= set(fired)
    assert [(t.hour, t.minute) for t in fired["run"]] == [(1, 30), (1, 30)]
    for first, second in fired.values():  # every day
        assert second.date() - first.date() == timedelta(days=1)


def here_paths(text: str, tmp_path: Path) -> str:
    return (text.replace("/opt/paper-digest/bin", str(HERE.parent))
            .replace("/etc/paper-digest", str(tmp_path / "etc"))
            .replace("/var/lib/paper-digest", str(tmp_path / "state")))


def feed_and_config(tmp_path: Path, store: Path) -> Path:
    """A config in tmp_path/etc: a local feed with one matching paper, a Slack channel."""
    (tmp_path / "etc").mkdir(exist_ok=True)
    feed = tmp_path / "feed.xml"
    feed.write_text("<rss version='2.0'><channel><title>b</title><item><title>LoRA at scale"
                    "</title><link>https://arxiv.org/abs/2611.00001v1</link></item>"
                    "</channel></rss>")
    config = tmp_path / "etc" / "digest.toml"
    config.write_text(f"""version = 1
[store]
path = "{store}"
[http]
interval_seconds = 0
[[sources]]
name = "blog"
kind = "feed"
url = "{feed}"
[[watchlists]]
name = "lora"
keywords = ["LoRA"]
channels = ["chat"]
[channels.chat]
kind = "slack"
webhook_url_env = "DIGEST_SLACK_WEBHOOK"
""")
    return config


@pytest.mark.integration
def test_the_cron_lines_run_as_written(tmp_path, http_server):
    """Each line, with this machine's paths, run by sh as cron would: the pass sends to a
    webhook on 127.0.0.1, the backup is taken and old ones go, status stays silent."""
    variables, jobs = crontab()
    state = tmp_path / "state"
    state.mkdir()
    feed_and_config(tmp_path, state / "digest.db")
    hook = http_server.route("/hook", Route(status=200, body=b"ok"))
    (tmp_path / "etc" / "env").write_text(f"DIGEST_SLACK_WEBHOOK={hook}\n")
    (state / "backups").mkdir()
    stale = state / "backups" / "digest-20200101T000000.db"
    stale.write_bytes(b"")
    os.utime(stale, (time.time() - 30 * 86400,) * 2)
    env = {"HOME": str(tmp_path), "SHELL": variables["SHELL"],
           "PATH": here_paths(variables["PATH"], tmp_path)}
    for _, command in jobs:
        result = subprocess.run([variables["SHELL"], "-c", here_paths(command, tmp_path)],
                                env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, (command, result.stdout, result.stderr)
        # cron mails what a line prints: all is well, so nothing is printed.
        assert result.stdout + result.stderr == "", command
    assert len(http_server.hits("/hook")) == 1
    log = (state / "paper-digest.log").read_text()
    assert "1 digest delivered" in log
    assert not stale.exists()
    assert [p.name for p in (state / "backups").iterdir()][0].startswith("digest-")


# ------------------------------------------------------------------ GitHub Actions


def workflow() -> dict[str, Any]:
    loaded = yaml.safe_load((DEPLOY / "github-actions" / "paper-digest.yml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def test_workflow_is_scheduled_and_runs_commands_the_cli_accepts():
    flow = workflow()
    triggers = flow.get("on", flow.get(True))  # YAML 1.1 reads a bare 'on' as true
    [schedule] = triggers["schedule"]
    CronTrigger.from_crontab(schedule["cron"], timezone=UTC)
    assert "workflow_dispatch" in triggers
    [job] = flow["jobs"].values()
    runs = [line for step in job["steps"] if "run" in step
            for line in step["run"].splitlines() if line.strip()]
    assert "python -m pip install ." in runs
    commands = [accepted(shlex.split(line)) for line in runs if line.startswith("paper-digest")]
    assert [c.command for c in commands] == ["run", "compact"]
    assert commands[0].once


def test_workflow_carries_the_store_between_runs_and_takes_secrets_from_the_repository():
    [job] = workflow()["jobs"].values()
    steps = job["steps"]
    uses = [step.get("uses", "").split("@")[0] for step in steps]
    restore = steps[uses.index("actions/cache/restore")]
    save = steps[uses.index("actions/cache/save")]
    run = next(i for i, s in enumerate(steps) if "paper-digest run" in s.get("run", ""))
    assert uses.index("actions/cache/restore") < run < uses.index("actions/cache/save")
    # The store's folder, as the default store path has it.
    assert restore["with"]["path"] == save["with"]["path"] == str(StoreSettings().path.parent)
    # A new key each run (a cache entry is never overwritten), the newest found by prefix.
    key = save["with"]["key"]
    assert restore["with"]["key"] == key and "${{ github.run_id }}" in key
    [prefix] = restore["with"]["restore-keys"].split()
    assert key.startswith(prefix)
    # Saved even when the pass failed part-way: what it recorded must not be lost.
    assert "always()" in save["if"]
    env = steps[run]["env"]
    assert secret_names() <= set(env)
    assert all(value == f"${{{{ secrets.{name} }}}}" for name, value in env.items())
    assert job["timeout-minutes"] and workflow()["concurrency"]["cancel-in-progress"] is False


# ------------------------------------------------------------------ container


def containerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "container" / "Containerfile").read_text())
    out = []
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def exec_form(arguments: str) -> list[str]:
    parsed = json.loads(arguments)
    assert isinstance(parsed, list) and all(isinstance(a, str) for a in parsed)
    return parsed


def test_containerfile_builds_from_the_repository_and_serves_as_a_non_root_user():
    steps = containerfile()
    instructions = [word for word, _ in steps]
    assert steps[0] == ("FROM", "python:3.11-slim")
    for word, arguments in steps:
        if word == "COPY":
            *sources, _ = arguments.split()
            for source in sources:
                assert (ROOT / source).exists(), f"COPY {source}: not in the build context"
    [user] = [a for w, a in steps if w == "USER"]
    assert user not in ("root", "0")
    assert instructions.index("USER") < instructions.index("ENTRYPOINT")
    [volume] = [exec_form(a) for w, a in steps if w == "VOLUME"]
    argv = [*exec_form(dict(steps)["ENTRYPOINT"]), *exec_form(dict(steps)["CMD"])]
    args = accepted(argv)
    assert args.command == "serve" and args.config == "/config/digest.toml"
    assert volume == ["/data"]
    assert dict(steps)["EXPOSE"] == str(WebSettings().port)


@pytest.mark.integration
def test_the_health_check_passes_against_the_web_app_and_fails_without_it(tmp_path):
    from digest.web.server import start_in_background

    health = dict(containerfile())["HEALTHCHECK"]
    argv = exec_form(health.split(" CMD ", 1)[1])
    default = f"http://127.0.0.1:{WebSettings().port}/healthz"
    assert argv[:2] == ["python", "-c"] and default in argv[2]
    config = feed_and_config(tmp_path, tmp_path / "digest.db")
    config.write_text(config.read_text() + '[web]\nbase_url = "https://papers.example.org"\n')
    settings = load_settings(config, env={"DIGEST_WEB_SECRET": "k" * 40,
                                          "DIGEST_SLACK_WEBHOOK": "https://hooks.example/x"})
    server = start_in_background(replace(settings, web=replace(settings.web, port=0)))
    check = [sys.executable, "-c", argv[2].replace(default, server.url + "/healthz")]
    try:
        assert subprocess.run(check, capture_output=True, timeout=60).returncode == 0
    finally:
        server.stop()
    assert subprocess.run(check, capture_output=True, timeout=60).returncode != 0


def test_compose_example_builds_the_containerfile_with_the_store_in_a_volume():
    compose = yaml.safe_load((DEPLOY / "container" / "compose.yaml").read_text())
    [service] = compose["services"].values()
    context = (DEPLOY / "container" / service["build"]["context"]).resolve()
    assert context == ROOT
    assert (context / service["build"]["dockerfile"]) == DEPLOY / "container" / "Containerfile"
    mounts = {m.split(":")[1]: m.split(":")[0] for m in service["volumes"]}  # target: source
    steps = dict(containerfile())
    assert mounts["/data"] in compose["volumes"]  # a named volume, kept across rebuilds
    assert exec_form(steps["CMD"])[2] in mounts  # the config the command reads is mounted
    assert secret_names() <= set(service["environment"])
    assert service["ports"][0].rsplit(":", 1)[1] == steps["EXPOSE"]


# ------------------------------------------------------------------ README


def test_readme_deploying_section_names_every_recipe():
    readme = (ROOT / "README.md").read_text()
    found = re.search(r"^## Deploying\n(.*?)(?=^## |\Z)", readme, re.S | re.M)
    assert found is not None
    section = found.group(1)
    for path in sorted(p for p in DEPLOY.rglob("*") if p.is_file()):
        assert str(path.relative_to(ROOT)) in section, path
