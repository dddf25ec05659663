"""``pipenb agent --server URL1,URL2``: which URL the agent uses, and when it moves on."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipenb.agent.servers import Servers, parse_servers
from pipenb.errors import ServerError
from pipenb.tls import TlsOptions

A, B, C = "http://127.0.0.1:1", "http://127.0.0.1:2", "http://127.0.0.1:3"


def servers(spec: str, tmp_path: Path) -> Servers:
    return Servers(spec, str(tmp_path), TlsOptions())


def test_urls_are_split_cleaned_and_kept_in_order() -> None:
    assert parse_servers(f" {A} , {B},{A},, ") == [A, B]
    with pytest.raises(ValueError, match="no URL"):
        parse_servers(" , ")
    with pytest.raises(ValueError, match="mix http and https"):
        parse_servers("http://a:1,https://b:2")


def test_a_server_that_does_not_answer_hands_over_to_the_next(tmp_path: Path) -> None:
    s = servers(f"{A},{B},{C}", tmp_path)
    assert s.current == A
    assert s.away(A, ServerError(0, "connection refused")) is True  # try B now
    assert s.current == B
    assert s.away(B, ServerError(502, "bad gateway")) is True  # a balancer's "not there"
    assert s.current == C
    # every URL failed in a row: back off before trying A again
    assert s.away(C, ServerError(503, "unavailable")) is False
    assert s.current == A
    s.answered()
    assert s.away(A, ServerError(504, "timeout")) is True


def test_refusals_and_link_problems_keep_the_server(tmp_path: Path) -> None:
    s = servers(f"{A},{B}", tmp_path)
    for exc in (
        ServerError(401, "invalid key", code="invalid_key"),
        ServerError(400, "bad"),
        ServerError(413, "too large"),
        ServerError(0, "TLS: unknown CA", tls=True),  # the fleet's CA: the next is no better
    ):
        assert s.away(A, exc) is False
        assert s.current == A


def test_a_late_failure_of_the_previous_server_does_not_skip_one(tmp_path: Path) -> None:
    s = servers(f"{A},{B},{C}", tmp_path)
    s.away(A, ServerError(0, "reset"))
    # a superseded request to A fails after the move: B stays
    assert s.away(A, ServerError(0, "reset")) is True
    assert s.current == B


def test_one_url_backs_off_as_before(tmp_path: Path) -> None:
    s = servers(A, tmp_path)
    assert s.away(A, ServerError(0, "refused")) is False
    assert s.current == A


def test_the_command_line_refuses_mixed_schemes(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "pipenb", "agent", "--server", "http://127.0.0.1:1,https://x:2",
         "--enroll-key", "k", "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 2
    assert "pipenb agent: --server: the URLs mix http and https" in r.stderr
