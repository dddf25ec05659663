"""Requests that cannot stall the control plane, each against a real ``pipenb server`` on
127.0.0.1 (issue 11, part 4).

- Anonymous bodies are refused on their headers, before they are read: 40 clients streaming
  16 MiB each raise the server's RSS (``/proc/PID/status``) by less than 50 MB.
- A 9 MiB check-in with a valid agent key is a 413, and 20 agents checking in meanwhile keep
  their p99 under 100 ms (the bound the issue sets; the numbers seen are printed).
- Open connections are capped: the ones over the cap get 503 with ``Retry-After``, the server
  answers again once they close, and the log holds no traceback per connection; the cap stays
  under the process's open-file limit.
- An agent's metrics, logs and status for a deployment not assigned to it are dropped; a log
  line dated 2099 is stored at the server's time and expires with the retention.
- ``2**63`` in every integer query parameter and body field (found from the route table and
  the models, not listed by hand) is a 400.
- A flood of refused requests leaves a bounded number of log lines, and one line counting the
  rest.
"""

from __future__ import annotations

import asyncio
import logging
import logging.handlers
import multiprocessing as mp
import resource
import select
import socket
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson
import requests

from pipenb.server.handlers.params import QUERY_PARAMS
from pipenb.server.lograte import RepeatFilter
from pipenb.server.settings import ServerSettings

from support import REPO_ROOT
from support.agentproc import AgentProcess
from support.edgekit import add_agent, checkin, error_of, fill, make_world, operations, serves
from support.serverproc import PREFIX, ServerProcess
from support.waiting import wait_until

MiB = 1 << 20
BIG = 2**63


def rss_kb(pid: int, field: str = "VmRSS") -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0


def stream_body(
    port: int, path: str, total: int, *, token: str | None = None, chunked: bool = False
) -> tuple[int, float, bytes]:
    """Send a request head, then up to ``total`` bytes of body as fast as the server takes them,
    reading all the while; returns (status, seconds to the answer, answer)."""
    head = f"POST {PREFIX}{path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    if token:
        head += f"Authorization: Bearer {token}\r\n"
    head += "Transfer-Encoding: chunked\r\n\r\n" if chunked else f"Content-Length: {total}\r\n\r\n"
    piece = b"x" * 65536
    if chunked:
        piece = b"10000\r\n" + piece + b"\r\n"
    started = time.monotonic()
    answer = b""
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(head.encode())
        s.setblocking(False)
        sending = True
        while time.monotonic() - started < 60:
            readable, writable, _ = select.select([s], [s] if sending else [], [], 1.0)
            if readable:
                try:
                    chunk = s.recv(65536)
                except ConnectionResetError:
                    break
                if not chunk:
                    break
                answer += chunk
                if b"\r\n\r\n" in answer:
                    head_part, _, body = answer.partition(b"\r\n\r\n")
                    length = [
                        int(x.split(b":")[1])
                        for x in head_part.split(b"\r\n")
                        if x.lower().startswith(b"content-length:")
                    ]
                    if length and len(body) >= length[0]:
                        break
            if writable and sending:
                try:
                    sent += s.send(piece)
                except (BlockingIOError, InterruptedError):
                    pass
                except (BrokenPipeError, ConnectionResetError):
                    sending = False
                if sent >= total:
                    sending = False
    return status_of(answer), time.monotonic() - started, answer


# ------------------------------------------------------------------------------ bodies


