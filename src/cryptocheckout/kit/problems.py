"""Every error is application/problem+json (RFC 9457): type, title, status, detail, errors.

A database that does not answer (refused, hung past the engine's timeouts, pool exhausted,
SQLite locked past its busy timeout) is 503 with Retry-After, never 500; an unexpected error
is 500. Either way the error is answered and logged here and goes no further: an exception
that reaches the server makes it log a traceback of its own and drop the connection, which
the client's next request on it would find closed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any, cast

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cryptocheckout.kit.errors import DomainError, ProviderRefused
from cryptocheckout.kit.logsafe import FailureLog

logger = logging.getLogger("cryptocheckout.http")
failures = FailureLog(logger)

# What a client should wait before retrying during a database outage, in seconds.
OUTAGE_RETRY_AFTER = "5"

PROBLEM_MEDIA_TYPE = "application/problem+json"


class Problem(Exception):
    """An error the caller should see, with its HTTP status and a stable type slug."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        type_: str | None = None,
        title: str | None = None,
        errors: Sequence[dict[str, Any]] | None = None,
        extra: dict[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.title = title or HTTPStatus(status).phrase
        self.type = type_ or self.title.lower().replace(" ", "-")
        self.errors = list(errors) if errors is not None else None
        self.extra = extra or {}
        self.headers = dict(headers) if headers else None


def field_error(loc: Sequence[str | int], msg: str, type_: str = "value_error") -> dict[str, Any]:
    return {"loc": list(loc), "msg": msg, "type": type_}


def validation_problem(detail: str, errors: Sequence[dict[str, Any]]) -> Problem:
    return Problem(422, detail, type_="validation-error", errors=errors)


def not_found(what: str) -> Problem:
    return Problem(404, f"{what} not found", type_="not-found")


# The one mapping of domain errors to HTTP.
DOMAIN_STATUS: dict[str, int] = {
    "invalid": 422,
    "not_found": 404,
    "conflict": 409,
    "unavailable": 502,
}


# Where a field can come from besides the body; a path already naming one keeps it.
REQUEST_PARTS = frozenset({"query", "path", "header"})


def domain_problem(error: DomainError, *, location: str = "body") -> Problem:
    """The problem+json form of a domain error; field paths gain the request part (`body`)
    unless they name one (`("query", "cursor")`)."""
    errors = [
        field_error(
            list(issue.loc)
            if issue.loc[:1] and issue.loc[0] in REQUEST_PARTS
            else [location, *issue.loc],
            issue.message,
            issue.code,
        )
        for issue in error.fields
    ]
    extra: dict[str, Any] = {}
    if isinstance(error, ProviderRefused):
        extra["provider_code"] = error.provider_code
    return Problem(
        DOMAIN_STATUS[error.kind],
        error.detail,
        type_=error.code,
        errors=errors or None,
        extra=extra,
    )


def problem_response(problem: Problem) -> JSONResponse:
    body: dict[str, Any] = {
        "type": problem.type,
        "title": problem.title,
        "status": problem.status,
        "detail": problem.detail,
    }
    if problem.errors is not None:
        body["errors"] = problem.errors
    body.update(problem.extra)
    return JSONResponse(
        body, status_code=problem.status, media_type=PROBLEM_MEDIA_TYPE, headers=problem.headers
    )


def _clean_errors(errors: Sequence[Any]) -> list[dict[str, Any]]:
    # Pydantic's raw errors carry the offending input and exception objects: the input can
    # be huge or not JSON-serialisable, so only location, message and type go back.
    return [
        field_error(
            [part for part in error.get("loc", ()) if isinstance(part, str | int)],
            str(error.get("msg", "invalid value")),
            str(error.get("type", "value_error")),
        )
        for error in errors
    ]


async def _handle_problem(_request: Request, exc: Exception) -> JSONResponse:
    return problem_response(cast(Problem, exc))


async def _handle_domain(_request: Request, exc: Exception) -> JSONResponse:
    return problem_response(domain_problem(cast(DomainError, exc)))


async def _handle_validation(_request: Request, exc: Exception) -> JSONResponse:
    errors = _clean_errors(cast(RequestValidationError, exc).errors())
    if any(error["type"] == "json_invalid" for error in errors):
        return problem_response(
            Problem(400, "The request body is not valid JSON.", type_="malformed-json")
        )
    return problem_response(validation_problem("The request is not valid.", errors))


async def _handle_http(_request: Request, exc: Exception) -> JSONResponse:
    exc = cast(StarletteHTTPException, exc)
    detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
    return problem_response(Problem(exc.status_code, detail, headers=exc.headers))


def is_database_outage(exc: BaseException) -> bool:
    """True when `exc` says the database (or the network to it) does not answer."""
    if isinstance(exc, sa_exc.TimeoutError | sa_exc.OperationalError | sa_exc.InterfaceError):
        return True  # pool timeout; refused, dropped or locked connections
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    # asyncpg's connect errors (refused, connect timeout) and its command timeout arrive
    # unwrapped; TimeoutError is an OSError.
    return isinstance(exc, OSError)


def database_unavailable() -> Problem:
    return Problem(
        503,
        "The database does not answer; try again shortly.",
        type_="database-unavailable",
        headers={"Retry-After": OUTAGE_RETRY_AFTER},
    )


async def _handle_database(request: Request, exc: Exception) -> JSONResponse:
    where = (request.method, request.url.path)
    if is_database_outage(exc):
        failures.failure(exc, "database unavailable on %s %s", *where)
        return problem_response(database_unavailable())
    failures.failure(exc, "unhandled database error on %s %s", *where)
    return _internal_error()


def _internal_error() -> JSONResponse:
    return problem_response(Problem(500, "An unexpected error occurred.", type_="internal-error"))


async def _handle_unexpected(request: Request, exc: Exception) -> JSONResponse:
    if is_database_outage(exc):  # raised where the handlers above do not reach (middleware)
        failures.failure(exc, "database unavailable on %s %s", request.method, request.url.path)
        return problem_response(database_unavailable())
    failures.failure(exc, "unhandled error on %s %s", request.method, request.url.path)
    return _internal_error()


class UnhandledErrors:
    """Pure ASGI middleware, outermost: answers any exception that escaped the app and the
    other middleware (500, or 503 for a database outage) instead of letting it reach
    Starlette's error middleware, which re-raises it to the server."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            request = Request(scope)
            if started:  # too late to answer: the server ends the response
                failures.failure(
                    exc, "error after answering %s %s", scope["method"], request.url.path
                )
                return
            response = await _handle_unexpected(request, exc)
            await response(scope, receive, send)


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(Problem, _handle_problem)
    app.add_exception_handler(DomainError, _handle_domain)
    app.add_exception_handler(RequestValidationError, _handle_validation)
    app.add_exception_handler(StarletteHTTPException, _handle_http)
    # Database and network errors are answered inside the app; any other exception by the
    # `UnhandledErrors` middleware (a handler for `Exception` would run in Starlette's error
    # middleware, which re-raises to the server after answering).
    app.add_exception_handler(sa_exc.SQLAlchemyError, _handle_database)
    app.add_exception_handler(OSError, _handle_database)
