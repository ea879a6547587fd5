"""HTTP-level protection on real servers: no secret in a log line, the Host check (DNS rebinding), the Origin check
and the CORS allow-list, the page token for installing extensions and restarting, the login throttle per address
and user name (believing `X-Forwarded-For` only from `--forwarded-allow-ips`), the API docs behind the login, the
session cookie sent `SameSite=Lax`, and no absolute path in any answer."""
from __future__ import annotations

import functools
import logging
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.security.conftest import wait_until_up
from webui.redact import redact_argv, redact_mapping
from webui.settings import Settings, build_parser, settings_from_args

SECRET = "Alice-s3cret!"
BOB = "bob-Pa55"
ALLOWED = "http://app.example:3000"
TRUSTED_REGEX = r"https://[a-z]+\.trusted\.example"
FOREIGN = ("http://evil.example", "null", "http://localhost:1", "https://tools.trusted.example.evil.example",
           "http://app.example:3001", "file://")


def cors_headers(response: httpx.Response) -> list[str]:
    return [key for key in response.headers if key.lower().startswith("access-control-")]


# Helpers, no server ---------------------------------------------------------------------------------------------
def test_secrets_are_masked_in_command_lines_and_settings_dumps() -> None:
    argv = [sys.executable, "launch.py", "--gradio-auth", f"alice:{SECRET}", f"--api-auth=robot:{SECRET}",
            "--gradio-auth-path", "/srv/logins.txt", "--hf-token", SECRET, "--listen",
            f"https://bob:{SECRET}@git.example/x.git"]
    shown = redact_argv(argv)
    assert SECRET not in " ".join(shown)
    assert shown[2:4] == ["--gradio-auth", "***"] and shown[4] == "--api-auth=***"
    assert shown[5:7] == ["--gradio-auth-path", "/srv/logins.txt"]  # where the logins are kept is no secret
    assert shown[7:10] == ["--hf-token", "***", "--listen"] and shown[10] == "https://bob:***@git.example/x.git"
    settings = Settings(gradio_auth=f"alice:{SECRET}", api_auth=f"robot:{SECRET}")
    assert SECRET not in repr(settings) and SECRET not in str(settings)
    assert "gradio_auth='***'" in repr(settings) and "api_auth='***'" in repr(settings)
    assert redact_mapping({"gradio_auth": None, "hf_token": "abc", "port": 7860, "gradio_auth_path": "/srv/x"}) == {
        "gradio_auth": None, "hf_token": "***", "port": 7860, "gradio_auth_path": "/srv/x"}


def test_host_origin_and_proxy_flags_are_checked_at_start(tmp_path: Path) -> None:
    def parse(*flags: str) -> Settings:
        return settings_from_args(build_parser().parse_args([*flags, "--data-dir", str(tmp_path)]))

    settings = parse("--allowed-hosts", "Easel.Example.com,*.lan.example", "--cors-allow-origins",
                     "http://App.example:3000/,https://x.example:443", "--cors-allow-origins-regex", TRUSTED_REGEX,
                     "--forwarded-allow-ips", "127.0.0.1,10.0.0.0/8")
    assert settings.allowed_hosts == ["easel.example.com", "*.lan.example"]
    assert settings.cors_allow_origins == ["http://app.example:3000", "https://x.example"]
    assert settings.cors_allow_origins_regex == TRUSTED_REGEX
    assert settings.forwarded_allow_ips == ["127.0.0.1", "10.0.0.0/8"]
    assert parse().allowed_hosts == [] and parse().cors_allow_origins == [] and parse().forwarded_allow_ips == []
    for flags, words in ((("--cors-allow-origins", "null"), "--cors-allow-origins: 'null' would let any page"),
                         (("--cors-allow-origins", "*"), "--cors-allow-origins: '\\*' would let any page"),
                         (("--cors-allow-origins", "app.example"), "'app.example' is not an origin"),
                         (("--cors-allow-origins", "http://app.example/path"), "is not an origin"),
                         (("--cors-allow-origins-regex", "(unclosed"), "--cors-allow-origins-regex: not a regular"),
                         (("--forwarded-allow-ips", "proxy.lan"), "--forwarded-allow-ips: 'proxy.lan' is not an IP"),
                         (("--allowed-hosts", "http://x.example/"), "--allowed-hosts: 'http://x.example/' is not")):
        with pytest.raises(ValueError, match=words):
            parse(*flags)


