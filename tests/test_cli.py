"""The command line: help that teaches, check's report, exit statuses, and docs that match."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from digest import config
from digest.cli import _parser, main
from digest.store import Store

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = ("run", "serve", "check", "explain", "status", "requeue")


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_has_help_with_an_example(command, capsys):
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert "example:" in out and f"paper-digest {command}" in out and "--config" in out


def test_top_level_help_lists_commands_and_exit_statuses(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in COMMANDS:
        assert command in out
    assert "exit status" in out


def test_check_reports_every_problem_with_its_key_path(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text("""version = 1
[[sources]]
name = "a"
kind = "arxiv_rss"
categories = ["cs.CL"]
[[watchlists]]
name = "w0"
keywords = ["x"]
channels = ["team-email"]
[[watchlists]]
name = "w1"
keywords = ["x"]
channels = ["team-email"]
[[watchlists]]
name = "w2"
keywords = ["", "ok"]
channels = ["team-email"]
[channels.team-email]
kind = "email"
from = "a@example.org"
to = ["b@example.org"]
smtp_port = 0
""")
    assert main(["check", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "2 problems" in err
    assert "watchlists[2].keywords[0]: empty phrase" in err
    assert "channels.team-email.smtp_port: must be 1-65535" in err


def test_check_accepts_a_good_config_and_names_missing_secrets(tmp_path, capsys, monkeypatch):
    example = ROOT / "config" / "digest.example.toml"
    for name in ("DIGEST_SMTP_USER", "DIGEST_SMTP_PASSWORD", "DIGEST_SLACK_WEBHOOK"):
        monkeypatch.delenv(name, raising=False)
    assert main(["check", "--config", str(example)]) == 2
    assert "environment variable DIGEST_SLACK_WEBHOOK is not set" in capsys.readouterr().err
    monkeypatch.setenv("DIGEST_SMTP_USER", "me")
    monkeypatch.setenv("DIGEST_SMTP_PASSWORD", "secret-password")
    monkeypatch.setenv("DIGEST_SLACK_WEBHOOK", "https://hooks.slack.example/T/B/secret-token")
    monkeypatch.setenv("DIGEST_DISCORD_WEBHOOK", "https://discord.example/api/webhooks/1/secret")
    monkeypatch.setenv("DIGEST_TEAMS_WEBHOOK", "https://teams.example/workflows/1?sig=secret")
    monkeypatch.setenv("DIGEST_WEBHOOK_URL", "https://hooks.example/secret")
    monkeypatch.setenv("DIGEST_APPRISE_URLS", "ntfy://ntfy.example.org/papers")
    assert main(["check", "--config", str(example)]) == 0
    captured = capsys.readouterr()
    from digest.deliver import CHANNELS
    from digest.sources import SOURCES

    # the example shows every source and channel kind once
    assert (f"ok ({len(SOURCES)} sources, 1 watchlist, {len(CHANNELS)} channels)"
            in captured.out)
    assert "secret" not in captured.out + captured.err


def test_missing_config_file_is_exit_2(tmp_path, capsys):
    assert main(["run", "--once", "--config", str(tmp_path / "none.toml")]) == 2
    assert "config file not found" in capsys.readouterr().err


def test_python_dash_m_runs_the_same_command():
    result = subprocess.run([sys.executable, "-m", "digest", "--version"], capture_output=True,
                            text=True, check=True)
    assert result.stdout.startswith("paper-digest ")


# ------------------------------------------------------------------ docs match the code


def documented_keys() -> set[str]:
    text = (ROOT / "config" / "digest.example.toml").read_text()
    keys = set(re.findall(r"^\s*#?\s*([a-z_]+)\s*=", text, flags=re.MULTILINE))
    keys |= set(re.findall(r"^\s*\[+([a-z_]+)", text, flags=re.MULTILINE))
    return keys


def test_every_config_key_is_documented_in_the_example():
    from digest.deliver import CHANNELS
    from digest.sources import SOURCES

    every = set(config.TOP_KEYS) | set(config.STORE_KEYS) | set(config.HTTP_KEYS) | set(
        config.SCHEDULE_KEYS) | set(config.WEB_KEYS) | set(config.WATCHLIST_KEYS) | set(
        config.SOURCE_KEYS) | set(config.CHANNEL_KEYS)
    for kind in (*SOURCES.values(), *CHANNELS.values()):
        every |= set(kind.Options.KEYS)
    missing = every - documented_keys()
    assert not missing, f"not in config/digest.example.toml: {sorted(missing)}"


def test_every_source_and_channel_kind_is_documented():
    from digest.deliver import CHANNELS
    from digest.sources import SOURCES

    example = (ROOT / "config" / "digest.example.toml").read_text()
    readme = (ROOT / "README.md").read_text()
    for kind in (*SOURCES, *CHANNELS):
        assert f'kind = "{kind}"' in example
        assert f"`{kind}`" in readme or f"**{kind}**" in readme


def test_every_command_and_option_is_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    assert readme.index("make demo") < readme.index("## Using it")
    assert readme.index("make test") < readme.index("## Using it")
    subparsers = next(a for a in _parser()._actions if a.dest == "command")
    for name, sub in subparsers.choices.items():
        assert f"paper-digest {name}" in readme
        for action in sub._actions:
            long = [o for o in action.option_strings if o.startswith("--")]
            if long and long[0] not in ("--help", "--verbose", "--config"):
                assert long[0] in readme, f"{name} {long[0]} not in README"


def test_a_kind_is_one_module_and_one_registry_line():
    """config.py names no kind: each kind's module declares its keys, secrets and limits."""
    from digest.deliver import CHANNELS
    from digest.sources import SOURCES

    text = (ROOT / "digest" / "config.py").read_text()
    for registry in (SOURCES, CHANNELS):
        for kind, cls in registry.items():
            assert cls.kind == kind
            assert f'"{kind}"' not in text, f"config.py knows the kind {kind}"
            module = sys.modules[cls.__module__]
            assert module.__doc__ and cls.Options.__module__ == cls.__module__
            assert set(cls.Options.KEYS).isdisjoint(config.SOURCE_KEYS + config.CHANNEL_KEYS)


