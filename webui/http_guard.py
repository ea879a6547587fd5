"""Which hosts and which web pages may talk to Easel: the Host check, the Origin check, CORS and cookies.

`HttpGuard` is ASGI middleware that sees every request before anything else in Easel (around Gradio's own
layers too, see `webui.app.gradio_app`):

1. **Host.** A request whose `Host` header names something Easel does not answer to gets a 400. This stops DNS
   rebinding: a web page whose own domain is re-pointed at 127.0.0.1, so that the browser takes Easel for that
   page's site. Accepted: `localhost`, any IP address (a page cannot be rebound to an address), the machine's
   name with `--listen`, `*.gradio.live` with `--share`, and the names given with `--allowed-hosts`.
2. **Origin.** A request carrying an `Origin` that is neither Easel's own (same host and port as the `Host`
   header, or a name given with `--allowed-hosts`, for a proxy that changes the `Host`) nor allowed with
   `--cors-allow-origins` / `--cors-allow-origins-regex` gets a 403, whatever its method and content type: a
   page on another site can make the browser send a form or a `text/plain` POST without asking first, and this
   refuses it. `Origin: null` (sandboxed frames, files) is never accepted. A POST, PUT, PATCH or DELETE without
   an `Origin` is checked by its `Referer` the same way. Requests with neither header (scripts, API clients,
   `curl`) are not cross-site requests from a browser and pass.
3. **CORS.** Only the allowed origins get `Access-Control-Allow-*` headers (with credentials); those headers are
   removed from every other answer, whatever an inner layer added, so no other origin, and never `null`, can
   read an answer.
4. **Cookies.** A `Set-Cookie` with `SameSite=None` (Gradio's login cookie; Gradio offers no setting for it) is
   sent with `SameSite=Lax`, so the browser leaves it off requests that other sites start.

Which client sent a request behind a reverse proxy is uvicorn's business (`X-Forwarded-For` from the addresses
in `--forwarded-allow-ips` only, see `forwarded_allow_ips`). `check_action_token` guards the actions that run
code (installing extensions, restarting) with a per-process token the page carries. Nothing here imports
Gradio, torch or diffusers.
"""
from __future__ import annotations

import hmac
import ipaddress
import re
import secrets
import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, Callable
from urllib.parse import urlsplit

from webui.security import Receive, Scope, Send, send_json

if TYPE_CHECKING:
    from webui.settings import Settings

LOCAL_NAMES = ("localhost",)
SHARE_SUFFIX = ".gradio.live"
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
CORS_METHODS = "DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT"
DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


# Flags ------------------------------------------------------------------------------------------------------
def split_list(text: str | None) -> list[str]:
    return [item.strip() for item in (text or "").split(",") if item.strip()]


_HOST_NAME = re.compile(r"^(\*\.)?[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*$")


def parse_allowed_hosts(text: str | None) -> list[str]:
    """`--allowed-hosts`: host names (`easel.example.com`), `*.example.com` for its subdomains, or `*` for any."""
    hosts = []
    for item in split_list(text):
        name = item.lower().rstrip(".")
        if name != "*" and not _HOST_NAME.match(name) and not _is_ip(name.strip("[]")):
            raise ValueError(f"--allowed-hosts: {item!r} is not a host name (write easel.example.com, "
                             "*.example.com or *; no scheme, port or path)")
        hosts.append(name)
    return hosts


def normalize_origin(text: str) -> str | None:
    """`scheme://host[:port]` in lower case without a default port or a trailing slash; None when `text` is not
    an origin."""
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/") \
            or parts.query or parts.fragment or parts.username or parts.password:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    shown_port = "" if port is None or port == DEFAULT_PORTS[parts.scheme] else f":{port}"
    return f"{parts.scheme}://{host.lower()}{shown_port}"


def parse_cors_origins(text: str | None) -> list[str]:
    """`--cors-allow-origins`: exact origins such as `https://app.example.com` or `http://localhost:3000`."""
    origins = []
    for item in split_list(text):
        if item.lower() == "null" or item == "*":
            raise ValueError(f"--cors-allow-origins: {item!r} would let any page (or a sandboxed one) use this Easel "
                             "with your login; list the origins, such as https://app.example.com")
        origin = normalize_origin(item)
        if origin is None:
            raise ValueError(f"--cors-allow-origins: {item!r} is not an origin (scheme://host[:port], for example "
                             "http://localhost:3000; no path)")
        origins.append(origin)
    return origins