# One server without logins (the local setting) --------------------------------------------------------------------
@pytest.fixture(scope="module")
def open_server(serve_module, tmp_path_factory) -> tuple[Any, str]:
    """The page and the API without logins, one allowed origin and a pattern, and folders outside the data folder."""
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    (elsewhere / "Lora").mkdir()
    (elsewhere / "ckpt").mkdir()
    easel, url = serve_module(api=True, cors_allow_origins=[ALLOWED], cors_allow_origins_regex=TRUSTED_REGEX,
                              lora_dirs=[elsewhere / "Lora"], ckpt_dirs=[elsewhere / "ckpt"])
    wait_until_up(url)
    return easel, url


def test_a_host_name_easel_does_not_answer_to_is_refused(open_server) -> None:
    """DNS rebinding: a page at evil.example re-pointed at 127.0.0.1 sends `Host: evil.example`."""
    easel, url = open_server
    port = url.rsplit(":", 1)[1]
    for host in ("evil.example", f"evil.example:{port}", f"127.0.0.1.nip.io:{port}", f"localhost.evil.example:{port}",
                 "a.gradio.live"):  # the share host only with --share
        for method, path in (("GET", "/"), ("GET", "/config"), ("GET", "/sdapi/v1/options"),
                             ("POST", "/sdapi/v1/interrupt"), ("POST", "/gradio_api/queue/join")):
            response = httpx.request(method, f"{url}{path}", headers={"Host": host}, timeout=10)
            assert response.status_code == 400, (host, path, response.status_code)
            assert response.json()["error"] == "BadHost" and "--allowed-hosts" in response.json()["detail"]
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", f"LOCALHOST:{port}", "127.0.0.1"):
        assert httpx.get(f"{url}/sdapi/v1/options", headers={"Host": host}, timeout=10).status_code == 200, host


def test_cors_headers_only_for_the_allowed_origins(open_server) -> None:
    easel, url = open_server
    options = f"{url}/sdapi/v1/options"
    for origin in (ALLOWED, "https://tools.trusted.example"):
        allowed = httpx.get(options, headers={"Origin": origin}, timeout=10)
        assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == origin
        assert allowed.headers["access-control-allow-credentials"] == "true" and "Origin" in allowed.headers["vary"]
        preflight = httpx.options(options, headers={"Origin": origin, "Access-Control-Request-Method": "POST",
                                                    "Access-Control-Request-Headers": "content-type"}, timeout=10)
        assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == origin
        assert "POST" in preflight.headers["access-control-allow-methods"]
        assert preflight.headers["access-control-allow-headers"] == "content-type"
    for origin in FOREIGN:
        for response in (httpx.get(options, headers={"Origin": origin}, timeout=10),
                         httpx.get(f"{url}/config", headers={"Origin": origin}, timeout=10),
                         httpx.options(options, headers={"Origin": origin, "Access-Control-Request-Method": "POST"},
                                       timeout=10)):
            assert response.status_code == 403, (origin, response.request.method, response.status_code)
            assert cors_headers(response) == [], (origin, response.headers)  # nothing reflected, no credentials
    same = httpx.get(options, headers={"Origin": url}, timeout=10)  # the page itself
    assert same.status_code == 200 and cors_headers(same) == []


def test_a_cross_site_post_is_refused_before_it_acts(open_server, monkeypatch) -> None:
    """`text/plain` POSTs without a body need no preflight: a page on any site could send them."""
    easel, url = open_server
    calls: list[Any] = []
    real = easel.engine.worker.interrupt
    monkeypatch.setattr(easel.engine.worker, "interrupt", lambda *a, **k: calls.append(a) or real(*a, **k))
    for headers in ({"Origin": "http://evil.example"}, {"Origin": "null"},
                    {"Referer": "http://evil.example/page.html"}):
        response = httpx.post(f"{url}/sdapi/v1/interrupt", headers={**headers, "Content-Type": "text/plain"},
                              timeout=10)
        assert response.status_code == 403 and response.json()["error"] == "ForeignOrigin", headers
    assert calls == []
    for headers in ({"Origin": url}, {"Referer": f"{url}/?tab=txt2img"}, {}):  # the page, and API clients
        assert httpx.post(f"{url}/sdapi/v1/interrupt", headers=headers, timeout=10).status_code == 200
    assert len(calls) == 3


def write_extension(root: Path) -> Path:
    from webui.extensions import API_VERSION

    folder = root / "greeter"
    folder.mkdir(parents=True)
    (folder / "extension.py").write_text("def setup(api):\n    api.add_tab('Greeter', lambda: None)\n")
    (folder / "extension.json").write_text(f'{{"name": "greeter", "version": "1", "api_version": {API_VERSION}}}')
    return folder


