"""How the API answers errors, and the route class every API route (and extension route) is built with.

Every error leaves as JSON `{"error", "detail", "field"}` (AUTOMATIC1111 clients read `detail`): bad input is a
4xx naming the field, a full queue a 503, and only a failure inside the pipeline a 500. Domain code raises typed
exceptions that carry the field and the message (`RequestError`, `ApiError`, `RequestBoundError`); they are
turned into answers here, never parsed back out of their text. The route class also asks for a login (HTTP Basic,
with `--api-auth` or the UI's logins; an address that keeps failing is made to wait) and holds the body to its
size and shape limits before the handler runs.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Coroutine

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from webui.api.bounds import JsonShape, RequestBoundError, RequestBounds, check_images, is_json
from webui.engine.worker import Job, QueueFullError
from webui.model_manager.errors import ModelLoadError, ModelNotFoundError
from webui.requests import RequestError
from webui.security import LOGIN_CHECKED, LoginThrottle, check_basic_auth

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error with its HTTP status and the request field it is about."""

    def __init__(self, status: int, field_name: str | None, message: str, kind: str = "BadRequest",
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{field_name}: {message}" if field_name else message)
        self.status = status
        self.field = field_name
        self.message = message
        self.kind = kind
        self.headers = headers


def error_response(status: int, kind: str, message: str, field_name: str | None,
                   headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    detail = f"{field_name}: {message}" if field_name else message
    return JSONResponse(status_code=status, headers=headers,
                        content={"error": kind, "detail": detail, "field": field_name, **extra})


def validation_response(exc: RequestValidationError) -> JSONResponse:
    """A 422 naming the first field pydantic rejected (and listing the others)."""
    problems = []
    for err in exc.errors():
        loc = [str(part) for part in err.get("loc", ()) if part != "body"]
        if err.get("type") == "json_invalid":
            name, path = "body", "body"
            message = f"is not valid JSON ({err.get('ctx', {}).get('error', 'decode error')})"
        else:
            name = loc[0] if loc else "body"
            path = ".".join(loc) if loc else "body"
            message = err.get("msg", "is invalid")
            if err.get("type") == "missing":
                message = "is required"
        problems.append({"field": name, "path": path, "message": message})
    if not problems:
        problems.append({"field": "body", "path": "body", "message": "is invalid"})
    first = problems[0]
    detail = "; ".join(f"{p['path']}: {p['message']}" for p in problems)
    return JSONResponse(status_code=422, content={"error": "ValidationError", "detail": detail,
                                                  "field": first["field"], "errors": problems})


def route_class(max_body_bytes: int, logins: list[tuple[str, str]], throttle: LoginThrottle | None = None,
                 bounds: Callable[[], RequestBounds] | None = None, shown: Callable[[str], str] = str
                 ) -> type[APIRoute]:
    """Routes that check logins, the body size and its shape (`bounds`), and turn every error into the JSON above
    (its message passed through `shown`, which takes this machine's folders out of it).

    Done per route rather than as app middleware or exception handlers, because the Gradio app has already
    started when the API is added to it.
    """

    class EaselRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def guarded(request: Request) -> Response:
                try:
                    check_login(request, logins, throttle)
                    await read_body(request, max_body_bytes, bounds() if bounds is not None else None)
                    return await handler(request)
                except RequestValidationError as exc:
                    return validation_response(exc)
                except ApiError as exc:
                    return error_response(exc.status, exc.kind, shown(exc.message), exc.field, exc.headers)
                except RequestError as exc:
                    return error_response(422, "RequestError", shown(exc.message), exc.field)
                except QueueFullError as exc:
                    return error_response(503, "QueueFull", str(exc), None, {"Retry-After": "5"})
                except HTTPException as exc:  # FastAPI's own refusals, e.g. a body that is not UTF-8 JSON
                    message = exc.detail if isinstance(exc.detail, str) else "the request was refused"
                    return error_response(exc.status_code, "BadRequest", shown(message),
                                          "body" if exc.status_code < 500 else None, exc.headers)
                except Exception as exc:  # noqa: BLE001 - the one place internal failures become a 500
                    log.exception("API %s %s failed", request.method, request.url.path)
                    return error_response(500, type(exc).__name__, shown(str(exc) or type(exc).__name__), None)

            return guarded

    return EaselRoute


def job_failure(job: Job, what: str, field_name: str | None = None) -> ApiError:
    """A failed job as an API error: bad input found while running is the client's (4xx), the rest is ours."""
    exc = job.exception
    if isinstance(exc, RequestError):
        return ApiError(422, exc.field, exc.message, "RequestError")
    if isinstance(exc, ModelNotFoundError):
        return ApiError(404, field_name, str(exc), "NotFound")
    if isinstance(exc, ModelLoadError):  # a broken, truncated or mismatched file: the message names it
        return ApiError(422, field_name or "sd_model_checkpoint", str(exc), "ModelLoadError")
    if isinstance(exc, ValueError):  # other bad input found while running: about the field the route names
        return ApiError(422, field_name, str(exc), "RequestError")
    return ApiError(500, None, f"{what}: {job.error or 'unknown error'}", "JobFailed")


def check_login(request: Request, logins: list[tuple[str, str]], throttle: LoginThrottle | None = None) -> None:
    """HTTP Basic against `logins` (compared in constant time); an address that failed too often gets a 429
    before its credentials are even looked at. A request `ApiLoginMiddleware` already let through is not checked
    twice."""
    if request.scope.get(LOGIN_CHECKED):
        return
    address = request.client.host if request.client else "unknown"
    refusal = check_basic_auth(request.headers.get("authorization", ""), address, logins, throttle)
    if refusal is not None:
        raise ApiError(refusal.status, None, refusal.message, refusal.kind, refusal.headers)


async def read_body(request: Request, limit: int, bounds: RequestBounds | None = None) -> None:
    """Read the body and leave it cached for the handler, refusing it once it passes `limit` bytes.

    A JSON body is also held to `webui.api.bounds`: its shape while it streams in, then (with `bounds`) the
    number and total pixels of the images it carries, read from their headers before any is decoded."""
    if request.method not in ("POST", "PUT", "PATCH"):
        return
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "body", f"the request body is {int(declared)} bytes; the limit is {limit}",
                       "PayloadTooLarge")
    shape = JsonShape() if is_json(request.headers.get("content-type")) else None
    chunks: list[bytes] = []
    total = 0
    try:
        async for chunk in request.stream():
            total += len(chunk)
            if total > limit:
                raise ApiError(413, "body", f"the request body exceeds the limit of {limit} bytes",
                               "PayloadTooLarge")
            if shape is not None:
                shape.feed(chunk)
            chunks.append(chunk)
        request._body = b"".join(chunks)  # where Starlette's Request.body() keeps the body it has read
        del chunks
        if shape is not None and bounds is not None and request._body:
            try:
                data = await request.json()  # kept by Starlette: FastAPI's handler does not parse it again
            except (ValueError, RecursionError):
                return  # FastAPI answers malformed JSON itself
            await run_in_threadpool(check_images, data, bounds)
    except RequestBoundError as exc:
        raise ApiError(exc.status, exc.field, exc.message, exc.kind) from None
