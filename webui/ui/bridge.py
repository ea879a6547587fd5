"""The one boundary where domain errors become messages in the browser.

Domain code raises precise exceptions (`RequestError`, other `ValueError`s, `LookupError`, the engine's
`QueueFullError`, the model manager's `ModelLoadError`); `guard` wraps every UI handler, plain, async or
generator, and turns them into `gr.Error` with the exception's own message. Anything unexpected is logged with
its traceback on the server and shown to the user as one readable line, never as a traceback.

The engine and model manager are not imported here (they pull in torch); their exceptions are recognised
by class name anywhere in the exception's class hierarchy.
"""
from __future__ import annotations

import contextlib
import functools
import html
import inspect
import logging
from typing import Any, Callable, Iterator, TypeVar

import gradio as gr

from webui.requests import RequestError

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

# Exceptions whose message is written for users (matched by class name through the MRO).
DOMAIN_ERROR_NAMES = frozenset({"RequestError", "QueueFullError", "ModelLoadError"})


def _escape(text: str) -> str:
    """gr.Error renders HTML; show the text as written."""
    return html.escape(text, quote=False)


def is_domain_error(exc: BaseException) -> bool:
    if isinstance(exc, (ValueError, LookupError)):
        return True
    return any(cls.__name__ in DOMAIN_ERROR_NAMES for cls in type(exc).__mro__)


def describe(exc: BaseException) -> str:
    """One line a user can act on."""
    if isinstance(exc, RequestError):
        return f"{exc.field}: {exc.message}"
    if isinstance(exc, KeyError) and exc.args:
        # str(KeyError) wraps its argument in quotes; show the plain message.
        return str(exc.args[0])
    text = str(exc).strip()
    return text or type(exc).__name__


def to_gr_error(exc: BaseException) -> gr.Error:
    """The gr.Error shown for an exception raised by a handler."""
    if isinstance(exc, gr.Error):
        return exc
    if is_domain_error(exc):
        return gr.Error(_escape(describe(exc)), print_exception=False)
    log.error("unexpected error in a UI handler", exc_info=exc)
    first_line = describe(exc).splitlines()[0][:300]
    return gr.Error(_escape(f"Unexpected error ({type(exc).__name__}): {first_line}. "
                                "Details are in the server log."), print_exception=False)


@contextlib.contextmanager
def _ui_boundary() -> Iterator[None]:
    """Turn any exception raised inside into the gr.Error the browser shows (gr.Error passes unchanged)."""
    try:
        yield
    except gr.Error:
        raise
    except Exception as exc:  # noqa: BLE001 - this is the UI boundary
        raise to_gr_error(exc) from exc


def guard(fn: F) -> F:
    """Wrap a handler (function, coroutine, generator or async generator) so every exception reaches the browser
    as a gr.Error. The wrapper is of the same kind, so Gradio runs an async one on its event loop (no thread)."""
    if inspect.isasyncgenfunction(fn):
        @functools.wraps(fn)
        async def async_gen_wrapper(*args: Any, **kwargs: Any) -> Any:
            with _ui_boundary():
                async with contextlib.aclosing(fn(*args, **kwargs)) as stream:
                    async for item in stream:
                        yield item
        return async_gen_wrapper  # type: ignore[return-value]

    if inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            with _ui_boundary():
                return await fn(*args, **kwargs)
        return async_wrapper  # type: ignore[return-value]

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen_wrapper(*args: Any, **kwargs: Any) -> Any:
            with _ui_boundary():
                yield from fn(*args, **kwargs)
        return gen_wrapper  # type: ignore[return-value]

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with _ui_boundary():
            return fn(*args, **kwargs)
    return wrapper  # type: ignore[return-value]


def job_failed(message: str | None) -> gr.Error:
    """The gr.Error for a job the worker reported as failed (its message is already written for users)."""
    return gr.Error(_escape(message or "the job failed; see the server log"), print_exception=False)
