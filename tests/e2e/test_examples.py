"""The pipes in ``examples/``: they validate, their own tests pass, and the README commands work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from support import REPO_ROOT

ROOT = REPO_ROOT
EXAMPLES = ROOT / "examples"
PIPES = sorted(EXAMPLES.glob("*.yml"))
LOGHUB = ["apache", "openssh", "linux", "hdfs", "zookeeper"]


def cli(*args: str, cwd: Path = ROOT, tmp: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env["PIPENB_DATA_DIR"] = str(tmp / "state")  # nothing goes to ~/.local/state
    return subprocess.run(
        [sys.executable, "-m", "pipenb", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=120,
    )


def relative(paths: list[Path]) -> list[str]:
    return [str(p.relative_to(ROOT)) for p in paths]


def doc(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def test_the_loghub_examples_are_there():
    assert {p.stem for p in PIPES} >= set(LOGHUB)


def test_pipenb_check_accepts_every_example(tmp_path: Path):
    proc = cli("check", *relative(PIPES), tmp=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    oks = [line for line in proc.stdout.splitlines() if ": ok (" in line]
    assert len(oks) == len(PIPES)


def test_pipenb_test_passes_every_example(tmp_path: Path):
    proc = cli("test", *relative(PIPES), tmp=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    total = sum(len(doc(p).get("tests") or []) for p in PIPES)
    assert total >= 2 * len(PIPES)
    assert f"pipe tests: {total} passed, 0 failed" in proc.stdout
    assert "FAIL" not in proc.stdout


def test_pipenb_test_json_lists_every_case(tmp_path: Path):
    proc = cli("test", "--json", *relative(PIPES), tmp=tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert [r["file"] for r in report] == relative(PIPES)
    for entry, path in zip(report, PIPES):
        names = [t["name"] for t in doc(path).get("tests") or []]
        assert [t["name"] for t in entry["tests"]] == names
        assert all(t["passed"] for t in entry["tests"]), entry


@pytest.mark.parametrize("name", LOGHUB)
def test_loghub_example_shape(name: str):
    """files input on a param path defaulting to a copy in examples/data, extract, file output."""
    d = doc(EXAMPLES / f"{name}.yml")
    default = d["params"]["path"]["default"]
    assert default.startswith("examples/data/")
    assert (ROOT / default).is_file()
    assert d["input"]["files"]["path"] == "{{path}}"
    assert "extract" in d["actions"][0]
    assert d["output"]["file"]["path"] == "{{out}}"
    assert 2 <= len(d["tests"]) <= 4


@pytest.mark.parametrize("name", LOGHUB)
def test_preview_reads_the_default_sample(tmp_path: Path, name: str):
    """`pipenb preview examples/X.yml --limit 20` from the repo root, as the README says."""
    proc = cli("preview", f"examples/{name}.yml", "--limit", "20", "--json", tmp=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert len(result["events"]) == 20
    assert result["errors"] == []
    assert all(e.get("message") for e in result["events"])
    assert all("_raw" not in e for e in result["events"])


def test_run_needs_an_output_path(tmp_path: Path):
    work = tmp_path / "work"
    work.mkdir()
    proc = cli(
        "run",
        str(EXAMPLES / "apache.yml"),
        "--data-dir",
        str(tmp_path / "state"),
        cwd=work,
        tmp=tmp_path,
    )
    assert proc.returncode == 1
    assert "parameter 'out' has no default" in proc.stderr
    assert list(work.iterdir()) == []


def test_readme_describes_every_example():
    readme = (EXAMPLES / "README.md").read_text(encoding="utf-8")
    for path in PIPES:
        assert f"{path.name}" in readme, path.name
    for command in (
        "pipenb test examples/*.yml",
        "pipenb preview examples/apache.yml --limit 20",
        "pipenb run examples/apache.yml --param out=/tmp/apache.ndjson",
    ):
        assert command in readme


def test_sample_data_carries_its_license():
    data = EXAMPLES / "data"
    assert "https://github.com/logpai/loghub" in (data / "LICENSE").read_text(encoding="utf-8")
    assert "Loghub" in (data / "CITATION").read_text(encoding="utf-8")
    assert "loghub" in (data / "README.md").read_text(encoding="utf-8").lower()
