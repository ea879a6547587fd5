"""Who may reach Easel and what they can touch: logins, the launch policy, slowing down guessers, confinement.

Logins come from `--gradio-auth user:pass[,user2:pass2]` and `--gradio-auth-path FILE` (the same format, one or
more per line); they protect the UI and, unless `--api-auth` gives the API its own, the API too. Passwords are
compared in constant time (over every known pair, on SHA-256 digests, so neither content nor length leaks) and
never appear in a message or a log line. `LoginThrottle` counts failed logins per (client address, user name)
and per user name, and makes an address that keeps failing for a name wait, doubling each time, without ever
refusing an address that has not failed itself; `LoginThrottleMiddleware` applies it to Gradio's `/login` form,
the API applies it itself. The client address is the connection's, or with `--forwarded-allow-ips` the one the
named proxies give in `X-Forwarded-For` (uvicorn reads it). `ApiLoginMiddleware` also guards the API's
documentation (`/docs`, `/redoc`, `/openapi.json`). `check_basic_auth` is the API's HTTP Basic check, used by its
routes and by `ApiLoginMiddleware`, which guards every path under `/sdapi/` and `/easel/` whoever mounted it. `launch_warnings` is the start-up policy: a public link
(`--share`) without logins refuses to start unless `--share-insecure` says so; `--listen` without logins starts
with a warning. `resolve_inside` turns a user-supplied name into a path only when it stays inside its folder,
`resolve_in_roots` a user-supplied path only when it lies inside one of several allowed folders (one answer for
"outside" and "missing", so it reveals nothing beyond them), and `served_paths` says which folders Gradio may send
files from (outputs) and which never (models, settings).
Nothing here imports torch, diffusers or Gradio.

Over 500 lines on purpose: the login checks, the throttle and the path confinement are read together when
the threat model changes, and each part is short.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Sequence

if TYPE_CHECKING:
    from webui.settings import Settings

log = logging.getLogger(__name__)

Login = tuple[str, str]


class InsecureLaunchError(RuntimeError):
    """The flags would publish Easel without a login; the message says why and what to add."""


# Logins ---------------------------------------------------------------------------------------------------
def parse_logins(text: str, source: str) -> list[Login]:
    """`user:pass` items separated by commas or new lines. Errors name the source and the item's number, never
    its text (it may hold a password)."""
    logins: list[Login] = []
    items = [item.strip() for line in text.splitlines() for item in line.split(",")]
    for number, item in enumerate((i for i in items if i), 1):
        user, sep, password = item.partition(":")
        if not sep:
            raise ValueError(f"{source}: login {number} is not user:password (no ':' in it)")
        if not user.strip() or not password:
            raise ValueError(f"{source}: login {number} has an empty user name or password")
        logins.append((user.strip(), password))
    return logins


def read_login_file(path: Path) -> list[Login]:
    """Logins from a `--gradio-auth-path` file: `user:pass` items, comma- or line-separated; `#` starts a comment
    line."""
    source = f"--gradio-auth-path {path}"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"{source}: cannot read the file ({exc.strerror or type(exc).__name__})") from None
    except UnicodeDecodeError:
        raise ValueError(f"{source}: the file is not UTF-8 text") from None
    text = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    logins = parse_logins(text, source)
    if not logins:
        raise ValueError(f"{source}: the file holds no user:password login")
    return logins


def ui_logins(gradio_auth: str | None, gradio_auth_path: Path | None) -> list[Login]:
    """The logins of `--gradio-auth` followed by those of `--gradio-auth-path`."""
    logins = parse_logins(gradio_auth, "--gradio-auth") if gradio_auth else []
    if gradio_auth_path is not None:
        logins += read_login_file(gradio_auth_path)
    return logins


def api_logins(api_auth: str | None, ui: list[Login]) -> list[Login]:
    """`--api-auth` when given, else the UI's logins."""
    return parse_logins(api_auth, "--api-auth") if api_auth else list(ui)


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


def check_password(user: str, password: str, logins: list[Login]) -> bool:
    """True when (user, password) is one of `logins`. Every pair is compared, each in constant time."""
    user_digest, password_digest = _digest(user), _digest(password)
    ok = False
    for known_user, known_password in logins:
        same_user = hmac.compare_digest(user_digest, _digest(known_user))
        same_password = hmac.compare_digest(password_digest, _digest(known_password))
        ok |= same_user & same_password
    return ok


