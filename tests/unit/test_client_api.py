"""TowerApi against httpx.MockTransport: paths, headers, bodies, SSE and error mapping."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator

import httpx
import pytest

from tower.client import ApiError, ConnectionFailed
from tower.client.api import UPLOAD_CHUNK_SIZE, SseEvent, TowerApi, parse_sse

Handler = Callable[[httpx.Request], httpx.Response]


def make_api(handler: Handler, **auth: str) -> TowerApi:
    auth = auth or {"api_key": "sk-test"}
    return TowerApi(
        "http://tower.test/ignored/path", transport=httpx.MockTransport(handler), **auth
    )


def json_response(body: object, status: int = 200) -> httpx.Response:
    return httpx.Response(status, json=body)


def sse(body: str | list[bytes], content_type: str = "text/event-stream") -> httpx.Response:
    content = body.encode() if isinstance(body, str) else iter(body)
    return httpx.Response(200, headers={"content-type": content_type}, content=content)


LINE_1 = {
    "attempt_seq": 1,
    "channel": "program",
    "content": "hello",
    "line_num": 1,
    "reported_at": "2025-01-01T00:00:00Z",
    "run_id": "r",
}


# -- plain endpoints ---------------------------------------------------------------------


def test_list_apps_sends_unpaginated_query_and_returns_summaries() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return json_response({"apps": [{"app": {"name": "a"}, "runs": []}], "pages": {}})

    apps = make_api(handler).list_apps()

    assert apps == [{"app": {"name": "a"}, "runs": []}]
    request = seen[0]
    assert request.url.path == "/v1/apps"
    assert dict(request.url.params) == {"page": "0", "page_size": "100", "num_runs": "0"}
    assert request.headers["X-API-Key"] == "sk-test"
    assert "Authorization" not in request.headers


def test_jwt_is_sent_as_bearer() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return json_response({"session": {}})

    make_api(handler, jwt="eyJ.x.y").describe_session()
    assert seen[0].headers["Authorization"] == "Bearer eyJ.x.y"
    assert seen[0].url.path == "/v1/session"


def test_path_parameters_are_fully_encoded() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.raw_path.decode())
        return json_response({"app": {}, "runs": []})

    make_api(handler).describe_app("a b/c#d", environment="prod")
    assert seen == ["/v1/apps/a%20b%2Fc%23d?environment=prod"]


def test_describe_app_without_environment_sends_no_query() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return json_response({"app": {}, "runs": []})

    make_api(handler).describe_app("x")
    assert seen[0].url.query == b""


def test_create_app_and_run_app_bodies() -> None:
    bodies: dict[str, object] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        bodies[request.url.path] = json.loads(request.content)
        if request.url.path == "/v1/apps":
            return json_response({"app": {"name": "x"}}, 201)
        return json_response({"run": {"number": 1}}, 201)

    api = make_api(handler)
    api.create_app("x")
    api.run_app("x")
    api.run_app("x", environment="prod", parameters={"k": "v"})

    assert bodies["/v1/apps"] == {"name": "x", "short_description": ""}
    assert bodies["/v1/apps/x/runs"] == {"environment": "prod", "parameters": {"k": "v"}}


def test_run_app_always_sends_parameters() -> None:
    captured: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        captured.append(json.loads(request.content))
        return json_response({"run": {"number": 1}}, 201)

    make_api(handler).run_app("x")
    assert captured == [{"environment": "default", "parameters": {}}]


def test_run_logs_and_describe_run_and_delete() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "DELETE":
            return json_response({"app": {"name": "x"}})
        if path.endswith("/logs"):
            return json_response({"log_lines": [LINE_1]})
        if path == "/v1/apps/x/runs/3":
            return json_response({"run": {"number": 3}, "$links": {"self": "s"}})
        return json_response({}, 500)

    api = make_api(handler)
    assert api.run_logs("x", 3) == [LINE_1]
    assert api.describe_run("x", 3)["$links"] == {"self": "s"}
    assert api.delete_app("x") == {"app": {"name": "x"}}


def test_list_environments() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/environments"
        return json_response({"environments": [{"name": "default", "is_deletable": False}]})

    assert make_api(handler).list_environments() == [{"name": "default", "is_deletable": False}]


# -- run lifecycle -----------------------------------------------------------------------


def recording(body: object, seen: list[httpx.Request]) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return json_response(body)

    return handler


PAGE = {
    "runs": [{"number": 2}, {"number": 1}],
    "pages": {"page": 0, "page_size": 100, "num_pages": 1, "total": 2},
}


def test_list_runs_defaults_to_every_run_and_returns_the_page() -> None:
    seen: list[httpx.Request] = []
    body = make_api(recording(PAGE, seen)).list_runs("my app")
    # The whole answer: callers need `pages` to offer the next page.
    assert body == PAGE
    assert seen[0].method == "GET"
    assert seen[0].url.raw_path.decode() == "/v1/apps/my%20app/runs?page=0&page_size=100"


def test_list_runs_sends_every_filter_with_status_repeated() -> None:
    seen: list[httpx.Request] = []
    make_api(recording(PAGE, seen)).list_runs(
        "x",
        page=3,
        page_size=10,
        statuses=["crashed", "errored"],
        environment="prod",
        start_at="2025-01-01T00:00:00Z",
        end_at="2025-02-01T00:00:00Z",
    )
    assert sorted(seen[0].url.params.multi_items()) == [
        ("end_at", "2025-02-01T00:00:00Z"),
        ("environment", "prod"),
        ("page", "3"),
        ("page_size", "10"),
        ("start_at", "2025-01-01T00:00:00Z"),
        ("status", "crashed"),
        ("status", "errored"),
    ]


def test_search_runs_lists_across_apps() -> None:
    seen: list[httpx.Request] = []
    body = make_api(recording(PAGE, seen)).search_runs(page=1, page_size=5, statuses=("running",))
    assert body == PAGE
    assert seen[0].url.path == "/v1/runs"
    assert list(seen[0].url.params.multi_items()) == [
        ("page", "1"),
        ("page_size", "5"),
        ("status", "running"),
    ]


def test_update_app_puts_only_the_fields_given() -> None:
    seen: list[httpx.Request] = []
    api = make_api(recording({"app": {"name": "x"}}, seen))
    policy = {"max_retries": 2, "retry_delay_seconds": 5, "use_exponential_backoff": False}

    assert api.update_app("x", status="disabled") == {"app": {"name": "x"}}
    api.update_app("x", short_description="", running_timeout=0, retry_policy=policy)

    assert [(r.method, r.url.path) for r in seen] == [("PUT", "/v1/apps/x"), ("PUT", "/v1/apps/x")]
    assert json.loads(seen[0].content) == {"status": "disabled"}
    # Falsy values are real changes (clear the description, no time limit), not omissions.
    assert json.loads(seen[1].content) == {
        "short_description": "",
        "running_timeout": 0,
        "retry_policy": policy,
    }


def test_update_app_error_is_api_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return json_response({"status": 404, "title": "Not Found", "detail": "No app x"}, 404)

    with pytest.raises(ApiError) as raised:
        make_api(handler).update_app("x", status="active")
    assert raised.value.status == 404
    assert raised.value.detail == "No app x"


def test_run_graph_returns_the_edges() -> None:
    edges = [
        {"id": {"app_name": "a", "number": 1}, "parent_id": None},
        {"id": {"app_name": "b", "number": 4}, "parent_id": {"app_name": "a", "number": 1}},
    ]
    seen: list[httpx.Request] = []
    assert make_api(recording({"runs": edges}, seen)).run_graph("a", 1) == edges
    assert seen[0].method == "GET"
    assert seen[0].url.path == "/v1/apps/a/runs/1/graph"


def test_cancel_run_posts_without_a_body() -> None:
    seen: list[httpx.Request] = []
    body = {"run": {"number": 3, "status": "cancelled"}, "cancelled_child_runs": 2}
    assert make_api(recording(body, seen)).cancel_run("x", 3) == body
    assert (seen[0].method, seen[0].url.path, seen[0].content) == ("POST", "/v1/apps/x/runs/3", b"")


# -- errors ------------------------------------------------------------------------------


def test_error_model_becomes_api_error_with_detail_and_messages() -> None:
    body = {
        "title": "Not Found",
        "status": 404,
        "detail": "App 'x' was not found.",
        "errors": [{"location": "path.name", "message": "Check the name."}],
    }

    def handler(request: httpx.Request) -> httpx.Response:
        return json_response(body, 404)

    with pytest.raises(ApiError) as info:
        make_api(handler).describe_app("x")
    assert info.value.status == 404
    assert info.value.describe() == "App 'x' was not found.\nCheck the name."


def test_non_json_error_body_is_kept() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, text="bad gateway")

    with pytest.raises(ApiError, match="bad gateway"):
        make_api(handler).list_apps()


def test_unreachable_server_is_connection_failed() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(ConnectionFailed, match=r"http://tower\.test"):
        make_api(handler).list_apps()


# -- deploy ------------------------------------------------------------------------------


def test_deploy_streams_raw_bytes_with_headers_and_reports_progress() -> None:
    data = bytes(range(256)) * 700  # ~175 KiB: three chunks
    digest = hashlib.sha256(data).hexdigest()
    seen: list[httpx.Request] = []
    received: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        received.append(request.read())
        return json_response({"version": {"version": "v1"}}, 201)

    progress: list[int] = []
    body = make_api(handler).deploy(
        "my app",
        data,
        digest.upper(),
        environment="prod",
        idempotency_key="abc",
        on_progress=progress.append,
    )

    assert body == {"version": {"version": "v1"}}
    request = seen[0]
    assert request.method == "POST"
    assert request.url.raw_path == b"/v1/apps/my%20app/deploy?environment=prod"
    assert request.headers["Content-Type"] == "application/tar"
    assert request.headers["Content-Encoding"] == "gzip"
    assert request.headers["X-Tower-Checksum-SHA256"] == digest
    assert request.headers["X-Tower-Idempotency-Key"] == "abc"
    # A generator body is sent chunked, never with a precomputed length.
    assert request.headers.get("Transfer-Encoding") == "chunked"
    assert "Content-Length" not in request.headers
    # The bytes arrive exactly as given: nothing (re)compressed them.
    assert received[0] == data
    assert hashlib.sha256(received[0]).hexdigest() == digest
    assert progress == [UPLOAD_CHUNK_SIZE, 2 * UPLOAD_CHUNK_SIZE, len(data)]


def test_deploy_all_environments_and_no_key() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        request.read()
        return json_response({"version": {"version": "v2"}}, 201)

    make_api(handler).deploy("x", b"abc", "00", environment="prod", all_environments=True)
    assert dict(seen[0].url.params) == {"all_environments": "true"}
    assert "X-Tower-Idempotency-Key" not in seen[0].headers


# -- SSE ---------------------------------------------------------------------------------


def test_parse_sse_handles_comments_multiline_data_and_unfinished_events() -> None:
    text = (
        ": keep-alive\n"
        "\n"
        "event: log\n"
        "id: 7\n"
        "data: first\n"
        "data:second\n"
        "\n"
        "data: unnamed\n"
        "\r\n"
        "event: warning\n"
        "retry: 1000\n"
        "data: {}\n"
        "\n"
        "event: log\n"
        "data: cut off by the server\n"
    )
    events = list(parse_sse(text.splitlines(keepends=True)))
    assert events == [
        SseEvent("log", "first\nsecond", "7"),
        SseEvent("message", "unnamed", "7"),
        SseEvent("warning", "{}", "7"),
    ]


def test_parse_sse_event_without_data_is_not_dispatched() -> None:
    assert list(parse_sse(["event: log", "", "event: log", "data: x", ""])) == [
        SseEvent("log", "x")
    ]


def test_stream_run_logs_yields_log_events_only() -> None:
    seen: list[httpx.Request] = []
    line2 = {**LINE_1, "line_num": 2, "content": "multi"}
    body = (
        ": ping\n\n"
        f"event: log\ndata: {json.dumps(LINE_1)}\n\n"
        'event: warning\ndata: {"content": "slow", "reported_at": "2025-01-01T00:00:00Z"}\n\n'
        "event: log\ndata: not json\n\n"
        "event: log\ndata: [1, 2]\n\n"
        f"data: {json.dumps(LINE_1)}\n\n"
        # a JSON object split over two data lines is joined with a newline, still valid JSON
        "event: log\ndata: "
        + json.dumps(line2).replace(', "channel"', ',\ndata: "channel"')
        + "\n\n"
        'event: error\ndata: {"content": "x"}\n\n'
    )

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return sse(body, "text/event-stream; charset=utf-8")

    lines = list(make_api(handler, jwt="t").stream_run_logs("x", 4))

    assert lines == [LINE_1, line2]
    assert seen[0].url.path == "/v1/apps/x/runs/4/logs/stream"
    assert seen[0].headers["Accept"] == "text/event-stream"


def test_stream_run_logs_has_no_read_timeout() -> None:
    timeouts: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        timeouts.append(request.extensions["timeout"])
        return sse("")

    list(make_api(handler).stream_run_logs("x", 1))
    assert timeouts[0]["read"] is None
    assert timeouts[0]["connect"] is not None


def test_stream_run_logs_error_status_raises_api_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return json_response({"status": 404, "detail": "Run #9 not found"}, 404)

    with pytest.raises(ApiError) as info:
        list(make_api(handler).stream_run_logs("x", 9))
    assert info.value.status == 404
    assert "Run #9 not found" in info.value.describe()


def test_stream_run_logs_rejects_a_non_sse_answer() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return json_response({"log_lines": []})

    with pytest.raises(ApiError, match="text/event-stream"):
        list(make_api(handler).stream_run_logs("x", 1))


def test_stream_dropped_mid_way_raises_connection_failed_after_delivered_lines() -> None:
    def chunks() -> Iterator[bytes]:
        yield f"event: log\ndata: {json.dumps(LINE_1)}\n\n".encode()
        raise httpx.ReadError("connection reset")

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=chunks())

    received = []
    with pytest.raises(ConnectionFailed, match="interrupted"):
        for line in make_api(handler).stream_run_logs("x", 1):
            received.append(line)
    assert received == [LINE_1]


def test_stream_ends_cleanly_when_the_server_closes() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return sse([f"event: log\ndata: {json.dumps(LINE_1)}\n\n".encode(), b": bye\n\n"])

    assert list(make_api(handler).stream_run_logs("x", 1)) == [LINE_1]
