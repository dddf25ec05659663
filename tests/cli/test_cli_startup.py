"""What ``pipenb run`` imports: only the command group it runs, and none of the modules that
were taken off its start-up (bench/README.md, "Engine benchmarks", start-up). A guard, not a
timing: it fails when an import brings one of them back."""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipenb.cli import GROUPS, build_parser
from pipenb.cli.startup import collector_paused

from support.cli import cli_env

#: Modules a files -> actions -> file ``pipenb run`` must not import: the other command groups
#: and the settings, agent and server code behind them.
NOT_ON_RUN = (
    "pipenb.cli.agent",
    "pipenb.cli.server",
    "pipenb.cli.remote",
    "pipenb.agent",
    "pipenb.server",
    "pipenb.server_settings",
    "pipenb.setting",
    "pipenb.client",
)

PIPE = """\
name: startup-guard
input:
  files: {path: "%(src)s", follow: false, format: json}
actions:
  - filter: level in ["WARN", "ERROR"]
  - add: {env: prod}
  - rename: {msg: message}
output:
  file: {path: "%(out)s"}
"""

#: runs ``pipenb run`` the way ``python -m pipenb run`` does, then reports what was imported
PROBE = """\
import gc, json, sys
from pipenb.cli import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "modules": sorted(sys.modules), "gc": gc.isenabled()}))
"""


@pytest.mark.parametrize("group", list(GROUPS))
def test_groups_name_exactly_the_commands_each_module_registers(group: str) -> None:
    sub = argparse.ArgumentParser().add_subparsers()
    importlib.import_module(f"pipenb.cli.{group}").register(sub)
    assert tuple(sub.choices) == GROUPS[group]


def test_a_named_command_registers_only_its_group_and_no_command_registers_all() -> None:
    def commands(parser: argparse.ArgumentParser) -> list[str]:
        (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        return list(sub.choices)

    assert commands(build_parser("run")) == list(GROUPS["local"])
    everything = [name for names in GROUPS.values() for name in names]
    assert commands(build_parser()) == everything
    assert commands(build_parser("no-such-command")) == everything


def test_run_imports_neither_other_command_groups_nor_their_settings(tmp_path: Path) -> None:
    src, out = tmp_path / "in.ndjson", tmp_path / "out.ndjson"
    src.write_text('{"level": "WARN", "msg": "slow"}\n{"level": "INFO", "msg": "ok"}\n')
    pipe = tmp_path / "pipe.yml"
    pipe.write_text(PIPE % {"src": src, "out": out})
    argv = ["run", str(pipe), "--data-dir", str(tmp_path / "data"), "-q"]
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, *argv],
        capture_output=True,
        text=True,
        env=cli_env(),
        cwd=tmp_path,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.splitlines()[-1])
    assert report["code"] == 0
    assert json.loads(out.read_text()) == {"level": "WARN", "message": "slow", "env": "prod"}
    modules = report["modules"]
    brought_back = [m for m in modules if m.startswith(NOT_ON_RUN)]
    assert brought_back == [], f"pipenb run imports {brought_back}: keep them off its start-up"
    assert report["gc"] is True  # paused for the start-up only, never left off for the run


def test_the_collector_is_paused_inside_the_block_and_back_as_it_was_after() -> None:
    assert gc.isenabled()
    with pytest.raises(RuntimeError), collector_paused():
        assert not gc.isenabled()
        raise RuntimeError("a failed start-up")
    assert gc.isenabled()  # back on, even after an error
    gc.disable()
    try:
        with collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # it was off before: it stays off
    finally:
        gc.enable()


def test_a_paused_block_with_freeze_leaves_what_it_made_out_of_the_collections() -> None:
    before = gc.get_freeze_count()
    try:
        with collector_paused(freeze=True):
            made = [{"n": i} for i in range(1000)]
        assert gc.get_freeze_count() >= before + len(made)
        assert gc.isenabled()
    finally:
        gc.unfreeze()  # the test process's objects back in the collector's care
