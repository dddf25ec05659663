"""``lookup``: CSV, JSON and inline tables, fields and target, misses, located validation errors
for a missing table or key column, reload when the file changes, and the max-rows bound."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import pipenb
from pipenb.engine.base import RunContext
from pipenb.engine.build import compile_chain
from pipenb.errors import PipeSyntaxError
from pipenb.lang.validate import load_pipe

HOSTS = "host,team,owner,rack\nweb1,web,alice,r1\ndb1,data,bob,r2\n"


def text(lookup: str, more: str = "") -> str:
    return (
        "name: l\ninput: {stdin: {}}\nactions:\n"
        f"  - lookup: {lookup}\n{more}output: {{print: {{}}}}\n"
    )


def run(lookup: str, events: list[dict], more: str = "") -> pipenb.PreviewResult:
    return pipenb.Pipe.from_yaml(text(lookup, more)).preview(events, limit=None)


def test_csv_table_adds_the_chosen_fields(tmp_path: Path):
    (tmp_path / "hosts.csv").write_text(HOSTS)
    t = tmp_path / "hosts.csv"
    r = run(
        f"{{table: '{t}', key: host, fields: [team, owner]}}",
        [{"host": "web1"}, {"host": "db1", "x": 1}, {"host": "nope"}, {"y": 2}],
    )
    assert r.events == [
        {"host": "web1", "team": "web", "owner": "alice"},
        {"host": "db1", "x": 1, "team": "data", "owner": "bob"},
        {"host": "nope"},
        {"y": 2},
    ]


def test_json_table_and_inline_rows_target_and_text_keys(tmp_path: Path):
    t = tmp_path / "codes.json"
    t.write_text(json.dumps({"200": {"text": "OK"}, "404": {"text": "Not Found"}}))
    r = run(f"{{table: '{t}', key: status, target: http}}", [{"status": 404}, {"status": 200}])
    assert [e["http"] for e in r.events] == [{"text": "Not Found"}, {"text": "OK"}]
    r = run(
        "{rows: [{code: E1, what: disk}, {code: E2, what: net}], key: err.code, column: code}",
        [{"err": {"code": "E2"}}],
    )
    assert r.events == [{"err": {"code": "E2"}, "what": "net"}]


def test_misses_can_drop_or_go_to_errors():
    rows = "rows: [{host: a, team: t}]"
    r = run(f"{{{rows}, key: host, on-miss: drop}}", [{"host": "a"}, {"host": "b"}])
    assert r.events == [{"host": "a", "team": "t"}]
    r = run(f"{{{rows}, key: host, on-miss: error}}", [{"host": "b"}])
    assert r.events == [] and len(r.errors) == 1
    assert "no row for the value of 'host'" in str(r.errors[0])


def test_missing_table_is_a_located_error(tmp_path: Path):
    missing = tmp_path / "nope.csv"
    with pytest.raises(PipeSyntaxError) as err:
        load_pipe(text(f"{{table: '{missing}', key: host}}"))
    (p,) = err.value.problems
    assert p.line == 4
    assert "not found" in p.message and str(missing) in p.message


def test_missing_key_column_names_the_columns(tmp_path: Path):
    t = tmp_path / "hosts.csv"
    t.write_text(HOSTS)
    with pytest.raises(PipeSyntaxError) as err:
        load_pipe(text(f"{{table: '{t}', key: hostname}}"))
    (p,) = err.value.problems
    assert p.line == 4
    assert "no key column 'hostname'" in p.message and "host, owner, rack, team" in p.message
    with pytest.raises(PipeSyntaxError, match="no column 'tema'"):
        load_pipe(text(f"{{table: '{t}', key: host, fields: [tema]}}"))
    with pytest.raises(PipeSyntaxError, match="table: FILE"):
        load_pipe(text("{key: host}"))


def test_the_table_is_reloaded_when_the_file_changes(tmp_path: Path):
    t = tmp_path / "hosts.csv"
    t.write_text(HOSTS)
    spec = load_pipe(text(f"{{table: '{t}', key: host, fields: [team], reload-every: 0}}"))
    chain = compile_chain(spec, RunContext())
    assert chain.run([{"host": "web1"}])[0] == [{"host": "web1", "team": "web"}]
    t.write_text("host,team\nweb1,platform\nweb2,platform\n")
    st = t.stat()
    os.utime(t, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # a new stamp, surely
    out, _ = chain.run([{"host": "web1"}, {"host": "web2"}])
    assert out == [{"host": "web1", "team": "platform"}, {"host": "web2", "team": "platform"}]
    # a broken edit keeps the last good table
    t.write_text("nothost,team\nx,y\n")
    os.utime(t, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))
    out, _ = chain.run([{"host": "web2"}])
    assert out == [{"host": "web2", "team": "platform"}]


def test_max_rows_bounds_the_table(tmp_path: Path):
    t = tmp_path / "big.csv"
    t.write_text("host,team\n" + "".join(f"h{i},t\n" for i in range(11)))
    with pytest.raises(PipeSyntaxError, match=r"11 rows, more than max-rows \(10\)"):
        load_pipe(text(f"{{table: '{t}', key: host, max-rows: 10}}"))


# ------------------------------------------------------------------ a table that travels


def test_a_table_file_travels_with_the_pipe_to_the_agent(tmp_path: Path):
    """Pushed with ``files:``, the table is validated on the server (which has no such file),
    stored with the version and written next to the pipe by the agent's worker."""
    from pipenb.client import Client
    from pipenb.errors import ApiError

    from support.agentproc import AgentProcess, tmp_policy
    from support.cli import cli_env
    from support.files import read_ndjson
    from support.serverproc import ServerProcess
    from support.waiting import wait_until

    src, out = tmp_path / "in.log", tmp_path / "out.ndjson"
    src.write_text("web1\ndb1\nother\n")
    pipe = f"""
name: enrich
input: {{files: {{path: "{src}", start-at: beginning}}}}
actions:
  - rename: {{_raw: host}}
  - lookup: {{table: teams-travel.csv, key: host, fields: [team]}}
output: {{file: {{path: "{out}"}}}}
"""
    table = "host,team\nweb1,web\ndb1,data\n"
    assert not Path("teams-travel.csv").exists()
    server = ServerProcess(tmp_path / "server", enroll_key="ek-lookup").start()
    agent = None
    try:
        client = Client(server.url, server.token, timeout=10)
        with pytest.raises(ApiError) as err:  # without the file: a located error
            client.push(pipe)
        assert err.value.code == "invalid_pipe" and "teams-travel.csv" in str(err.value)
        assert "not found" in str(err.value)
        with pytest.raises(ApiError, match="plain file name"):
            client.push(pipe, files={"../x.csv": table})
        with pytest.raises(ApiError, match="no key column 'host'"):
            client.push(pipe, files={"teams-travel.csv": "name,team\nweb1,web\n"})
        pushed = client.push(pipe, files={"teams-travel.csv": table})
        assert pushed["created"] is True
        listed = {v["version"]: v for v in client.versions("enrich")["versions"]}
        assert listed[pushed["version"]]["files"] == ["teams-travel.csv"]
        # the same text with another table is a new version; pushed here as the CLI does
        (tmp_path / "conf").mkdir()
        (tmp_path / "conf" / "teams-travel.csv").write_text(table + "other,misc\n")
        (tmp_path / "enrich.yml").write_text(pipe)
        env = {**cli_env(), "PIPENB_URL": server.url, "PIPENB_TOKEN": server.token}
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pipenb",
                "pipes",
                "push",
                str(tmp_path / "enrich.yml"),
                "--table",
                str(tmp_path / "conf" / "teams-travel.csv"),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        assert f"pushed enrich version {pushed['version'] + 1}" in proc.stdout
        agent = AgentProcess(
            server.url,
            tmp_path / "agent",
            enroll_key="ek-lookup",
            name="lk",
            labels=["lookup-travel"],
            extra=tmp_policy(),
        )
        agent.start()
        aid = agent.wait_enrolled()
        client.deploy("enrich", labels=["lookup-travel"])
        wait_until(
            lambda: out.exists() and len(read_ndjson(out)) >= 3,
            30,
            "enriched events",
            agent.log_text,
        )
        assert read_ndjson(out) == [
            {"host": "web1", "team": "web"},
            {"host": "db1", "team": "data"},
            {"host": "other", "team": "misc"},
        ]
        written = list((tmp_path / "agent" / "files").glob("*/teams-travel.csv"))
        assert len(written) == 1 and "other,misc" in written[0].read_text()
        assert aid
    finally:
        if agent is not None:
            agent.cleanup()
        server.kill()