def test_forty_anonymous_16mib_bodies_barely_move_the_servers_memory(tmp_path):
    with ServerProcess(tmp_path, enroll_key="ek") as srv:
        serves(srv)  # warm: the first requests import and allocate what any request needs
        for _ in range(20):
            stream_body(srv.port, "/agent/checkin", 200_000)
        before = rss_kb(srv.proc.pid)
        peak = [before]
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], rss_kb(srv.proc.pid))
                done.wait(0.02)  # a sampling period, not a synchronisation

        sampler = threading.Thread(target=sample)
        sampler.start()
        # no key, a user endpoint without a token, the open enrollment endpoint (by length and
        # chunked): every one of them 16 MiB
        kinds = [
            ("/agent/checkin", {}),
            ("/pipes", {}),
            ("/agent/enroll", {}),
            ("/agent/enroll", {"chunked": True}),
            ("/agent/checkin", {"token": "pnb_nokey_nosecret"}),
        ]
        results: list[tuple[str, int, float]] = []

        def one(i: int) -> None:
            path, kw = kinds[i % len(kinds)]
            status, took, _ = stream_body(srv.port, path, 16 * MiB, **kw)
            results.append((path + str(kw), status, took))

        threads = [threading.Thread(target=one, args=(i,)) for i in range(40)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        done.set()
        sampler.join()
        grew_mb = (peak[0] - before) / 1024
        print(f"\nRSS before {before} kB, peak {peak[0]} kB: +{grew_mb:.1f} MB; answers in "
              f"{max(r[2] for r in results):.2f} s at most")  # fmt: skip
        assert len(results) == 40
        for what, status, took in results:
            assert status in (401, 413), (what, status)
            assert took < 10, (what, took)  # refused on its head, not after 16 MiB
        assert {s for w, s, _ in results if "enroll" in w} == {413}
        assert {s for w, s, _ in results if "enroll" not in w} == {401}
        assert grew_mb < 50
        serves(srv)


def test_each_endpoint_has_its_own_limit_and_a_streamed_body_is_cut_at_it(tmp_path):
    with ServerProcess(tmp_path, extra=("--max-checkin-body", "64KiB")) as srv:
        key = add_agent(srv, "lim-a")
        # a check-in over its 64 KiB, announced or chunked: 413 with the API's error body
        for chunked in (False, True):
            status, _, answer = stream_body(
                srv.port, "/agent/checkin", 2 * MiB, token=key, chunked=chunked
            )
            assert status == 413, answer[:300]
            body = orjson.loads(answer.partition(b"\r\n\r\n")[2])
            assert body["error"]["code"] == "too_large"
            assert body["error"]["message"] == f"request body over {64 * 1024} bytes"
        # a pipe push may be bigger than a check-in (1 MiB), another user request may not
        yaml = "name: big\ninput: {echo: {events: [{}]}}\noutput: {discard: {}}\n"
        yaml += "# " + "x" * 300_000 + "\n"
        r = srv.request("POST", "/pipes", json={"yaml": yaml})
        assert r.status_code == 201, r.text[:300]
        r = srv.request("POST", "/agents", json={"id": "lim-b", "name": "x" * 300_000})
        err = error_of(r, 413, "too_large")
        assert err["message"] == f"request body over {ServerSettings.max_body} bytes"
        # under its limit a check-in is served as before
        assert checkin(srv, key, "lim-a").status_code == 200


# ------------------------------------------------------------------------------ a rogue key

sys.path.insert(0, str(REPO_ROOT / "bench"))
from checkin_load import HttpConn  # noqa: E402  (the benchmark's raw HTTP/1.1 client)


def load(port: int, keys: dict[str, str], phase: Any, stop: Any, out: Any) -> None:
    """In a process of its own (so the test's other clients do not hold its GIL): each agent
    checks in about ten times a second; each latency is kept with the phase it fell in."""
    seen: list[tuple[int, float]] = []

    async def agent(agent_id: str, key: str) -> None:
        conn = HttpConn("127.0.0.1", port, key)
        seq = 0
        try:
            while not stop.is_set():
                body = {"agent_id": agent_id, "seq": seq, "full": seq == 0, "wait": 0}
                started = time.perf_counter()
                status, _ = await conn.request("POST", "/agent/checkin", body)
                took = time.perf_counter() - started
                seen.append((phase.value if status == 200 else -status, took))
                seq += 1
                await asyncio.sleep(0.1)  # the load's pace (ten check-ins a second), not a wait
        finally:
            conn.close()

    async def main() -> None:
        await asyncio.gather(*(agent(a, k) for a, k in keys.items()))

    asyncio.run(main())
    out.put(seen)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def test_a_9mib_checkin_is_413_while_20_agents_keep_their_p99_under_100ms(tmp_path):
    """The bound the issue sets, for 9 MiB check-ins sent back to back with a valid key. Then,
    reported and not asserted, the same load while the rogue key sends the biggest check-ins
    allowed (1,000 log lines, just under 1 MiB), which are parsed, checked and stored."""
    ctx = mp.get_context("fork")
    with ServerProcess(tmp_path, poll_interval=5) as srv:
        keys = {f"load-{i}": add_agent(srv, f"load-{i}") for i in range(20)}
        rogue = add_agent(srv, "rogue")
        phase, stop, out = ctx.Value("i", 0), ctx.Event(), ctx.Queue()
        loader = ctx.Process(target=load, args=(srv.port, keys, phase, stop, out))
        loader.start()
        refused, allowed = [], []
        biggest = orjson.dumps({"agent_id": "rogue", "seq": 1, "logs": [
            {"message": "y" * 900, "time": "2099-01-01T00:00:00Z"}] * 1000})  # fmt: skip
        assert len(biggest) < MiB
        try:
            agents = lambda: srv.request("GET", "/agents").json()["agents"]  # noqa: E731
            wait_until(lambda: sum(a["state"] == "online" for a in agents()) == 20, 30,
                       "the load's agents online")  # fmt: skip
            window = time.monotonic() + 3  # warm up
            while time.monotonic() < window:
                checkin(srv, rogue, "rogue")
            phase.value = 1
            window = time.monotonic() + 10  # a measuring window: ~2,000 check-ins
            while time.monotonic() < window:
                for chunked in (False, True):
                    refused.append(
                        stream_body(
                            srv.port, "/agent/checkin", 9 * MiB, token=rogue, chunked=chunked
                        )[:2]
                    )
            phase.value = 2
            window = time.monotonic() + 10
            while time.monotonic() < window:
                started = time.monotonic()
                r = requests.post(
                    srv.api + "/agent/checkin",
                    data=biggest,
                    headers={"Authorization": f"Bearer {rogue}"},
                    timeout=30,
                )
                allowed.append((r.status_code, time.monotonic() - started))
            phase.value = 0
        finally:
            stop.set()
            seen = out.get(timeout=60)
            loader.join(30)
        assert [x for x in seen if x[0] < 0] == []  # every check-in of the load answered 200
        assert {s for s, _ in refused} == {413}, refused
        assert {s for s, _ in allowed} == {200}, allowed
        a = [t for p, t in seen if p == 1]
        b = [t for p, t in seen if p == 2]
        print(f"\n{len(a)} check-ins of 20 agents while {len(refused)} 9 MiB ones were refused "
              f"(each in {max(t for _, t in refused):.3f} s at most): p50 "
              f"{percentile(a, 0.5) * 1000:.1f} ms, p99 {percentile(a, 0.99) * 1000:.1f} ms, max "
              f"{max(a) * 1000:.1f} ms")  # fmt: skip
        print(f"{len(b)} check-ins while {len(allowed)} of 1 MiB were taken (each in "
              f"{max(t for _, t in allowed):.3f} s at most): p50 {percentile(b, 0.5) * 1000:.1f} "
              f"ms, p99 {percentile(b, 0.99) * 1000:.1f} ms, max {max(b) * 1000:.1f} ms")  # fmt: skip
        assert len(a) >= 1000
        assert percentile(a, 0.99) < 0.100


# ------------------------------------------------------------------------------ connections


def raw_get(sock: socket.socket, path: str = "/health") -> bytes:
    sock.sendall(f"GET {PREFIX}{path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = sock.recv(65536)
        if not chunk:
            break
        answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    length = [int(x.split(b":")[1]) for x in head.split(b"\r\n") if x.lower().startswith(b"content-length:")]  # fmt: skip
    while length and len(body) < length[0]:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def health(srv: ServerProcess) -> int:
    """The status of GET /health, 0 for a connection closed unanswered (refused at the cap)."""
    try:
        return requests.get(srv.api + "/health", timeout=5).status_code
    except requests.ConnectionError:
        return 0


def test_connections_over_the_cap_get_503_with_retry_after_and_no_traceback(tmp_path):
    with ServerProcess(tmp_path, extra=("--max-connections", "20")) as srv:
        held = []
        for _ in range(20):  # the cap, each one served once and kept open (keep-alive)
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
            assert status_of(raw_get(s)) == 200
            held.append(s)
        for _ in range(30):
            with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
                answer = raw_get(s)
            head, _, body = answer.partition(b"\r\n\r\n")
            assert status_of(answer) == 503, answer
            assert b"\r\nRetry-After: 1" in head
            assert orjson.loads(body)["error"]["code"] == "unavailable"
        for s in held:
            s.close()
        wait_until(lambda: health(srv) == 200, 20,
                   "the server to serve again")  # fmt: skip
        serves(srv)
    log = srv.log.read_text()
    assert "Traceback" not in log
    assert log.count("the most allowed (--max-connections)") <= 2, log  # once per 10 s at most


def test_the_cap_stays_under_the_open_file_limit_and_a_flood_finds_no_traceback(tmp_path):
    def few_files() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (200, 200))

    with ServerProcess(tmp_path, preexec_fn=few_files) as srv:
        wait_until(lambda: "lowered to" in srv.log.read_text(), 10, "the warning")
        assert "--max-connections 1024 lowered to 100" in srv.log.read_text()
        flood = []
        for _ in range(400):  # twice the server's descriptors: none of them sends a byte
            try:
                flood.append(socket.create_connection(("127.0.0.1", srv.port), timeout=5))
            except OSError:
                break
        # a new client is refused (503, or closed unanswered when refusals are busy too)
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
            try:
                assert status_of(raw_get(s)) in (0, 503)
            except ConnectionResetError:
                pass
        for s in flood:
            s.close()
        wait_until(lambda: health(srv) == 200, 30,
                   "the server to serve again")  # fmt: skip
        serves(srv)
    log = srv.log.read_text()
    assert "Traceback" not in log and "Too many open files" not in log, log[-3000:]


# ------------------------------------------------------------------------------ telemetry


def test_telemetry_only_for_assigned_deployments_and_times_on_the_servers_clock(tmp_path):
    with ServerProcess(tmp_path, extra=("--retention", "3")) as srv:
        w = make_world(srv, "tel")  # dep on agent b only
        mine = srv.request("POST", "/deployments", json={"pipe": w.pipe, "agents": [w.a]})
        assert mine.status_code == 201, mine.text
        mine = mine.json()["id"]
        assert [d["deployment_id"] for d in checkin(srv, w.key_a, w.a, seq=0).json()["desired"]] == [mine]  # fmt: skip
        before = datetime.now(timezone.utc)
        r = checkin(
            srv,
            w.key_a,
            w.a,
            seq=1,
            pipes=[
                {"deployment_id": w.dep, "state": "running", "metrics": {"stolen": 1}},
                {"deployment_id": "dep-nothere", "state": "running", "metrics": {"n": 1}},
                {"deployment_id": mine, "state": "running", "metrics": {"own": 1}},
            ],
            logs=[
                {"deployment_id": w.dep, "message": "into b's deployment"},
                {"deployment_id": "dep-nothere", "message": "into nothing"},
                {"deployment_id": mine, "message": "from 2099", "time": "2099-01-01T00:00:00Z"},
                {"deployment_id": mine, "message": "from 1999", "time": "1999-01-01T00:00:00Z"},
            ],
        )
        assert r.status_code == 200, r.text
        # nothing of a's lands in b's deployment, nor anywhere for an unknown id
        for what in ("metrics", "logs"):
            got = srv.request("GET", f"/deployments/{w.dep}/{what}").json()[what]
            assert [x for x in got if x["agent_id"] == w.a] == [], got
            got = srv.request("GET", f"/agents/{w.a}/{what}").json()[what]
            assert {x["deployment_id"] for x in got} == {mine}, got
        statuses = srv.request("GET", f"/deployments/{w.dep}").json()["status"]
        assert [s["agent_id"] for s in statuses] == [w.b]
        # times clamped to the server's clock: not in the future, not older than the retention
        logs = srv.request("GET", f"/agents/{w.a}/logs").json()["logs"]
        times = {
            x["message"]: datetime.fromisoformat(x["time"].replace("Z", "+00:00")) for x in logs
        }
        after = datetime.now(timezone.utc)
        assert before - timedelta(seconds=1) <= times["from 2099"] <= after + timedelta(seconds=1)
        assert times["from 1999"] >= before - timedelta(seconds=4)
        # and they go with the retention, like any other line
        wait_until(lambda: srv.request("GET", f"/agents/{w.a}/logs").json()["logs"] == [], 20,
                   "the lines to expire")  # fmt: skip


# ------------------------------------------------------------------------------ 2**63


def int_fields(schema: dict[str, Any], defs: dict[str, Any], path: tuple = ()) -> list[tuple]:
    """(path, schema) of every integer a request body model accepts, nested ones included."""
    if "$ref" in schema:
        return int_fields(defs[schema["$ref"].rsplit("/", 1)[1]], defs, path)
    found = []
    for alt in schema.get("anyOf", []):
        found += int_fields(alt, defs, path)
    if schema.get("type") == "integer":
        found.append((path, schema))
    for name, sub in schema.get("properties", {}).items():
        found += int_fields(sub, defs, (*path, name))
    if "items" in schema:
        found += int_fields(schema["items"], defs, (*path, 0))
    return found


def body_ints() -> dict[str, list[tuple]]:
    out: dict[str, list[tuple]] = {}
    for _, _, op in operations():
        if op.body is not None:
            schema = op.body.model_json_schema()
            out[op.body.__name__] = int_fields(schema, schema.get("$defs", {}))
    return out


def test_every_integer_a_request_body_accepts_is_bounded():
    found = body_ints()
    assert found["CheckinRequest"] and found["DeploymentCreate"]  # the walk finds them
    for model, fields in found.items():
        for path, schema in fields:
            assert "maximum" in schema and "minimum" in schema, (model, path, schema)


def set_at(body: dict[str, Any], path: tuple, value: Any) -> dict[str, Any]:
    out = orjson.loads(orjson.dumps(body))
    target = out
    for step in path[:-1]:
        if isinstance(step, int):
            while len(target) <= step:
                target.append({})
        elif step not in target:
            target[step] = {}
        target = target[step]
    target[path[-1]] = value
    return out


def test_2_to_the_63_anywhere_is_a_400(tmp_path):
    with ServerProcess(tmp_path, enroll_key="ek-big") as srv:
        w = make_world(srv, "big")
        ids = w.ids
        valid: dict[str, dict[str, Any]] = {
            "CheckinRequest": {"agent_id": w.a, "seq": 1},
            "DeploymentCreate": {"pipe": w.pipe, "agents": [w.b]},
            "DeploymentUpgrade": {},
            "CommandCreate": {"type": "capture"},
            "PipePush": {"yaml": "name: x\ninput: {echo: {}}\noutput: {discard: {}}\n"},
            "AgentCreate": {"id": "big-c"},
            "AgentUpdate": {},
            "EnrollRequest": {"enroll_key": "ek-big"},
            "ApiKeyCreate": {},
            "EnrollTokenCreate": {"labels": ["big"]},
            "UserCreate": {"name": "big-user", "role": "viewer"},
            "UserTokenCreate": {},
            "PreviewRequest": {"text": "name: x\ninput: {echo: {}}\noutput: {discard: {}}\n"},
            "RunTestsRequest": {"text": "name: x\ninput: {echo: {}}\noutput: {discard: {}}\n"},
            "PipeText": {"text": "name: x\ninput: {echo: {}}\noutput: {discard: {}}\n"},
            "PreviewCreate": {"yaml": "name: x\ninput: {echo: {}}\noutput: {discard: {}}\n"},
            "AgentSettingsSet": {"labels": ["big"], "values": {}},
        }
        fields = body_ints()
        tried = 0
        for method, path, op in operations():
            auth = {"user": True, "agent": w.key_a, "none": None}[op.auth]
            url = fill(path, ids)
            for q in op.query:
                if QUERY_PARAMS[q].kind == "int":
                    for value in (str(BIG), str(-BIG), "1e3"):
                        r = srv.request(method, url, token=auth, params={q: value})
                        err = error_of(r, 400, "bad_request")
                        assert q in err["message"], err
                        tried += 1
            if op.body is None:
                continue
            for field, _ in fields[op.body.__name__]:
                for value in (BIG, -BIG, 2**64):
                    body = set_at(valid[op.body.__name__], field, value)
                    r = srv.request(method, url, token=auth, json=body)
                    err = error_of(r, 400)
                    assert err["code"] in ("invalid_body", "invalid_json"), err
                    tried += 1
        assert tried >= 20
        # big numbers inside free-form JSON (params, metrics) are not a 500 either
        r = srv.request("POST", "/deployments", json={"pipe": w.pipe, "params": {"n": BIG}})
        assert r.status_code in (201, 400), r.text
        r = checkin(srv, w.key_b, w.b, seq=5, attributes={"n": BIG, "m": -BIG})
        assert r.status_code == 200, r.text
        serves(srv)


# ------------------------------------------------------------------------------ logs


def test_a_flood_of_refused_requests_leaves_a_bounded_log(tmp_path):
    with ServerProcess(tmp_path) as srv:
        session = requests.Session()
        flood = 1000
        for i in range(flood):
            r = session.post(
                srv.api + "/agent/checkin",
                data=b"{}",
                headers={"Authorization": f"Bearer pnb_k{i}_wrong"},
                timeout=10,
            )
            assert r.status_code == 401
        # once its window is over, a line says how many more there were
        wait_until(lambda: "more lines like this" in srv.log.read_text(), 30, "the count line",
                   info=lambda: srv.log.read_text()[-2000:])  # fmt: skip
        serves(srv)
    lines = srv.log.read_text().splitlines()
    refused = [x for x in lines if " 401 POST " in x or x.startswith("WARNING tornado.access: 401")]
    print(f"\n{flood} refused requests: {len(refused)} access lines, {len(lines)} lines in all")
    assert 0 < len(refused) <= 3 * ServerSettings.log_repeats
    counted = [x for x in lines if "more lines like this" in x]
    assert counted and len(lines) < 200
    dropped = sum(int(x.split("WARNING pipenb.server.logs: ")[1].split()[0]) for x in counted)
    assert len(refused) + dropped >= flood


# ------------------------------------------------------------------------------ the agent


def test_an_agent_whose_checkin_is_too_large_sheds_the_bulk_and_carries_on(tmp_path):
    """A capture of big events makes the agent's check-in bigger than the server takes: the
    server answers 413, the agent drops the captured events (the command is answered with an
    error saying why) and keeps checking in, instead of sending the same report for ever."""
    pipe = (
        "name: bulky\n"
        f"input: {{echo: {{lines: ['{'z' * 2000}'], interval: 10ms}}}}\n"
        "output: {discard: {}}\n"
    )
    with (
        ServerProcess(tmp_path / "srv", enroll_key="ek-bulk", extra=("--max-checkin-body", "32KiB")) as srv,
        AgentProcess(srv.url, tmp_path / "agent", enroll_key="ek-bulk") as agent,
    ):  # fmt: skip
        agent_id = agent.wait_enrolled()  # the server assigns it
        assert srv.request("POST", "/pipes", json={"yaml": pipe}).status_code == 201
        dep = srv.request("POST", "/deployments", json={"pipe": "bulky", "agents": [agent_id]})
        assert dep.status_code == 201, dep.text
        dep = dep.json()["id"]

        def running() -> bool:
            status = srv.request("GET", f"/deployments/{dep}").json()["status"]
            return bool(status) and status[0]["state"] == "running"

        wait_until(running, 30, "the pipe running")
        r = srv.request(
            "POST", f"/deployments/{dep}/commands", json={"type": "capture", "limit": 100}
        )
        assert r.status_code == 201, r.text
        (command,) = r.json()["commands"]

        def answered() -> dict[str, Any] | None:
            return srv.request("GET", f"/commands/{command['id']}").json()["result"]

        result = wait_until(answered, 30, "the capture answered", info=agent.log_text)
        assert result["events"] == [] and "too large" in result["error"], result
        assert "check-in refused as too large" in agent.log_text()
        # and it goes on checking in: a second, small capture comes back whole
        r = srv.request(
            "POST", f"/deployments/{dep}/commands", json={"type": "capture", "limit": 2}
        )
        (small,) = r.json()["commands"]
        result = wait_until(
            lambda: srv.request("GET", f"/commands/{small['id']}").json()["result"], 30,
            "the small capture", info=agent.log_text,
        )  # fmt: skip
        assert len(result["events"]) == 2 and result["error"] is None, result
        assert srv.request("GET", f"/agents/{agent_id}").json()["state"] == "online"


def test_the_repeat_filter_counts_what_it_drops_per_kind_and_window():
    now = [0.0]
    f = RepeatFilter(repeats=3, window=10.0, clock=lambda: now[0])
    handler = logging.handlers.BufferingHandler(10_000)
    handler.addFilter(f)
    logger = logging.getLogger("pipenb.test.flood")
    summaries = logging.getLogger("pipenb.server.logs")
    logger.addHandler(handler)
    summaries.addHandler(handler)
    logger.propagate = summaries.propagate = False
    try:
        for i in range(100):
            logger.warning("refused %s", i)  # one kind: the template, whatever the argument
        logger.warning("another kind")
        assert [r.getMessage() for r in handler.buffer] == [
            "refused 0", "refused 1", "refused 2", "another kind"]  # fmt: skip
        now[0] = 10.0
        f.flush()
        (summary,) = handler.buffer[4:]
        assert summary.getMessage().startswith("97 more lines like this from pipenb.test.flood")
        logger.warning("refused %s", "again")  # a new window lets lines through again
        assert handler.buffer[-1].getMessage() == "refused again"
    finally:
        logger.removeHandler(handler)
        summaries.removeHandler(handler)
        logger.propagate = summaries.propagate = True
