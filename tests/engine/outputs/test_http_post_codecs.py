"""``http-post`` codecs: the bodies Elasticsearch ``_bulk``, Loki push and OTLP/HTTP JSON
document, checked field by field against those documented shapes, sent to a recording server
(``support.httpsink``)."""

from __future__ import annotations

import asyncio

import orjson

import pipenb

from support.files import read_ndjson
from support.httpsink import HttpSink

EVENTS = [
    {"timestamp": "2024-05-01T12:00:00Z", "severity": "warning", "app": "web", "message": "a ✓"},
    {"timestamp": 1714564801.5, "severity": "info", "app": "db", "message": "b", "n": 7},
]


def send(post: dict, tmp_path, data_dir) -> list[dict]:
    errors = tmp_path / "errors.ndjson"
    doc = {"name": "codec", "input": {"echo": {"events": EVENTS}}, "output": {"http-post": post},
           "errors": {"file": {"path": str(errors)}}}  # fmt: skip
    pipe = pipenb.Pipe.from_yaml(orjson.dumps(doc).decode())
    asyncio.run(asyncio.wait_for(pipe.engine(data_dir=data_dir).run(), 60))
    return read_ndjson(errors) if errors.exists() else []


def test_elasticsearch_bulk_body_and_refused_items(tmp_path, data_dir):
    def answer(request):  # the second document is refused, as _bulk reports it
        items = [{"index": {"_index": "logs", "status": 201}},
                 {"index": {"_index": "logs", "status": 400,
                            "error": {"type": "mapper_parsing_exception",
                                      "reason": "failed to parse field [n]"}}}]  # fmt: skip
        return 200, orjson.dumps({"took": 1, "errors": True, "items": items})

    with HttpSink(answer) as rx:
        dead = send({"url": rx.url + "_bulk", "codec": "elasticsearch", "index": "logs"},
                    tmp_path, data_dir)  # fmt: skip
    ((headers, body),) = [(r.headers, r.body) for r in rx.requests]
    assert headers["Content-Type"] == "application/x-ndjson"
    assert body.endswith(b"\n")
    lines = [orjson.loads(x) for x in body.splitlines()]
    assert lines == [
        {"index": {"_index": "logs"}},
        EVENTS[0],
        {"index": {"_index": "logs"}},
        EVENTS[1],
    ]
    assert [d["app"] for d in dead] == ["db"]
    assert "failed to parse field [n]" in dead[0]["_error"]["message"]


def test_loki_push_body(tmp_path, data_dir):
    with HttpSink(lambda request: (204, b"")) as rx:
        assert send({"url": rx.url + "loki/api/v1/push", "codec": "loki",
                     "labels": {"job": "relay"}, "label-fields": ["app"]},
                    tmp_path, data_dir) == []  # fmt: skip
    ((headers, body),) = [(r.headers, r.body) for r in rx.requests]
    assert headers["Content-Type"] == "application/json"
    streams = {s["stream"]["app"]: s for s in orjson.loads(body)["streams"]}
    assert streams["web"]["stream"] == {"job": "relay", "app": "web"}
    assert streams["web"]["values"] == [["1714564800000000000", "a ✓"]]
    assert streams["db"]["values"] == [["1714564801500000000", "b"]]


def test_otlp_http_json_logs_body(tmp_path, data_dir):
    with HttpSink(lambda request: (200, b"{}")) as rx:
        assert send({"url": rx.url + "v1/logs", "codec": "otlp", "service": "edge"},
                    tmp_path, data_dir) == []  # fmt: skip
    ((headers, body),) = [(r.headers, r.body) for r in rx.requests]
    assert headers["Content-Type"] == "application/json"
    (res,) = orjson.loads(body)["resourceLogs"]
    assert res["resource"]["attributes"] == [
        {"key": "service.name", "value": {"stringValue": "edge"}}
    ]
    (scope,) = res["scopeLogs"]
    first, second = scope["logRecords"]
    assert first["timeUnixNano"] == "1714564800000000000"
    assert first["body"] == {"stringValue": "a ✓"}
    assert (first["severityText"], first["severityNumber"]) == ("warning", 13)
    assert {"key": "n", "value": {"intValue": "7"}} in second["attributes"]
    assert {"key": "app", "value": {"stringValue": "db"}} in second["attributes"]


def test_elasticsearch_needs_an_index():
    from support.pipes import problems_of

    text = "name: x\ninput: {echo: {lines: [a]}}\noutput: {http-post: {url: 'http://h/_bulk', codec: elasticsearch}}\n"
    (problem,) = problems_of(text)
    assert "needs index" in str(problem)