def _one_source_config(tmp_path: Path, url: str, store: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(f"""version = 1
[store]
path = "{store}"
[[sources]]
name = "local"
kind = "feed"
url = "{url}"
[[watchlists]]
name = "w"
keywords = ["x"]
channels = ["m"]
[channels.m]
kind = "email"
from = "a@example.org"
to = ["b@example.org"]
""")
    return path


def test_check_reports_unreachable_paths(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    config = _one_source_config(tmp_path, str(tmp_path / "missing.xml"),
                                str(blocker / "digest.db"))
    assert main(["check", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert f"sources[0].url: no such file: {tmp_path / 'missing.xml'}" in err
    assert "store.path: cannot create" in err


def test_a_second_run_on_the_same_store_exits_3_without_doing_anything(tmp_path, capsys):
    from digest.store import Store

    feed = tmp_path / "feed.xml"
    feed.write_text("<rss><channel><title>t</title></channel></rss>")
    config = _one_source_config(tmp_path, str(feed), str(tmp_path / "d.db"))
    with Store.open(tmp_path / "d.db") as store, store.run_lock():
        assert main(["run", "--once", "--config", str(config)]) == 3
    err = capsys.readouterr().err
    assert "another paper-digest run is using" in err and f"pid {os.getpid()}" in err
    with Store.open(tmp_path / "d.db") as store:
        assert store.db.execute("SELECT count(*) FROM source_state").fetchone()[0] == 0


def test_explain_shows_each_watchlists_verdict_part_by_part(tmp_path, monkeypatch, capsys):
    import shutil

    shutil.copytree(ROOT / "config", tmp_path / "config")
    monkeypatch.chdir(tmp_path)
    config = "config/demo.toml"
    assert main(["run", "--once", "--config", config, "--outbox", "outbox"]) == 0
    capsys.readouterr()
    assert main(["explain", "--config", config, "2611.04001v1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("arxiv:2611.04001  LoRA-Flow")
    assert "MATCH efficient-llms: score 3.25 (min_score 1)" in out
    assert '+2.00  "LoRA" in title (weight 1, 1x)' in out
    assert '+1.25  "LoRA" in abstract (weight 1, 2x)' in out
    assert "MATCH people: score 3" in out and "+3.00  author Sinong Wang" in out
    assert "no    alignment: score 0 (min_score 1) — no term, author" in out
    assert "delivered to team-email with efficient-llms" in out

    assert main(["explain", "--config", config, "Survey of Parameter-Efficient"]) == 0
    out = capsys.readouterr().out
    assert 'vetoed by exclusion "survey" in title and abstract' in out

    assert main(["explain", "--config", config, "no such paper at all"]) == 1
    assert "no stored paper matches" in capsys.readouterr().err

    # Words that several titles hold name no paper: each is listed, none explained.
    assert main(["explain", "--config", config, "LoRA"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    head, *listed = captured.err.splitlines()
    assert "stored papers match 'LoRA'; name one by its arXiv id" in head
    assert 2 <= len(listed) <= 5 and all("LoRA" in line for line in listed)
    assert any(line.strip().startswith("arxiv:2611.04001  LoRA-Flow") for line in listed)


def test_requeue_names_an_unknown_channel(tmp_path, capsys):
    feed = tmp_path / "feed.xml"
    feed.write_text("<rss><channel><title>t</title></channel></rss>")
    config = _one_source_config(tmp_path, str(feed), str(tmp_path / "d.db"))
    assert main(["requeue", "--config", str(config), "nope"]) == 2
    assert "no channel named 'nope' (known: m)" in capsys.readouterr().err
    Store.open(tmp_path / "d.db").close()
    assert main(["requeue", "--config", str(config), "m"]) == 0
    assert "m: 0 digests with 0 papers" in capsys.readouterr().out


@pytest.mark.parametrize("command", [
    ["explain", "2611.04001"], ["preview", "-w", "w"], ["requeue", "m"], ["drop", "1"]])
def test_a_command_that_reads_the_store_does_not_create_a_missing_one(tmp_path, capsys,
                                                                      command):
    """Run from the wrong directory, a relative store path names a store that is not there:
    said so, and no empty store is left behind to be read, backed up or reported on."""
    config = _one_source_config(tmp_path, str(tmp_path / "feed.xml"), str(tmp_path / "d.db"))
    assert main([command[0], "--config", str(config), *command[1:]]) == 2
    assert "no store yet; run 'paper-digest run --once' first" in capsys.readouterr().err
    assert not (tmp_path / "d.db").exists()


def test_arguments_that_name_nothing_are_refused_before_anything_runs(tmp_path, capsys):
    """A watchlist or channel the config does not define, a port that cannot be: exit 2,
    naming what is known, nothing fetched, sent or created."""
    feed = tmp_path / "feed.xml"
    feed.write_text("<rss><channel><title>t</title></channel></rss>")
    config = _one_source_config(tmp_path, str(feed), str(tmp_path / "d.db"))
    assert main(["run", "--once", "--config", str(config), "-w", "nope"]) == 2
    assert "no watchlist named 'nope' (known: w)" in capsys.readouterr().err
    assert not (tmp_path / "d.db").exists()
    Store.open(tmp_path / "d.db").close()
    assert main(["drop", "--config", str(config), "--channel", "nope"]) == 2
    assert "no channel named 'nope' (known: m)" in capsys.readouterr().err
    assert main(["drop", "--config", str(config)]) == 2
    assert "name the digests to drop by id" in capsys.readouterr().err
    for bad in ("99999", "0", "http"):
        with pytest.raises(SystemExit) as exit_:
            main(["web", "--config", str(config), "--port", bad])
        assert exit_.value.code == 2
        assert "argument --port" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["preview", "--config", str(config), "-w", "w", "--days", "0"])
    assert "argument --days: 0: must be at least 1" in capsys.readouterr().err


def test_the_command_starts_without_the_libraries_only_some_runs_need():
    """scikit-learn and scipy (learning from ratings) and inflect (forming plurals of new
    words) are imported by the runs that use them: each took a part of every start."""
    code = ("import sys, digest.cli; print(sorted(m for m in "
            "('sklearn', 'inflect', 'scipy.stats', 'scipy.sparse') if m in sys.modules))")
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True).stdout.strip()
    assert shown == "[]"
    # A matcher for watchlists without ratings stacks no models, so loads no scipy.
    code = ("import sys; from digest.ranking import ModelSet; ModelSet({}); "
            "print('scipy.sparse' in sys.modules)")
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True).stdout.strip()
    assert shown == "False"


def test_output_into_a_pipe_closed_early_ends_quietly(tmp_path):
    """`paper-digest check ... | head -0`: the reader is gone before the first line; the
    command stops with the shell's status for it, and no traceback."""
    config = _one_source_config(tmp_path, str(tmp_path / "feed.xml"), str(tmp_path / "d.db"))
    (tmp_path / "feed.xml").write_text("<rss><channel><title>t</title></channel></rss>")
    read, write = os.pipe()
    os.close(read)
    try:
        done = subprocess.run([sys.executable, "-m", "digest", "check", "--config", str(config)],
                              stdout=write, stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(write)
    assert done.returncode == 141
    assert done.stderr == ""