def page_token(config: dict[str, Any]) -> str:
    return next(c["props"]["value"] for c in config["components"]
                if c.get("props", {}).get("elem_id") == "extensions_token")


def test_installing_and_restarting_need_easels_page_and_its_token(open_server, tmp_path) -> None:
    from gradio_client import Client

    easel, url = open_server
    restarted = threading.Event()
    easel.extras["restart"] = restarted.set
    source = write_extension(tmp_path)
    target = easel.settings.data_dir / "extensions" / "greeter"
    config = httpx.get(f"{url}/config", timeout=30).json()
    token = page_token(config)
    assert token == easel.page_token() and len(token) >= 32
    install_id = next(d["id"] for d in config["dependencies"] if d.get("api_name") == "on_install")
    forged = {"data": [str(source), "", token], "fn_index": install_id, "session_hash": "forger",
              "event_data": None, "trigger_id": None}
    for path in ("/gradio_api/queue/join", "/gradio_api/call/on_install", "/gradio_api/run/on_install",
                 "/gradio_api/call/on_apply_restart", "/gradio_api/run/on_apply_restart"):
        plain = httpx.post(f"{url}{path}", headers={"Origin": "http://evil.example", "Content-Type": "text/plain"},
                           timeout=10)
        assert plain.status_code == 403, path
        with_token = httpx.post(f"{url}{path}", json=forged, headers={"Origin": "null"}, timeout=10)
        assert with_token.status_code == 403, path  # even a page that somehow knew the token
    client = Client(url, verbose=False, httpx_kwargs={"timeout": 120})
    for wrong in ("", "guess", token[:-1]):
        with pytest.raises(Exception, match="token: this action must come from Easel's own page"):
            client.predict(str(source), "", wrong, api_name="/on_install")
        with pytest.raises(Exception, match="token: this action must come from Easel's own page"):
            client.predict([], wrong, api_name="/on_apply_restart")
    assert not target.exists() and not restarted.is_set()

    client.predict(str(source), "", token, api_name="/on_install")  # the page's own request
    assert (target / "extension.py").is_file()
    client.predict(["greeter"], token, api_name="/on_apply_restart")
    assert restarted.wait(30)