def parse_cors_regex(text: str | None) -> re.Pattern[str] | None:
    """`--cors-allow-origins-regex`: a regular expression the whole origin must match."""
    if not text:
        return None
    try:
        return re.compile(text)
    except re.error as exc:
        raise ValueError(f"--cors-allow-origins-regex: not a regular expression ({exc})") from None


def parse_forwarded_allow_ips(text: str | None) -> list[str]:
    """`--forwarded-allow-ips`: the proxies (addresses or networks) whose `X-Forwarded-For` is believed."""
    items = []
    for item in split_list(text):
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ValueError(f"--forwarded-allow-ips: {item!r} is not an IP address or network (such as 127.0.0.1 "
                             "or 10.0.0.0/8)") from None
        items.append(item)
    return items


def forwarded_allow_ips(settings: "Settings") -> str:
    """uvicorn's `forwarded_allow_ips` for these settings: the flag's proxies, or "" (believe no one)."""
    return ",".join(settings.forwarded_allow_ips)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


# The policy -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GuardPolicy:
    """What `HttpGuard` accepts, built from the flags by `policy_from_settings`."""

    allowed_hosts: tuple[str, ...] = ()
    machine_names: tuple[str, ...] = ()
    share: bool = False
    cors_origins: tuple[str, ...] = ()
    cors_regex: re.Pattern[str] | None = field(default=None, compare=False)

    def host_allowed(self, hostname: str) -> bool:
        name = hostname.lower().rstrip(".")
        if name in LOCAL_NAMES or _is_ip(name) or name in self.machine_names:
            return True
        if self.share and name.endswith(SHARE_SUFFIX):
            return True
        for allowed in self.allowed_hosts:
            if allowed == "*" or name == allowed or (allowed.startswith("*.") and name.endswith(allowed[1:])):
                return True
        return False

    def origin_allowed(self, origin: str) -> bool:
        """True for an origin in the allow-list (never `null`)."""
        if origin.strip().lower() == "null":
            return False
        normal = normalize_origin(origin)
        if normal is not None and normal in self.cors_origins:
            return True
        return bool(self.cors_regex is not None and self.cors_regex.fullmatch(origin.strip()))

    def own_name(self, url: str) -> bool:
        """True when `url` (an Origin or a Referer) is on a name given with `--allowed-hosts` (not `*`): Easel's own
        page behind a reverse proxy that sends Easel another `Host`."""
        try:
            name = (urlsplit(url.strip()).hostname or "").lower().rstrip(".")
        except ValueError:
            return False
        return bool(name) and any(name == allowed or (allowed.startswith("*.") and name.endswith(allowed[1:]))
                                  for allowed in self.allowed_hosts if allowed != "*")


def policy_from_settings(settings: "Settings") -> GuardPolicy:
    machine: tuple[str, ...] = ()
    if settings.listen:
        name = socket.gethostname().lower().rstrip(".")
        machine = (name, f"{name}.local") if name else ()
    return GuardPolicy(allowed_hosts=tuple(settings.allowed_hosts), machine_names=machine,
                       share=settings.share,
                       cors_origins=tuple(normalize_origin(o) or o for o in settings.cors_allow_origins),
                       cors_regex=parse_cors_regex(settings.cors_allow_origins_regex))


def split_host(value: str) -> tuple[str, int | None] | None:
    """(host name, port) of a Host header value; None when it is malformed."""
    try:
        parts = urlsplit(f"//{value.strip()}")
        return (parts.hostname or "", parts.port) if parts.hostname else None
    except ValueError:
        return None