# Slowing down guessers --------------------------------------------------------------------------------------
@dataclass
class _Failures:
    count: int = 0
    last: float = 0.0
    blocked_until: float = 0.0


class _FailureTable:
    """Failures per key with a doubling wait after `free` of them; bounded, oldest forgotten first."""

    def __init__(self, free: int, first_delay: float, max_delay: float, forget_after: float, size: int) -> None:
        self.free, self.first_delay, self.max_delay = free, first_delay, max_delay
        self.forget_after, self.size = forget_after, size
        self.records: OrderedDict[Any, _Failures] = OrderedDict()

    def current(self, key: Any, now: float) -> _Failures | None:
        record = self.records.get(key)
        if record is not None and now - record.last > self.forget_after:
            del self.records[key]
            return None
        return record

    def wait(self, key: Any, now: float) -> float:
        record = self.current(key, now)
        return max(0.0, record.blocked_until - now) if record is not None else 0.0

    def fail(self, key: Any, now: float) -> _Failures:
        record = self.current(key, now) or _Failures()
        record.count += 1
        record.last = now
        over = record.count - self.free
        record.blocked_until = now + (min(self.max_delay, self.first_delay * 2 ** (over - 1)) if over > 0 else 0.0)
        self.records[key] = record
        self.records.move_to_end(key)
        while len(self.records) > self.size:
            self.records.popitem(last=False)
        return record


class LoginThrottle:
    """Failed logins, counted per (client address, user name) and per user name over every address.

    After `free_failures` failures of one user name from one address, that address must wait `first_delay`
    seconds before its next try for that name, doubling with each further failure up to `max_delay`. After
    `user_free_failures` failures of one user name from all addresses together, every address that has itself
    failed for that name waits the same way. An address that has not failed for a name is never made to wait
    for it, so someone guessing (from one address or many) cannot lock the right person out; another user at the
    guesser's address (the same office proxy) is not slowed down either. A success clears its (address, name)
    record; `forget_after` seconds without failures clear any record. Thread-safe; at most `max_addresses`
    records of each kind are kept. The user name defaults to "": calls without one count per address."""

    def __init__(self, free_failures: int = 5, first_delay: float = 1.0, max_delay: float = 60.0,
                 forget_after: float = 900.0, max_addresses: int = 10_000,
                 clock: Callable[[], float] = time.monotonic, user_free_failures: int = 20) -> None:
        self.clock = clock
        self.pairs = _FailureTable(free_failures, first_delay, max_delay, forget_after, max_addresses)
        self.users = _FailureTable(user_free_failures, first_delay, max_delay, forget_after, max_addresses)
        self._lock = threading.Lock()

    def retry_after(self, address: str, user: str = "") -> float:
        """Seconds this address must still wait before a login for `user` is even checked (0: it may try now)."""
        with self._lock:
            now = self.clock()
            if self.pairs.current((address, user), now) is None:
                return 0.0  # it has not failed for this name: never refused
            return max(self.pairs.wait((address, user), now), self.users.wait(user, now))

    def failed(self, address: str, user: str = "") -> float:
        """Record a failed login; return how long the address must now wait before trying this name again."""
        with self._lock:
            now = self.clock()
            pair = self.pairs.fail((address, user), now)
            everywhere = self.users.fail(user, now)
            delay = max(0.0, pair.blocked_until - now, everywhere.blocked_until - now)
        if delay:
            log.warning("%d failed logins from %s (%d for this user name from all addresses); it must wait %.0f s "
                        "before trying this name again", pair.count, address, everywhere.count, delay)
        return delay

    def succeeded(self, address: str, user: str = "") -> None:
        with self._lock:
            self.pairs.records.pop((address, user), None)

    def forget(self) -> None:
        """Clear every record (an administrator's reset, and tests)."""
        with self._lock:
            self.pairs.records.clear()
            self.users.records.clear()


def too_many_failures_message(wait: float) -> str:
    return f"too many failed logins for this user name from this address; try again in {max(1, round(wait))} s"


Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
LOGIN_FORM_LIMIT = 64 * 1024  # a login form is a few hundred bytes


