"""The typed Tower API client: one method per endpoint the CLI, SDK and MCP server call.

Methods return the decoded JSON bodies as the contract names them (`{app, runs}`,
`{version}`, `{run}`, `{run, $links}`), or the item list for list endpoints that are
fetched whole; paged run listings return `{runs, pages}` so callers can page on. Errors
arrive as :class:`ApiError` (the server answered) or :class:`ConnectionFailed` (it
did not), both raised by :class:`HttpClient`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from tower.client._http import ApiError, ConnectionFailed, HttpClient, raise_for_error

#: Upload chunk size: small enough for a smooth progress bar, large enough to be cheap.
UPLOAD_CHUNK_SIZE = 64 * 1024

#: The log stream stays open for as long as the run lives, so reads must never time out;
#: connecting and writing still do.
STREAM_TIMEOUT = httpx.Timeout(30.0, read=None)

JsonDict = dict[str, Any]


def _seg(value: str | int) -> str:
    """One URL path segment: names may hold spaces, slashes or `#`, so encode everything."""
    return quote(str(value), safe="")


@dataclass(frozen=True, slots=True)
class SseEvent:
    """One dispatched Server-Sent Event."""

    event: str
    data: str
    id: str | None = None


def parse_sse(lines: Iterable[str]) -> Iterator[SseEvent]:
    """Turn the lines of a `text/event-stream` body into events (WHATWG SSE rules).

    Comment lines (`:` keep-alives) are skipped, several `data:` lines join with
    newlines, a blank line dispatches, and an event cut off by the end of the stream
    is dropped, as a browser would.
    """
    event = ""
    data: list[str] = []
    event_id: str | None = None
    has_data = False
    for raw in lines:
        line = raw.rstrip("\r\n")
        if not line:
            if has_data:
                yield SseEvent(event=event or "message", data="\n".join(data), id=event_id)
            event, data, has_data = "", [], False
            continue
        if line.startswith(":"):
            continue
        field, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if field == "event":
            event = value
        elif field == "data":
            data.append(value)
            has_data = True
        elif field == "id" and "\0" not in value:
            event_id = value
        # `retry:` and unknown fields are ignored: we reconnect on our own schedule.


def _chunks(
    data: bytes, on_progress: Callable[[int], None] | None, size: int = UPLOAD_CHUNK_SIZE
) -> Iterator[bytes]:
    """Yield `data` in chunks, reporting the bytes sent so far after each one."""
    sent = 0
    view = memoryview(data)
    for start in range(0, len(data), size):
        chunk = bytes(view[start : start + size])
        yield chunk
        sent += len(chunk)
        if on_progress is not None:
            on_progress(sent)


class TowerApi:
    """The Tower v1 API, bound to one server and one credential.

    Args:
        url: the server URL; its path is replaced by `/v1`.
        api_key: sent as `X-API-Key`.
        jwt: a session or team JWT, sent as `Authorization: Bearer` (wins over api_key).
        transport: an httpx transport, for tests.
    """

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        jwt: str | None = None,
        transport: httpx.BaseTransport | None = None,
        ca_bundle: str | None = None,
    ) -> None:
        self.url = url
        self._http = HttpClient(
            url, api_key=api_key, token=jwt, transport=transport, ca_bundle=ca_bundle
        )

    # -- plumbing ----------------------------------------------------------------------

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> TowerApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _get(self, path: str, **params: Any) -> JsonDict:
        # None means "not given"; an empty list (no repeated filter) is left out too.
        query = {k: v for k, v in params.items() if v is not None and v != []}
        return self._http.get_json(path, params=query)

    def _environment_listing(
        self,
        path: str,
        items_key: str,
        environment: str,
        all_environments: bool,
        **filters: Any,
    ) -> list[JsonDict]:
        """`GET path` for secrets or catalogs: what a run in `environment` sees, or every
        environment's with `all_environments` (the first 100; None filters are left out)."""
        body = self._get(
            path,
            page=0,
            page_size=100,
            environment=environment,
            all="true" if all_environments else "false",
            **filters,
        )
        return list(body.get(items_key, []))

    def _export_pages(
        self,
        path: str,
        items_key: str,
        public_key_pem: str,
        environment: str,
        all_environments: bool,
    ) -> list[JsonDict]:
        """POST an export request (secrets and catalogs share its body) page by page,
        100 items a page, until the last page; the items of every page, in order."""
        items: list[JsonDict] = []
        page = 1
        while True:
            body = self._http.post_json(
                path,
                {
                    "public_key": public_key_pem,
                    "environment": environment,
                    "all": all_environments,
                    "page": page,
                    "page_size": 100,
                },
            )
            items.extend(body.get(items_key, []))
            num_pages = (body.get("pages") or {}).get("num_pages") or 1
            if page >= num_pages:
                return items
            page += 1

    # -- session and environments ------------------------------------------------------

    def describe_session(self) -> JsonDict:
        """`GET /session` → `{session: {user, token, teams, ...}}`."""
        return self._get("/session")

    def create_device_login(self) -> JsonDict:
        """`GET /login/device` → `{device_code, user_code, login_url, interval, expires_in…}`."""
        return self._get("/login/device")

    def describe_device_login(self, device_code: str) -> JsonDict | None:
        """`GET /login/device/{code}`: the session once approved; None while pending (404)."""
        try:
            return self._get(f"/login/device/{_seg(device_code)}")
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def list_environments(self) -> list[JsonDict]:
        """`GET /environments` → the environments (`{name, is_deletable}`)."""
        body = self._get("/environments", page=0, page_size=100)
        return list(body.get("environments", []))

    # -- apps --------------------------------------------------------------------------

    def list_apps(self) -> list[JsonDict]:
        """`GET /apps` → the `{app, runs}` summaries of every app (page 0 = no paging)."""
        body = self._get("/apps", page=0, page_size=100, num_runs=0)
        return list(body.get("apps", []))

    def create_app(self, name: str, short_description: str = "") -> JsonDict:
        """`POST /apps` → `{app}`."""
        return self._http.post_json("/apps", {"name": name, "short_description": short_description})

    def describe_app(self, name: str, environment: str | None = None) -> JsonDict:
        """`GET /apps/{name}` → `{app, runs}`; runs filtered to `environment` when given."""
        return self._get(f"/apps/{_seg(name)}", environment=environment)

    def delete_app(self, name: str) -> JsonDict:
        """`DELETE /apps/{name}` → `{app}`."""
        return self._http.request("DELETE", f"/apps/{_seg(name)}").json()

    def update_app(
        self,
        name: str,
        *,
        short_description: str | None = None,
        status: str | None = None,
        pending_timeout: int | None = None,
        running_timeout: int | None = None,
        retry_policy: JsonDict | None = None,
        sandbox: JsonDict | None = None,
    ) -> JsonDict:
        """`PUT /apps/{name}` with only the fields given → `{app}`.

        `status` is `"active"` or `"disabled"`; timeouts are seconds (0 = no limit);
        `retry_policy` is a whole RunRetryPolicy (`max_retries`, `retry_delay_seconds`,
        `use_exponential_backoff`), since the server replaces it as one value;
        `sandbox` holds the sandbox settings to change (`memory_mb`, `cpu_seconds`,
        `file_size_mb`, `processes`: 0 = the runner's default; `isolate_network`).
        """
        fields = {
            "short_description": short_description,
            "status": status,
            "pending_timeout": pending_timeout,
            "running_timeout": running_timeout,
            "retry_policy": retry_policy,
        }
        body = {key: value for key, value in fields.items() if value is not None}
        body.update({key: value for key, value in (sandbox or {}).items() if value is not None})
        return self._http.request("PUT", f"/apps/{_seg(name)}", json=body).json()

    def deploy(
        self,
        name: str,
        data: bytes,
        sha256: str,
        *,
        environment: str | None = None,
        all_environments: bool = False,
        idempotency_key: str | None = None,
        on_progress: Callable[[int], None] | None = None,
    ) -> JsonDict:
        """`POST /apps/{name}/deploy` with the raw `.tar.gz` package → `{version}`.

        The body is streamed (chunked, no Content-Length) in 64 KiB pieces;
        `on_progress` receives the number of bytes sent so far after each piece.
        `Content-Encoding: gzip` describes the archive itself: httpx never compresses
        request bodies, so the bytes on the wire are exactly the ones `sha256` covers.
        """
        headers = {
            "Content-Type": "application/tar",
            "Content-Encoding": "gzip",
            "X-Tower-Checksum-SHA256": sha256.lower(),
        }
        if idempotency_key:
            headers["X-Tower-Idempotency-Key"] = idempotency_key
        params: dict[str, str] = {}
        if all_environments:
            params["all_environments"] = "true"
        elif environment:
            params["environment"] = environment
        response = self._http.request(
            "POST",
            f"/apps/{_seg(name)}/deploy",
            params=params,
            headers=headers,
            content=_chunks(data, on_progress),
        )
        return response.json()

    # -- runs --------------------------------------------------------------------------

    def run_app(
        self,
        name: str,
        environment: str = "default",
        parameters: dict[str, str] | None = None,
    ) -> JsonDict:
        """`POST /apps/{name}/runs` → `{run}`; `parameters` is always sent, maybe empty."""
        body = {"environment": environment, "parameters": dict(parameters or {})}
        return self._http.post_json(f"/apps/{_seg(name)}/runs", body)

    def list_runs(
        self,
        name: str,
        *,
        page: int = 0,
        page_size: int = 100,
        statuses: Sequence[str] = (),
        environment: str | None = None,
        start_at: str | None = None,
        end_at: str | None = None,
    ) -> JsonDict:
        """`GET /apps/{name}/runs` → `{runs, pages}`, newest first.

        `page=0` asks for every run at once; `statuses` becomes a repeated `status`
        query parameter (a run matches any of them); `start_at`/`end_at` are RFC 3339.
        """
        return self._get(
            f"/apps/{_seg(name)}/runs",
            **_run_filters(page, page_size, statuses, environment, start_at, end_at),
        )

    def search_runs(
        self,
        *,
        page: int = 0,
        page_size: int = 100,
        statuses: Sequence[str] = (),
        environment: str | None = None,
        start_at: str | None = None,
        end_at: str | None = None,
    ) -> JsonDict:
        """`GET /runs` → `{runs, pages}`: the runs of every app, with the filters of
        :meth:`list_runs`."""
        return self._get(
            "/runs", **_run_filters(page, page_size, statuses, environment, start_at, end_at)
        )

    def describe_run(self, name: str, number: int) -> JsonDict:
        """`GET /apps/{name}/runs/{number}` → `{run, $links}`."""
        return self._get(f"/apps/{_seg(name)}/runs/{_seg(number)}")

    def cancel_run(self, name: str, number: int) -> JsonDict:
        """`POST /apps/{name}/runs/{number}` (no body) → `{run, cancelled_child_runs}`."""
        response = self._http.request("POST", f"/apps/{_seg(name)}/runs/{_seg(number)}")
        return response.json()

    def run_graph(self, name: str, number: int) -> list[JsonDict]:
        """`GET /apps/{name}/runs/{number}/graph` → the run graph this run is part of
        (runs started from other runs with `run_app`), as `{id, parent_id}` edges whose
        ids are `{app_name, number}`; `parent_id` is null for a run no run started."""
        body = self._get(f"/apps/{_seg(name)}/runs/{_seg(number)}/graph")
        return list(body.get("runs", []))

    def run_logs(self, name: str, number: int) -> list[JsonDict]:
        """`GET /apps/{name}/runs/{number}/logs` → the run's log lines so far."""
        body = self._get(f"/apps/{_seg(name)}/runs/{_seg(number)}/logs")
        return list(body.get("log_lines", []))

    def stream_run_logs(self, name: str, number: int) -> Iterator[JsonDict]:
        """Follow `GET /apps/{name}/runs/{number}/logs/stream` (Server-Sent Events).

        Yields the `RunLogLine` of each `log` event as it arrives; other events
        (`warning`, `error`, unnamed) and lines that are not JSON objects are skipped.
        Ends when the server closes the stream. A connection that breaks mid-stream
        raises :class:`ConnectionFailed`, so callers can tell it from a clean close.
        """
        path = f"/apps/{_seg(name)}/runs/{_seg(number)}/logs/stream"
        try:
            with self._http.http.stream(
                "GET", path, headers={"Accept": "text/event-stream"}, timeout=STREAM_TIMEOUT
            ) as response:
                if not response.is_success:
                    response.read()
                    raise_for_error(response)
                content_type = response.headers.get("content-type", "")
                if not content_type.startswith("text/event-stream"):
                    raise ApiError(
                        response.status_code,
                        f"The log stream answered with {content_type or 'no content type'} "
                        "instead of text/event-stream.",
                    )
                for event in parse_sse(response.iter_lines()):
                    line = _log_line(event)
                    if line is not None:
                        yield line
        except httpx.TransportError as exc:
            raise ConnectionFailed(
                f"The log stream from {self._http.url} was interrupted ({exc})."
            ) from exc

    # -- environments and versions (section: environments) -----------------------------

    def create_environment(self, name: str) -> JsonDict:
        """`POST /environments` → `{environment: {name, is_deletable}}`."""
        return self._http.post_json("/environments", {"name": name})

    def describe_environment(self, name: str) -> JsonDict:
        """`GET /environments/{name}` → `{environment, number_catalogs, number_schedules,
        number_secrets}`."""
        return self._get(f"/environments/{_seg(name)}")

    def rename_environment(self, name: str, new_name: str) -> JsonDict:
        """`PUT /environments/{name}` with `{new_name}` → `{environment}`."""
        path = f"/environments/{_seg(name)}"
        return self._http.request("PUT", path, json={"new_name": new_name}).json()

    def delete_environment(self, name: str) -> JsonDict:
        """`DELETE /environments/{name}` → `{environment}` (ours adds `deleted` counts)."""
        return self._http.request("DELETE", f"/environments/{_seg(name)}").json()

    def list_app_versions(self, name: str) -> list[JsonDict]:
        """`GET /apps/{name}/versions` → the app's versions, newest first."""
        body = self._get(f"/apps/{_seg(name)}/versions")
        return list(body.get("versions", []))

    def list_app_environments(self, name: str) -> JsonDict:
        """`GET /apps/{name}/environments` → `{environments: [names]}`; ours adds
        `pins: [{environment, version, updated_at}]`."""
        return self._get(f"/apps/{_seg(name)}/environments")

    def pin_app_version(self, name: str, environment: str, version: str) -> JsonDict:
        """`PUT /apps/{name}/environments/{environment}` with `{version}` → `{environment,
        version}`: promote a version, or roll back to an older one."""
        path = f"/apps/{_seg(name)}/environments/{_seg(environment)}"
        return self._http.request("PUT", path, json={"version": version}).json()

    # -- runners -----------------------------------------------------------------------

    def list_runners(self) -> list[JsonDict]:
        """`GET /runners` → the account's runners (installation admins: the shared pool
        too), each with status, environment, capacity and running count."""
        body = self._get("/runners", page=0, page_size=100)
        return list(body.get("runners", []))

    def create_runner_credentials(
        self, name: str | None = None, ttl_days: int | None = None
    ) -> JsonDict:
        """`POST /runners/credentials` → `{credentials: {token, name, runner_service_url,
        expires_at}}`; the token is shown only in this answer."""
        body = {"name": name, "ttl_days": ttl_days}
        return self._http.post_json("/runners/credentials", body)["credentials"]

    def runner_settings(self) -> JsonDict:
        """`GET /runners/settings` → `{self_hosted_only}`."""
        return self._get("/runners/settings")

    def update_runner_settings(self, *, self_hosted_only: bool) -> JsonDict:
        """`PUT /runners/settings` → `{self_hosted_only}`."""
        body = {"self_hosted_only": self_hosted_only}
        return self._http.request("PUT", "/runners/settings", json=body).json()

    # -- schedules (section: schedules) ------------------------------------------------

    def list_schedules(
        self, app: str | None = None, environment: str | None = None
    ) -> list[JsonDict]:
        """`GET /schedules` → every schedule (`{id, app_name, environment, cron, status,
        ...}`), optionally only one app's or one environment's."""
        filters = {k: v for k, v in (("app", app), ("environment", environment)) if v}
        body = self._get("/schedules", page=0, page_size=100, **filters)
        return list(body.get("schedules", []))

    def create_schedule(
        self,
        app: str,
        cron: str,
        environment: str = "default",
        parameters: dict[str, str] | None = None,
        **fields: str,
    ) -> JsonDict:
        """`POST /schedules` → `{schedule}`; `cron` may be a phrase ("every hour"), the
        answer shows the cron stored. `fields`: name, timezone, overlap_policy, status."""
        body: JsonDict = {"app_name": app, "cron": cron, "environment": environment, **fields}
        if parameters:
            body["parameters"] = _name_values(parameters)
        return self._http.post_json("/schedules", body)

    def describe_schedule(self, id_or_name: str) -> JsonDict:
        """`GET /schedules/{id_or_name}` → `{schedule}` with its `next_fire_times`."""
        return self._get(f"/schedules/{_seg(id_or_name)}")

    def update_schedule(
        self,
        id_or_name: str,
        cron: str | None = None,
        parameters: dict[str, str] | None = None,
        **fields: str,
    ) -> JsonDict:
        """`PUT /schedules/{id_or_name}` with only the fields given → `{schedule}`."""
        body: JsonDict = dict(fields)
        if cron is not None:
            body["cron"] = cron
        if parameters:
            body["parameters"] = _name_values(parameters)
        path = f"/schedules/{_seg(id_or_name)}"
        return self._http.request("PUT", path, json=body).json()

    def delete_schedules(self, ids: Sequence[str]) -> list[JsonDict]:
        """`DELETE /schedules` with `{ids}` → the deleted schedules."""
        body = self._http.request("DELETE", "/schedules", json={"ids": list(ids)}).json()
        return list(body.get("schedules", []))

    def set_schedules_active(self, ids: Sequence[str], active: bool) -> list[JsonDict]:
        """`PATCH /schedules/activate` (or `/deactivate`) with `{ids}` → the schedules."""
        path = "/schedules/activate" if active else "/schedules/deactivate"
        body = self._http.request("PATCH", path, json={"ids": list(ids)}).json()
        return list(body.get("schedules", []))

    # -- secrets (section: secrets) ----------------------------------------------------

    def secrets_key(self) -> str:
        """`GET /secrets/key` → the server's PKCS#1 PEM public key to encrypt values to."""
        return str(self._get("/secrets/key").get("public_key", ""))

    def list_secrets(
        self, environment: str = "default", *, all_environments: bool = False
    ) -> list[JsonDict]:
        """`GET /secrets` → the Secrets a run in `environment` gets (inherited from
        `default` included), or every secret with `all_environments`."""
        return self._environment_listing("/secrets", "secrets", environment, all_environments)

    def create_secret(
        self, name: str, encrypted_value: str, preview: str, environment: str = "default"
    ) -> JsonDict:
        """`POST /secrets` with a value already encrypted to :meth:`secrets_key` → `{secret}`."""
        body = {
            "name": name,
            "environment": environment,
            "encrypted_value": encrypted_value,
            "preview": preview,
        }
        return self._http.post_json("/secrets", body)

    def update_secret(
        self, name: str, encrypted_value: str, preview: str, environment: str = "default"
    ) -> JsonDict:
        """`PUT /secrets/{name}` with a new encrypted value → `{secret}`."""
        body = {"environment": environment, "encrypted_value": encrypted_value, "preview": preview}
        return self._http.request("PUT", f"/secrets/{_seg(name)}", json=body).json()

    def delete_secret(self, name: str, environment: str = "default") -> JsonDict:
        """`DELETE /secrets/{name}?environment=ENV` → `{secret}`."""
        path = f"/secrets/{_seg(name)}"
        return self._http.request("DELETE", path, params={"environment": environment}).json()

    def export_secrets(
        self, public_key_pem: str, environment: str = "default", *, all_environments: bool = False
    ) -> list[JsonDict]:
        """`POST /secrets/export` → every ExportedSecret, each value encrypted to
        `public_key_pem` (SPKI PEM); pages of 100 are fetched until the last one."""
        return self._export_pages(
            "/secrets/export", "secrets", public_key_pem, environment, all_environments
        )

    # -- catalogs (section: catalogs) --------------------------------------------------

    def list_catalogs(
        self,
        environment: str = "default",
        *,
        all_environments: bool = False,
        catalog_type: str | None = None,
    ) -> list[JsonDict]:
        """`GET /catalogs` → the Catalogs a run in `environment` sees (inherited from
        `default` included), or every catalog with `all_environments`; maybe one type."""
        return self._environment_listing(
            "/catalogs", "catalogs", environment, all_environments, type=catalog_type
        )

    def describe_catalog(self, name: str, environment: str = "default") -> JsonDict:
        """`GET /catalogs/{name}?environment=ENV` → `{catalog}` (maybe inherited)."""
        return self._get(f"/catalogs/{_seg(name)}", environment=environment)

    def create_catalog(
        self,
        name: str,
        catalog_type: str,
        properties: Sequence[JsonDict],
        environment: str = "default",
    ) -> JsonDict:
        """`POST /catalogs` → `{catalog}`. Each property is `{name, encrypted_value,
        preview[, environment_variable]}`, its value encrypted to :meth:`secrets_key`."""
        body = {
            "name": name,
            "environment": environment,
            "type": catalog_type,
            "properties": list(properties),
        }
        return self._http.post_json("/catalogs", body)

    def update_catalog(
        self, name: str, properties: Sequence[JsonDict], environment: str = "default"
    ) -> JsonDict:
        """`PUT /catalogs/{name}` setting the given (encrypted) properties → `{catalog}`."""
        body = {"environment": environment, "properties": list(properties)}
        return self._http.request("PUT", f"/catalogs/{_seg(name)}", json=body).json()

    def delete_catalog(self, name: str, environment: str = "default") -> None:
        """`DELETE /catalogs/{name}?environment=ENV` → 204, no body."""
        path = f"/catalogs/{_seg(name)}"
        self._http.request("DELETE", path, params={"environment": environment})

    def export_catalogs(
        self, public_key_pem: str, environment: str = "default", *, all_environments: bool = False
    ) -> list[JsonDict]:
        """`POST /catalogs/export` → every ExportedCatalog, property values encrypted to
        `public_key_pem` (SPKI PEM); pages of 100 are fetched until the last one."""
        return self._export_pages(
            "/catalogs/export", "catalogs", public_key_pem, environment, all_environments
        )

    def describe_default_catalog(self) -> JsonDict:
        """`GET /storage/catalogs/default` → `{catalog}`, provisioned on first use."""
        return self._get("/storage/catalogs/default")

    # -- teams -------------------------------------------------------------------------

    def list_teams(self) -> list[JsonDict]:
        """`GET /teams` → the teams (and personal account) the caller belongs to."""
        body = self._get("/teams", page=0, page_size=100)
        return list(body.get("teams", []))

    def create_team(self, name: str, slug: str | None = None) -> JsonDict:
        """`POST /teams` with `{name, slug?}` → `{team}`."""
        body: JsonDict = {"name": name}
        if slug:
            body["slug"] = slug
        return self._http.post_json("/teams", body)

    def describe_team(self, slug: str) -> JsonDict:
        """`GET /teams/{slug}` → `{team, members, invitations}`."""
        return self._get(f"/teams/{_seg(slug)}")

    def update_team(
        self, slug: str, *, name: str | None = None, new_slug: str | None = None
    ) -> JsonDict:
        """`PUT /teams/{slug}` with `{name?, slug?}` → `{team}`."""
        body = {"name": name, "slug": new_slug}
        return self._http.request("PUT", f"/teams/{_seg(slug)}", json=body).json()

    def delete_team(self, slug: str) -> JsonDict:
        """`DELETE /teams` with `{name}` → `{team}`."""
        return self._http.request("DELETE", "/teams", json={"name": slug}).json()

    def invite_team_members(self, slug: str, emails: Sequence[str], role: str) -> list[JsonDict]:
        """`POST /teams/{slug}/invites` → the invitations."""
        body = {"emails": ", ".join(emails), "role": role}
        answer = self._http.post_json(f"/teams/{_seg(slug)}/invites", body)
        return list(answer.get("team_invitations", []))

    def list_my_team_invitations(self) -> list[JsonDict]:
        """`GET /team-invites` → the invitations addressed to the caller."""
        return list(self._get("/team-invites").get("team_invitations", []))

    def answer_team_invitation(self, slug: str, *, accepted: bool) -> JsonDict:
        """`PUT /team-invites` with `{name, accepted}`."""
        body = {"name": slug, "accepted": accepted}
        return self._http.request("PUT", "/team-invites", json=body).json()

    def leave_team(self, slug: str) -> JsonDict:
        """`POST /teams/{slug}/leave` → `{team}`."""
        return self._http.post_json(f"/teams/{_seg(slug)}/leave")

    def update_team_member(self, slug: str, email: str, role: str) -> JsonDict:
        """`PUT /teams/{slug}/members` with `{email, role}` → `{team_member}`."""
        body = {"email": email, "role": role}
        return self._http.request("PUT", f"/teams/{_seg(slug)}/members", json=body).json()

    def remove_team_member(self, slug: str, email: str) -> JsonDict:
        """`DELETE /teams/{slug}/members` with `{email}` → `{team_member}`."""
        path = f"/teams/{_seg(slug)}/members"
        return self._http.request("DELETE", path, json={"email": email}).json()

    def list_audit_events(
        self,
        *,
        action: str | None = None,
        since: str | None = None,
        until: str | None = None,
        page: int = 1,
        page_size: int = 20,
    ) -> JsonDict:
        """`GET /audit-events` → `{audit_events, pages}`, newest first; `action` is one
        action (`secret.create`) or a resource's (`secret`), `since`/`until` RFC 3339."""
        return self._get(
            "/audit-events",
            action=action,
            since=since,
            until=until,
            page=page,
            page_size=page_size,
        )


def _name_values(values: dict[str, str]) -> list[JsonDict]:
    """Schedules carry parameters as a list of `{name, value}` (runs use a map)."""
    return [{"name": name, "value": value} for name, value in values.items()]


def _run_filters(
    page: int,
    page_size: int,
    statuses: Sequence[str],
    environment: str | None,
    start_at: str | None,
    end_at: str | None,
) -> dict[str, Any]:
    """The query both run listings share (None values are dropped by `_get`)."""
    return {
        "page": page,
        "page_size": page_size,
        "status": list(statuses),
        "environment": environment,
        "start_at": start_at,
        "end_at": end_at,
    }


def _log_line(event: SseEvent) -> JsonDict | None:
    """The RunLogLine carried by a `log` event, or None for anything else."""
    if event.event != "log":
        return None
    try:
        value = json.loads(event.data)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