def test_answers_carry_no_absolute_path(open_server, tiny_sd1_dir, tmp_path) -> None:
    from safetensors.torch import save_file
    import torch

    from tests.tiny_models import save_sd1_single_file

    easel, url = open_server
    settings = easel.settings
    good = save_sd1_single_file(tiny_sd1_dir, tmp_path / "good.safetensors").read_bytes()
    (settings.models_dir / "Stable-diffusion" / "truncated.safetensors").write_bytes(good[: len(good) // 2])
    save_file({"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight":
               torch.zeros(4, 768)}, str(settings.lora_dirs[0] / "far-style.safetensors"))
    (settings.models_dir / "embeddings").mkdir(parents=True, exist_ok=True)
    (settings.models_dir / "embeddings" / "bad-hands.pt").write_bytes(b"\0")
    easel.manager.refresh()
    easel.manager.refresh_embeddings()
    folders = [str(settings.data_dir), str(settings.data_dir.resolve()), str(settings.lora_dirs[0].parent),
               str(Path.home()), "/tmp"]

    def strings(value: Any) -> list[str]:
        if isinstance(value, str):
            return [value]
        if isinstance(value, dict):
            return [s for k, v in value.items() for s in (*strings(k), *strings(v))]
        if isinstance(value, list):
            return [s for item in value for s in strings(item)]
        return []

    def check(answer: Any, where: str) -> None:
        for text in strings(answer):
            assert not text.startswith("/"), (where, text)
            assert not any(folder in text for folder in folders), (where, text)

    answers = {path: httpx.get(f"{url}/sdapi/v1/{path}", timeout=30).json()
               for path in ("sd-models", "cmd-flags", "options", "loras", "sd-vae", "upscalers", "embeddings",
                            "extensions")}
    for path, answer in answers.items():
        check(answer, path)
    assert "tiny-sd1" in [m["filename"] for m in answers["sd-models"]]  # relative to its folder
    assert answers["loras"][0]["path"] == "far-style.safetensors"
    assert answers["cmd-flags"]["lora_dir"] == ["Lora"] and answers["cmd-flags"]["data_dir"] == "data"
    assert answers["options"]["outdir_txt2img_samples"] == "outputs/txt2img-images"
    assert "bad-hands" in answers["embeddings"]["skipped"]
    generated = httpx.post(f"{url}/sdapi/v1/txt2img", json={"prompt": "a path", "width": 64, "height": 64,
                                                            "steps": 1, "save_images": True}, timeout=120).json()
    check(generated["info"], "txt2img info")
    assert generated["info"].count("outputs/txt2img-images/") == 1
    refused = httpx.post(f"{url}/sdapi/v1/options", json={"sd_model_checkpoint": "truncated"}, timeout=60)
    assert refused.status_code == 422 and "truncated.safetensors" in refused.json()["detail"]
    check(refused.json(), "error")


# A server with logins -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def locked_server(serve_module) -> tuple[Any, str]:
    easel, url = serve_module(api=True, gradio_auth=f"alice:{SECRET},bob:{BOB}")
    wait_until_up(url, auth=("alice", SECRET))
    return easel, url


def stopped_clock(throttle: Any) -> Any:
    """Stop the throttle's clock (and clear it), so a wait it imposes cannot run out while a test looks at it; the
    returned function starts the clock again."""
    real = throttle.clock
    throttle.clock = lambda: 1000.0
    throttle.forget()

    def restore() -> None:
        throttle.clock = real
        throttle.forget()

    return restore


@pytest.fixture
def throttle(locked_server) -> Any:
    restore = stopped_clock(locked_server[0].extras["login_throttle"])
    yield locked_server[0].extras["login_throttle"]
    restore()


def from_address(address: str) -> httpx.Client:
    """A client whose connections come from another loopback address (the server sees a second machine)."""
    return httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=30)


def test_the_api_docs_need_the_login(locked_server) -> None:
    easel, url = locked_server
    for path in ("/docs", "/openapi.json", "/redoc"):
        response = httpx.get(f"{url}{path}", timeout=10)
        assert response.status_code == 401, path
        assert response.headers["www-authenticate"].startswith("Basic")
    assert httpx.get(f"{url}/docs", auth=("alice", SECRET), timeout=10).status_code == 200
    schema = httpx.get(f"{url}/openapi.json", auth=("alice", SECRET), timeout=30)
    assert schema.status_code == 200 and "/sdapi/v1/txt2img" in schema.json()["paths"]


def test_ui_logins_are_slowed_per_address_and_user_and_never_lock_out_the_right_person(locked_server,
                                                                                      throttle) -> None:
    easel, url = locked_server
    rotating = [httpx.post(f"{url}/login", data={"username": "alice", "password": f"guess-{i}"},
                           headers={"X-Forwarded-For": f"10.9.{i}.1"}, timeout=10).status_code for i in range(8)]
    assert rotating[:6] == [400] * 6 and rotating[6:] == [429, 429]  # the header is not believed without a proxy
    blocked = httpx.post(f"{url}/login", data={"username": "alice", "password": SECRET}, timeout=10)
    assert blocked.status_code == 429 and "for this user name from this address" in blocked.json()["detail"]
    with from_address("127.0.0.2") as elsewhere:  # the right person, elsewhere
        login = elsewhere.post(f"{url}/login", data={"username": "alice", "password": SECRET})
        assert login.status_code == 200 and elsewhere.get(f"{url}/config").status_code == 200
    with httpx.Client(timeout=30) as colleague:  # another user behind the guesser's address (a shared proxy)
        multipart = {"username": (None, "bob"), "password": (None, BOB)}  # how the login page sends the form
        assert colleague.post(f"{url}/login", files=multipart).status_code == 200
        cookies = colleague.post(f"{url}/login", data={"username": "bob", "password": BOB}).headers.get_list(
            "set-cookie")
        assert cookies and all("samesite=none" not in c.lower() for c in cookies)
        assert any("access-token-" in c and "SameSite=Lax" in c and "Secure" in c for c in cookies)
    guesses = [httpx.post(f"{url}/login", files={"username": (None, "bob"), "password": (None, f"no-{i}")},
                          timeout=10).status_code for i in range(7)]
    assert guesses[:6] == [400] * 6 and guesses[6] == 429  # multipart forms are counted by their user name too


def test_api_logins_are_slowed_per_address_and_user(locked_server, throttle) -> None:
    easel, url = locked_server
    options = f"{url}/sdapi/v1/options"
    statuses = [httpx.get(options, auth=("alice", f"guess-{i}"), headers={"X-Forwarded-For": f"10.8.{i}.1"},
                          timeout=10).status_code for i in range(7)]
    assert statuses[:6] == [401] * 6 and statuses[6] == 429
    assert httpx.get(options, auth=("alice", SECRET), timeout=10).status_code == 429  # this address, this name
    assert httpx.get(options, auth=("bob", BOB), timeout=10).status_code == 200
    with from_address("127.0.0.2") as elsewhere:
        assert elsewhere.get(options, auth=("alice", SECRET)).status_code == 200


def test_many_addresses_guessing_one_name_do_not_lock_it(locked_server, throttle) -> None:
    """Past the per-name limit (20) every address that guessed it waits, but one that never failed gets in."""
    easel, url = locked_server
    for i in range(21):
        with from_address(f"127.0.{i // 250}.{i % 250 + 2}") as guesser:
            assert guesser.get(f"{url}/sdapi/v1/options", auth=("alice", "nope")).status_code == 401
    with from_address("127.0.0.2") as guesser:  # failed once, and the name has had 21 failures: it waits
        assert guesser.get(f"{url}/sdapi/v1/options", auth=("alice", "nope")).status_code == 429
    with from_address("127.0.1.9") as fresh:
        assert fresh.get(f"{url}/sdapi/v1/options", auth=("alice", SECRET)).status_code == 200


def test_a_restart_from_the_page_logs_no_password(locked_server, throttle, caplog) -> None:
    from gradio_client import Client

    from webui.app import restart_process

    caplog.set_level(logging.INFO)
    easel, url = locked_server
    ran: list[list[str]] = []
    done = threading.Event()
    command = [sys.executable, "launch.py", "--gradio-auth", f"alice:{SECRET},bob:{BOB}", f"--api-auth=robot:{SECRET}",
               "--port", "7861"]
    easel.extras["restart"] = functools.partial(restart_process, command=command,
                                                execute=lambda c: (ran.append(c), done.set()))
    client = Client(url, auth=("alice", SECRET), verbose=False, httpx_kwargs={"timeout": 120})
    token = page_token(client.config)
    client.predict([], token, api_name="/on_apply_restart")
    assert done.wait(30) and ran == [command]  # the real command runs again, logins included
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "restarting Easel:" in logged and "--gradio-auth *** --api-auth=*** --port 7861" in logged
    assert SECRET not in logged and BOB not in logged


# Behind a reverse proxy -----------------------------------------------------------------------------------------
def test_forwarded_for_is_believed_only_from_the_proxies_named(serve_module) -> None:
    easel, url = serve_module(nowebui=True, api=True, api_auth=f"alice:{SECRET}", forwarded_allow_ips=["127.0.0.1"],
                              allowed_hosts=["easel.example.com"])
    wait_until_up(url, auth=("alice", SECRET))
    stopped_clock(easel.extras["login_throttle"])
    options = f"{url}/sdapi/v1/options"
    rotating = [httpx.get(options, auth=("alice", f"guess-{i}"), headers={"X-Forwarded-For": f"10.7.{i}.1"},
                          timeout=10).status_code for i in range(8)]
    assert rotating == [401] * 8  # eight clients behind the proxy, one guess each
    same = [httpx.get(options, auth=("alice", f"again-{i}"), headers={"X-Forwarded-For": "10.7.99.1"},
                      timeout=10).status_code for i in range(7)]
    assert same[:6] == [401] * 6 and same[6] == 429
    assert httpx.get(options, auth=("alice", SECRET), headers={"X-Forwarded-For": "10.7.100.1"},
                     timeout=10).status_code == 200
    with from_address("127.0.0.2") as not_a_proxy:  # its header is ignored: every guess counts for 127.0.0.2
        statuses = [not_a_proxy.get(options, auth=("alice", f"x-{i}"), headers={"X-Forwarded-For": f"10.6.{i}.1"})
                    .status_code for i in range(7)]
        assert statuses[:6] == [401] * 6 and statuses[6] == 429
    # --nowebui has the same Host and Origin checks; --allowed-hosts adds a name
    assert httpx.get(options, headers={"Host": "evil.example"}, auth=("alice", SECRET), timeout=10).status_code == 400
    assert httpx.get(options, headers={"Host": "easel.example.com"}, auth=("alice", SECRET),
                     timeout=10).status_code == 200
    refused = httpx.post(f"{url}/sdapi/v1/interrupt", headers={"Origin": "http://evil.example"}, timeout=10)
    assert refused.status_code == 403 and cors_headers(refused) == []
    own = httpx.post(f"{url}/sdapi/v1/interrupt", headers={"Origin": "https://easel.example.com"},
                     auth=("alice", SECRET), timeout=10)  # Easel's page behind a proxy that sends another Host
    assert own.status_code == 200 and cors_headers(own) == []
    for path in ("/docs", "/openapi.json", "/redoc"):
        assert httpx.get(f"{url}{path}", timeout=10).status_code == 401, path