async def send_json(send: Send, status: int, content: dict[str, Any],
                    headers: dict[str, str] | None = None) -> None:
    """A whole JSON response, sent from ASGI middleware."""
    body = json.dumps(content).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *((k.lower().encode("latin-1"), v.encode("latin-1"))
                              for k, v in (headers or {}).items())]})
    await send({"type": "http.response.body", "body": body})


async def read_request_body(receive: Receive, limit: int) -> bytes | None:
    """The whole request body, or None once it passes `limit` bytes."""
    chunks: list[bytes] = []
    total = 0
    while True:
        message = await receive()
        if message.get("type") != "http.request":
            break
        chunk = message.get("body", b"")
        total += len(chunk)
        if total > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def replaying(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands the app `body` (already read) first, then whatever the client sends next."""
    sent = False

    async def again() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return again


async def form_user_name(scope: Scope, body: bytes) -> str:
    """The `username` field of a login form (URL-encoded or multipart), "" when there is none."""
    from starlette.requests import Request  # Starlette ships with FastAPI; its form parser reads both encodings

    async def once() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(scope, once).form()
        value = form.get("username")
        await form.close()
    except Exception:  # noqa: BLE001 - a malformed form is Gradio's to refuse; it just has no name to count
        return ""
    return value.strip() if isinstance(value, str) else ""


class LoginThrottleMiddleware:
    """ASGI middleware for Gradio's login form (`POST /login`): an address that failed too often for the user name
    in the form gets a 429 without the credentials being checked; Gradio's answer (200 or 400) is recorded as a
    success or a failure for that (address, name)."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], throttle: LoginThrottle,
                 paths: tuple[str, ...] = ("/login", "/login/")) -> None:
        self.app = app
        self.throttle = throttle
        self.paths = paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "http" or scope.get("method") != "POST" or scope.get("path") not in self.paths:
            await self.app(scope, receive, send)
            return
        body = await read_request_body(receive, LOGIN_FORM_LIMIT)
        if body is None:
            await send_json(send, 413, {"detail": f"a login form is at most {LOGIN_FORM_LIMIT} bytes"})
            return
        user = await form_user_name(scope, body)
        client = scope.get("client")
        address = client[0] if client else "unknown"
        wait = self.throttle.retry_after(address, user)
        if wait > 0:
            await send_json(send, 429, {"detail": too_many_failures_message(wait)},
                            {"Retry-After": str(max(1, round(wait)))})
            return
        status: list[int] = []

        async def watch(message: dict[str, Any]) -> None:
            if message.get("type") == "http.response.start":
                status.append(int(message.get("status", 0)))
            await send(message)

        await self.app(scope, replaying(body, receive), watch)
        if status and status[0] == 400:
            self.throttle.failed(address, user)
        elif status and status[0] < 300:
            self.throttle.succeeded(address, user)


# HTTP Basic for the API --------------------------------------------------------------------------------------
API_PREFIXES = ("/sdapi/", "/easel/")
DOCS_PATHS = ("/docs", "/docs/", "/docs/oauth2-redirect", "/redoc", "/redoc/", "/openapi.json")
LOGIN_CHECKED = "easel.login_checked"  # set in the ASGI scope once a request's login was accepted


@dataclass(frozen=True)
class LoginRefusal:
    """Why a request's login was refused: the HTTP status, a message without any credential, extra headers."""

    status: int
    kind: str
    message: str
    headers: dict[str, str]