def same_origin(url: str, host: tuple[str, int | None]) -> bool:
    """True when `url` (an Origin or a Referer) is on the host and port the request was sent to. A Host without a
    port matches http and https on their default ports (a TLS proxy in front serves https)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False
    if parts.hostname.lower().rstrip(".") != host[0].lower().rstrip("."):
        return False
    effective = port if port is not None else DEFAULT_PORTS[parts.scheme]
    return effective == host[1] if host[1] is not None else effective in (80, 443)


# The middleware ---------------------------------------------------------------------------------------------
App = Callable[[Scope, Receive, Send], Awaitable[None]]


class HttpGuard:
    """The Host check, the Origin/Referer check, CORS for the allowed origins only, and `SameSite=Lax` cookies
    (see the module's description)."""

    def __init__(self, app: App, policy: GuardPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope.get("type")
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope.get("headers", [])}
        problem = self.refusal(scope, headers)
        if problem is not None:
            status, error, detail = problem
            if kind == "websocket":
                await send({"type": "websocket.close", "code": 1008, "reason": detail[:120]})
            else:
                await send_json(send, status, {"error": error, "detail": detail, "field": None})
            return
        origin = headers.get("origin")
        allowed = origin is not None and self.policy.origin_allowed(origin)
        if kind == "http" and scope.get("method") == "OPTIONS" and origin is not None \
                and "access-control-request-method" in headers:
            await self.preflight(send, origin, headers)  # only allowed or same-origin ones get this far
            return
        await self.app(scope, receive, self.rewriting(send, origin if allowed else None))

    def refusal(self, scope: Scope, headers: dict[str, str]) -> tuple[int, str, str] | None:
        """(status, error, message) when the request is refused, else None."""
        raw_host = headers.get("host")
        host = split_host(raw_host) if raw_host is not None else None
        if raw_host is not None and (host is None or not self.policy.host_allowed(host[0])):
            shown = raw_host[:100]
            return 400, "BadHost", (f"this Easel does not answer to the host name {shown!r} (it answers to localhost, "
                                    "IP addresses and the names given with --allowed-hosts); behind a reverse proxy "
                                    "or under another name, start it with --allowed-hosts NAME")
        origin = headers.get("origin")
        if origin is not None:
            if (host is None or not same_origin(origin, host)) and not self.policy.own_name(origin) \
                    and not self.policy.origin_allowed(origin):
                return 403, "ForeignOrigin", (f"requests from the web page at {origin[:100]!r} are refused: only "
                                              "this Easel's own page and the origins given with "
                                              "--cors-allow-origins may send them")
            return None
        referer = headers.get("referer")
        if scope.get("method") in STATE_CHANGING and referer:
            try:
                parts = urlsplit(referer)
                site = f"{parts.scheme}://{parts.netloc}"
            except ValueError:
                site = referer
            if (host is None or not same_origin(referer, host)) and not self.policy.own_name(site) \
                    and not self.policy.origin_allowed(site):
                return 403, "ForeignOrigin", (f"requests from the web page at {site[:100]!r} are refused: only this "
                                              "Easel's own page and the origins given with --cors-allow-origins "
                                              "may send them")
        return None

    async def preflight(self, send: Send, origin: str, headers: dict[str, str]) -> None:
        answer = {"Access-Control-Allow-Origin": origin, "Access-Control-Allow-Credentials": "true",
                  "Access-Control-Allow-Methods": CORS_METHODS, "Access-Control-Max-Age": "600", "Vary": "Origin"}
        requested = headers.get("access-control-request-headers")
        if requested:
            answer["Access-Control-Allow-Headers"] = requested
        body = b"OK"
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                (b"content-length", str(len(body)).encode()),
                                *((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in answer.items())]})
        await send({"type": "http.response.body", "body": body})

    @staticmethod
    def rewriting(send: Send, allowed_origin: str | None) -> Send:
        """`send`, with the inner layers' CORS headers replaced by Easel's and `SameSite=None` cookies made Lax."""

        async def rewrite(message: dict[str, Any]) -> None:
            if message.get("type") == "http.response.start":
                kept = [(key, value) for key, value in message.get("headers", [])
                        if not key.lower().startswith(b"access-control-")]
                kept = [(key, lax_cookie(value) if key.lower() == b"set-cookie" else value) for key, value in kept]
                if allowed_origin is not None:
                    kept += [(b"access-control-allow-origin", allowed_origin.encode("latin-1")),
                             (b"access-control-allow-credentials", b"true"), (b"vary", b"Origin")]
                message = {**message, "headers": kept}
            await send(message)

        return rewrite


_SAMESITE_NONE = re.compile(rb";\s*samesite\s*=\s*none\b", re.IGNORECASE)


def lax_cookie(value: bytes) -> bytes:
    """A Set-Cookie value with `SameSite=None` changed to `SameSite=Lax`."""
    return _SAMESITE_NONE.sub(b"; SameSite=Lax", value)


# Actions that run code ----------------------------------------------------------------------------------------
ACTION_TOKEN_KEY = "action_token"


def action_token(holder: dict[str, Any]) -> str:
    """This process's token for actions that run code (kept in `easel.extras`; made on first use)."""
    token = holder.get(ACTION_TOKEN_KEY)
    if not isinstance(token, str) or len(token) < 32:
        token = holder[ACTION_TOKEN_KEY] = secrets.token_urlsafe(32)
    return token


def check_action_token(holder: dict[str, Any], given: Any) -> None:
    """ValueError unless `given` is this process's action token (compared in constant time)."""
    expected = action_token(holder).encode()
    offered = given.encode("utf-8", "surrogatepass") if isinstance(given, str) else b""
    if not hmac.compare_digest(expected, offered):
        raise ValueError("token: this action must come from Easel's own page (the request carried no valid page "
                         "token); reload the page and try again")
