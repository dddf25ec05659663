"""JupyterLab as ``make run`` starts it: kernels it starts reach the API with no setup, a browser
session (cookie) needs Jupyter's XSRF token to change anything, and Ctrl-C stops everything."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import requests
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from support.labproc import PREFIX, LabProcess
from support.waiting import wait_until


async def run_in_kernel(lab: LabProcess, code: str, timeout: float = 60.0) -> str:
    """Start a kernel through JupyterLab's REST API, run ``code`` over its websocket, return what
    it printed, and shut the kernel down."""
    auth = {"Authorization": f"token {lab.token}"}
    kernel = requests.post(f"{lab.url}/api/kernels", headers=auth, json={}, timeout=30).json()
    try:
        ws_url = f"ws://127.0.0.1:{lab.port}/api/kernels/{kernel['id']}/channels"
        conn = await websocket_connect(HTTPRequest(ws_url, headers=auth))
        msg_id = uuid.uuid4().hex
        request = {
            "header": {
                "msg_id": msg_id,
                "msg_type": "execute_request",
                "session": uuid.uuid4().hex,
                "username": "test",
                "version": "5.3",
                "date": "",
            },
            "parent_header": {},
            "metadata": {},
            "content": {"code": code, "silent": False, "store_history": False},
            "channel": "shell",
            "buffers": [],
        }
        await conn.write_message(orjson.dumps(request).decode())
        printed: list[str] = []
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"no reply from the kernel; printed so far: {printed}"
            raw = await asyncio.wait_for(conn.read_message(), left)
            assert raw is not None, "the kernel's websocket closed"
            if isinstance(raw, bytes):
                continue  # binary frames carry buffers; our messages are text
            msg = orjson.loads(raw)
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind = msg["header"]["msg_type"]
            if kind == "stream":
                printed.append(msg["content"]["text"])
            elif kind == "error":
                raise AssertionError("\n".join(msg["content"]["traceback"]))
            elif kind == "execute_reply":
                conn.close()
                return "".join(printed)
    finally:
        requests.delete(f"{lab.url}/api/kernels/{kernel['id']}", headers=auth, timeout=30)


def test_a_kernel_started_by_jupyterlab_reaches_the_api_with_no_setup(lab: LabProcess) -> None:
    code = (
        "import os, pipenb\n"
        "print(os.environ['PIPENB_URL'])\n"
        "print([a['name'] for a in pipenb.Client().agents()['agents']])\n"
    )
    printed = asyncio.run(run_in_kernel(lab, code)).splitlines()
    assert printed[0].rstrip("/") == lab.url
    assert "'local'" in printed[1]


def test_a_browser_session_needs_the_xsrf_token_to_write(lab: LabProcess) -> None:
    browser = requests.Session()
    # the token in the URL logs the browser in: Jupyter answers with a login cookie and _xsrf
    browser.get(f"{lab.url}/lab?token={lab.token}", timeout=30).raise_for_status()
    assert any(c.name.startswith("username-") for c in browser.cookies)
    xsrf = browser.cookies.get("_xsrf")
    assert xsrf

    assert browser.get(lab.url + PREFIX + "/pipes", timeout=30).status_code == 200
    pipe = "name: from-browser\ninput: {echo: {events: [{}]}}\noutput: {discard: {}}\n"
    body = {"yaml": pipe}
    forged = browser.post(lab.url + PREFIX + "/pipes", json=body, timeout=30)
    assert forged.status_code == 403, forged.text  # a cross-site form could send the cookie
    assert requests.get(lab.url + PREFIX + "/pipes/from-browser", timeout=30).status_code in (
        401,
        403,
    )
    ok = browser.post(
        lab.url + PREFIX + "/pipes", json=body, headers={"X-XSRFToken": xsrf}, timeout=30
    )
    assert ok.status_code in (200, 201), ok.text
    assert lab.get("/pipes/from-browser", timeout=30).json()["pipe"] == "from-browser"


def test_ctrl_c_stops_jupyterlab_and_the_agent(tmp_path: Path) -> None:
    own = LabProcess(tmp_path / "lab").start()
    try:
        agent_pid = own.local_agent(timeout=10)["attributes"]["pid"]  # type: ignore[index]
        assert own.proc is not None
        own.interrupt()
        code = own.proc.wait(60)
        assert code is not None

        def agent_gone() -> bool:
            try:
                Path(f"/proc/{agent_pid}").stat()
            except FileNotFoundError:
                return True
            status = Path(f"/proc/{agent_pid}/status").read_text()
            return "State:\tZ" in status

        wait_until(agent_gone, 30, "the agent to exit")
        refused: Any = None
        try:
            requests.get(own.url + PREFIX + "/health", timeout=2)
        except requests.ConnectionError as exc:
            refused = exc
        assert refused is not None, "JupyterLab still answers after Ctrl-C"
    finally:
        own.kill()
