"""Every setting is declared once and reachable from the command line and from Jupyter.

The flags of ``pipenb server`` and the traitlets of ``PipenbExtension`` are generated from
``ServerSettings``; these tests hold each field to having both, or a stated reason not to, so the
next setting cannot be forgotten in one of them.
"""

from __future__ import annotations

import dataclasses

import pytest

from pipenb.cli import build_parser
from pipenb.server_settings import ServerSettings
from pipenb.setting import declared


def _subparser(name: str):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return sub.choices[name]


def _flags(name: str) -> dict[str, object]:
    return {s: a for a in _subparser(name)._actions for s in a.option_strings}


def test_every_server_field_is_declared():
    names = {s.name for s in declared(ServerSettings)}
    assert names == {f.name for f in dataclasses.fields(ServerSettings)}


@pytest.mark.parametrize("s", declared(ServerSettings), ids=lambda s: s.name)
def test_server_setting_has_a_flag(s):
    assert not s.meta.no_cli, f"{s.name}: every server setting is a flag of pipenb server"
    assert s.flag in _flags("server"), f"pipenb server has no {s.flag}"


@pytest.mark.parametrize("s", declared(ServerSettings), ids=lambda s: s.name)
def test_server_setting_has_a_traitlet_or_a_reason(s):
    pytest.importorskip("jupyter_server")
    from pipenb.jupyter_ext.app import PipenbExtension

    traits = PipenbExtension.class_traits(config=True)
    if s.meta.no_jupyter:
        assert s.name not in traits
        assert len(s.meta.no_jupyter) > 20, "say why the setting has no traitlet"
    else:
        assert s.name in traits, f"PipenbExtension has no traitlet {s.name}"
        default = traits[s.name].default_value
        if s.name != "db_url":  # Jupyter's default is a file in its data dir
            assert default == s.default


def test_flags_fill_the_settings(monkeypatch):
    monkeypatch.delenv("PIPENB_RETENTION", raising=False)
    from pipenb.setting import flag_values

    args = build_parser().parse_args(
        ["server", "--clock-skew", "5", "--max-body", "2KiB", "--enroll-fail-burst", "3"]
    )
    values = flag_values(ServerSettings, args)
    assert values["clock_skew"] == 5.0
    assert values["max_body"] == 2048
    assert values["enroll_fail_burst"] == 3
    assert values["retention"] == ServerSettings.retention
    assert values["offline_after"] is None


def test_old_flag_and_traitlet_names_still_exist():
    flags = _flags("server")
    for flag in (
        "--db-url",
        "--token",
        "--enroll-key",
        "--poll-interval",
        "--long-poll",
        "--retention",
        "--header-timeout",
        "--secret-key-file",
        "--wheel",
        "--tls-cert",
        "--tls-key",
        "--tls-client-ca",
        "--tls-self-signed",
        "--tls-names",
        "--max-checkin-body",
        "--max-pipe-body",
        "--max-body",
        "--max-connections",
        "--host",
        "--port",
        "--data-dir",
    ):
        assert flag in flags
    pytest.importorskip("jupyter_server")
    from pipenb.jupyter_ext.app import PipenbExtension

    traits = PipenbExtension.class_traits(config=True)
    for name in (
        "db_url",
        "enroll_key",
        "poll_interval",
        "long_poll",
        "offline_after",
        "secret_key_file",
        "roles",
        "default_role",
        "wheel",
        "max_checkin_body",
        "max_pipe_body",
        "max_body",
    ):
        assert name in traits


def test_every_agent_field_is_a_flag_or_says_why_not():
    from pipenb.agent.settings import AgentSettings

    decl = declared(AgentSettings)
    assert {s.name for s in decl} == {f.name for f in dataclasses.fields(AgentSettings)}
    flags = _flags("agent")
    for s in decl:
        if s.meta.no_cli:
            assert s.flag not in flags
        else:
            assert s.flag in flags, f"pipenb agent has no {s.flag} for {s.name}"


def test_agent_flags_keep_their_names_and_variables(monkeypatch):
    monkeypatch.setenv("PIPENB_AGENT_ID", "a-7")
    monkeypatch.setenv("PIPENB_DRAIN_TIMEOUT", "4.5")
    args = build_parser().parse_args(["agent", "--policy", "p.yaml", "--capture-limit", "50"])
    assert args.id == "a-7"
    assert args.drain_timeout == 4.5
    assert args.policy == "p.yaml"
    assert args.capture_limit == 50
    for flag in (
        "--server",
        "--id",
        "--api-key",
        "--enroll-key",
        "--name",
        "--data-dir",
        "--policy",
        "--allow-read",
        "--allow-write",
        "--allow-connect",
        "--allow-listen",
        "--allow-exec",
        "--allow-scripts",
        "--allow-preview",
        "--disable",
        "--run-as",
        "--long-poll",
        "--metrics-address",
        "--metrics-every",
        "--max-log-level",
        "--settings-bounds",
        "--ca-file",
        "--ca-fingerprint",
        "--cert",
        "--key",
        "--insecure-http",
        "--labels",
    ):
        assert flag in _flags("agent")
