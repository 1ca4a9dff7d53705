"""One table from errors to HTTP: the contract's ErrorModel plus `message`, `code`, `error_id`.

Bad input is always a 4xx naming the problem; anything unexpected is a 500
whose body carries only an id that is also in the server log.
"""

from __future__ import annotations

import logging
import uuid
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from tower.core import errors

logger = logging.getLogger(__name__)


def error_body(
    status: int,
    detail: str,
    *,
    code: str,
    items: list[dict[str, Any]] | None = None,
    error_id: str | None = None,
) -> dict[str, Any]:
    return {
        "status": status,
        "title": HTTPStatus(status).phrase,
        "detail": detail,
        "errors": items or [],
        "message": detail,
        "code": code,
        "error_id": error_id or uuid.uuid4().hex,
    }


def tower_error_body(exc: errors.TowerError) -> dict[str, Any]:
    """The error body a request refused with `exc` is answered."""
    items = []
    if exc.location or exc.value is not None:
        items.append({"location": exc.location, "message": exc.message, "value": exc.value})
    return error_body(exc.status, exc.message, code=exc.code, items=items)


def _tower_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, errors.TowerError)
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return JSONResponse(tower_error_body(exc), status_code=exc.status, headers=headers)


def _location(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc)


def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    items = [
        {"location": _location(e["loc"]), "message": e["msg"], "value": e.get("input")}
        for e in exc.errors()
    ]
    first = items[0] if items else {"location": "", "message": "invalid request"}
    detail = f"Invalid request: {first['location']}: {first['message']}"
    body = error_body(422, detail, code="invalid_input", items=items)
    return JSONResponse(_jsonable(body), status_code=422)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
    if exc.status_code == 404 and detail == "Not Found":
        detail = "No such endpoint. The API lives under /v1; see /docs."
    code = HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_")
    return JSONResponse(
        error_body(exc.status_code, detail, code=code),
        status_code=exc.status_code,
        headers=getattr(exc, "headers", None),
    )


def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
    error_id = uuid.uuid4().hex
    logger.exception("unhandled error %s", error_id, exc_info=exc)
    detail = f"Internal error; the server log has the details under error_id {error_id}."
    return JSONResponse(
        error_body(500, detail, code="internal_error", error_id=error_id), status_code=500
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(errors.TowerError, _tower_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