def check_basic_auth(header: str, address: str, logins: list[Login],
                     throttle: LoginThrottle | None = None) -> LoginRefusal | None:
    """Check an `Authorization` header against `logins`; None when it is accepted (or there are no logins).

    An address that failed too often for the user name in the header is refused (429) before the password is
    looked at; a missing header is a plain 401 and is not counted as a guess; a malformed header or a wrong
    password is counted for that (address, name)."""
    if not logins:
        return None
    challenge = {"WWW-Authenticate": 'Basic realm="Easel API"'}
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic" or not encoded.strip():
        return LoginRefusal(401, "Unauthorized", "this API needs a login (HTTP Basic: the --api-auth login, else a "
                                                 "--gradio-auth one)", challenge)
    try:
        user, sep, password = base64.b64decode(encoded.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        user, sep, password = "", "", ""
    wait = throttle.retry_after(address, user) if throttle is not None else 0.0
    if wait > 0:
        return LoginRefusal(429, "TooManyRequests", too_many_failures_message(wait),
                            {"Retry-After": str(max(1, round(wait)))})
    if not sep or not check_password(user, password, logins):
        if throttle is not None:
            throttle.failed(address, user)
        message = "malformed Authorization header" if not sep else "wrong user name or password"
        return LoginRefusal(401, "Unauthorized", message, challenge)
    if throttle is not None:
        throttle.succeeded(address, user)
    return None


class ApiLoginMiddleware:
    """ASGI middleware asking for HTTP Basic on every path under `prefixes` (`/sdapi/`, `/easel/`), whichever
    router added the route, so a route mounted without Easel's route class is protected all the same, and on the
    API's documentation (`/docs`, `/redoc`, `/openapi.json`)."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], logins: list[Login],
                 throttle: LoginThrottle | None = None, prefixes: tuple[str, ...] = API_PREFIXES,
                 paths: tuple[str, ...] = DOCS_PATHS) -> None:
        self.app = app
        self.logins = list(logins)
        self.throttle = throttle
        self.prefixes = prefixes
        self.paths = paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope.get("path", "")).lower()
        if scope.get("type") != "http" or not self.logins or not (path.startswith(self.prefixes)
                                                                  or path in self.paths):
            await self.app(scope, receive, send)
            return
        headers = {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope.get("headers", [])}
        client = scope.get("client")
        refusal = check_basic_auth(headers.get("authorization", ""), client[0] if client else "unknown",
                                   self.logins, self.throttle)
        if refusal is None:
            scope[LOGIN_CHECKED] = True
            await self.app(scope, receive, send)
            return
        await send_json(send, refusal.status, {"error": refusal.kind, "detail": refusal.message, "field": None},
                        refusal.headers)


def login_throttle(holder: dict[str, Any]) -> LoginThrottle:
    """The one throttle of a running Easel (kept in `easel.extras`), shared by the UI login and the API."""
    throttle = holder.get("login_throttle")
    if not isinstance(throttle, LoginThrottle):
        throttle = holder["login_throttle"] = LoginThrottle()
    return throttle


# Launch policy ------------------------------------------------------------------------------------------------
def launch_warnings(settings: "Settings") -> list[str]:
    """Check the flags before anything starts listening: raise InsecureLaunchError when `--share` would publish
    a part of Easel without logins (unless `--share-insecure`), and return the warnings to log."""
    serves_ui = not settings.nowebui
    serves_api = settings.api or settings.nowebui
    ui, api = settings.auth_pairs(), settings.api_auth_pairs()
    unprotected = [part for part, served, logins in (("the UI", serves_ui, ui), ("the API", serves_api, api))
                   if served and not logins]
    parts = " and ".join(unprotected)
    warnings: list[str] = []
    if settings.share and settings.nowebui:
        warnings.append("--share has no effect with --nowebui: the public link is made by the Gradio UI")
    elif settings.share and unprotected:
        if not settings.share_insecure:
            raise InsecureLaunchError(
                f"--share publishes Easel on a public link that anyone who learns it can open, and {parts} would "
                "have no login: they could use this machine's GPU and see everything it generates. Add "
                "--gradio-auth USER:PASSWORD (or --gradio-auth-path FILE), or pass --share-insecure to publish it "
                "without a login anyway.")
        warnings.append(f"--share-insecure: {parts} is published on a public link WITHOUT a login; anyone who "
                        "learns the link can use this machine")
    if settings.listen and unprotected:
        warnings.append(f"--listen: Easel accepts connections from other machines and {parts} has no login; add "
                        "--gradio-auth USER:PASSWORD (or --gradio-auth-path FILE) to protect it")
    if settings.allow_hub_downloads and (settings.listen or settings.share):
        warnings.append("--allow-hub-downloads: whoever can reach Easel can make it download any Hugging Face "
                        "repository a request names (its weights are read as safetensors only)")
    return warnings


# Confinement --------------------------------------------------------------------------------------------------
def resolve_inside(folder: Path, name: str, what: str = "name", follow_symlinks: bool = True) -> Path:
    """The path `name` names inside `folder`, or ValueError (starting with `what`) when it would leave it:
    absolute paths, `..` steps, NUL bytes, and, with `follow_symlinks`, links pointing out of the folder."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{what}: a name is required")
    if "\x00" in name:
        raise ValueError(f"{what}: the name contains a NUL byte")
    text = name.replace("\\", "/")
    candidate = Path(text)
    if candidate.is_absolute() or text.startswith("/") or (len(text) > 1 and text[1] == ":"):
        raise ValueError(f"{what}: {name!r} must be a name inside {Path(folder).name}, not an absolute path")
    root = Path(folder).resolve() if follow_symlinks else Path(os.path.abspath(folder))
    joined = root / candidate
    target = joined.resolve() if follow_symlinks else Path(os.path.normpath(joined))
    if target != root and root not in target.parents:
        raise ValueError(f"{what}: {name!r} points outside {Path(folder).name}")
    return target


class PathRefused(ValueError):
    """A user-supplied path that does not name something inside its allowed folders; `field` names the setting
    and `message` says where it must be (never whether the path exists outside them)."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.message = message


def folder_label(folder: Path, base: Path | None) -> str:
    """How a message names an allowed folder: relative to `base` (the data folder) when inside it, else by its
    own name only (a message never tells where on disk a folder outside the data folder is)."""
    folder = Path(folder)
    if base is not None:
        try:
            return folder.resolve().relative_to(Path(base).resolve()).as_posix() + "/"
        except ValueError:
            pass
    return folder.name + "/"


def resolve_in_roots(roots: Sequence[Path], value: object, field_name: str, *, base: Path | None = None,
                     kind: str = "path", folder: bool = False, where: str | None = None) -> Path:
    """The real path `value` names when it lies inside one of `roots` once links are followed, else PathRefused
    ("<field>: must be a <kind> inside <where>, got <value>").

    A relative value is taken from `base` (default: the first root); an absolute one must point inside a root
    already. A leading `~`, any `..` step, a drive letter, a NUL byte and a link leading out of the roots are
    refused, and with `folder=True` so is a value that is not an existing folder, all with the same message: a
    path outside the roots gets the same answer whether it exists or not."""
    resolved_roots = [Path(root).resolve() for root in roots]
    if where is None:
        where = " or ".join(dict.fromkeys(folder_label(root, base) for root in roots))
    shown = repr(value[:200] + "..." if len(value) > 200 else value) if isinstance(value, str) else repr(value)[:200]
    refused = PathRefused(field_name, f"must be a {kind} inside {where}, got {shown}")
    if not isinstance(value, str) or not value.strip() or "\x00" in value or not resolved_roots:
        raise refused
    text = value.strip().replace("\\", "/")
    if text.startswith("~") or ".." in text.split("/") or (len(text) > 1 and text[1] == ":"):
        raise refused
    candidate = Path(text)
    if not candidate.is_absolute():
        candidate = Path(base if base is not None else roots[0]) / candidate
    try:
        target = candidate.resolve()
        inside = any(target == root or root in target.parents for root in resolved_roots)
        if not inside or (folder and not target.is_dir()):
            raise refused
    except (OSError, RuntimeError):  # a link loop, a name too long
        raise refused from None
    return target


def served_paths(settings: "Settings") -> tuple[list[str], list[str]]:
    """(allowed, blocked) paths for Gradio's file routes: generated images may be sent to the browser; model
    folders, the settings file, the login file and the hash cache never, not even through a link in outputs."""
    allowed = [str(settings.outputs_dir.resolve())]
    folders = [settings.models_dir, *settings.checkpoint_dirs(), *settings.diffusers_dirs(), *settings.all_vae_dirs(),
               *settings.all_lora_dirs(), *settings.builtin_dirs(), *getattr(settings, "controlnet_dirs", []),
               *getattr(settings, "esrgan_dirs", []), *getattr(settings, "embedding_dirs", []),
               settings.hash_cache_path.parent]
    files = [settings.config_path, settings.config_path.with_name(settings.config_path.name + ".bak")]
    if settings.gradio_auth_path is not None:
        files.append(settings.gradio_auth_path)
    blocked: list[str] = []
    for path in [*folders, *files]:
        resolved = str(Path(path).resolve())
        if resolved not in blocked and resolved not in allowed:
            blocked.append(resolved)
    return allowed, blocked
