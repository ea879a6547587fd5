"""Logins: --gradio-auth, --gradio-auth-path and --api-auth; constant-time checks; guessers slowed per address and
user name; every API route (/sdapi, /easel, extension routes) behind the login; passwords never in a log or a
response."""
from __future__ import annotations

import base64
import logging

import httpx
import pytest

from tests.security.conftest import TINY, wait_until_up
from webui.security import (LoginThrottle, api_logins, check_password, parse_logins, read_login_file,
                            ui_logins)
from webui.settings import Settings, build_parser, settings_from_args

SECRET = "s3cret-Pa55"


# Parsing ------------------------------------------------------------------------------------------------
def test_parse_logins_commas_lines_and_colons_in_passwords() -> None:
    assert parse_logins("ann:pw1, bob:pw:with:colons\ncid:x", "--gradio-auth") == [
        ("ann", "pw1"), ("bob", "pw:with:colons"), ("cid", "x")]
    assert parse_logins(" , \n", "--gradio-auth") == []


@pytest.mark.parametrize("text, words", [("ann" + SECRET, "login 1 is not user:password"),
                                         ("ann:ok,:" + SECRET, "login 2 has an empty user"),
                                         ("ann:", "login 1 has an empty user name or password")])
def test_malformed_logins_name_the_item_never_its_text(text: str, words: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_logins(text, "--gradio-auth")
    assert words in str(caught.value) and str(caught.value).startswith("--gradio-auth")
    assert SECRET not in str(caught.value)


def test_login_file(tmp_path) -> None:
    path = tmp_path / "logins.txt"
    path.write_text("# team logins\nann:pw1,bob:pw2\n\n  cid:pw3  \n", encoding="utf-8")
    assert read_login_file(path) == [("ann", "pw1"), ("bob", "pw2"), ("cid", "pw3")]
    (tmp_path / "empty.txt").write_text("# nothing\n", encoding="utf-8")
    with pytest.raises(ValueError, match="holds no user:password login"):
        read_login_file(tmp_path / "empty.txt")
    with pytest.raises(ValueError, match="cannot read the file"):
        read_login_file(tmp_path / "missing.txt")
    (tmp_path / "bad.txt").write_text(f"ann:pw1\nbob{SECRET}\n", encoding="utf-8")
    with pytest.raises(ValueError) as caught:
        read_login_file(tmp_path / "bad.txt")
    assert "login 2" in str(caught.value) and str(tmp_path / "bad.txt") in str(caught.value)
    assert SECRET not in str(caught.value)


def test_flags_fold_into_ui_and_api_logins(tmp_path) -> None:
    path = tmp_path / "logins.txt"
    path.write_text("bob:pw2\n", encoding="utf-8")
    args = build_parser().parse_args(["--gradio-auth", "ann:pw1", "--gradio-auth-path", str(path),
                                      "--data-dir", str(tmp_path / "data")])
    settings = settings_from_args(args)
    assert settings.auth_pairs() == [("ann", "pw1"), ("bob", "pw2")]
    assert settings.api_auth_pairs() == [("ann", "pw1"), ("bob", "pw2")]  # the API follows the UI by default
    own = Settings(data_dir=tmp_path, gradio_auth="ann:pw1", api_auth="robot:token")
    assert own.api_auth_pairs() == [("robot", "token")]
    assert ui_logins(None, None) == [] and api_logins(None, []) == []
    args = build_parser().parse_args(["--gradio-auth-path", str(tmp_path / "missing.txt"),
                                      "--data-dir", str(tmp_path / "data")])
    with pytest.raises(ValueError, match="--gradio-auth-path"):
        settings_from_args(args)  # fails at start, not at the first login


def test_check_password_compares_every_pair_in_constant_time(monkeypatch) -> None:
    import hmac

    import webui.security as security

    logins = [("ann", "pw1"), ("bob", "pw2"), ("cid", "pw3")]
    assert check_password("bob", "pw2", logins)
    assert not check_password("bob", "pw1", logins)
    assert not check_password("bob", "pw2x", logins) and not check_password("", "", logins)
    assert not check_password("ann", "pw1", [])
    calls = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(security.hmac, "compare_digest", counting)
    check_password("ann", "pw1", logins)  # a match on the first pair still compares all of them
    assert len(calls) == 2 * len(logins)
    assert all(a == b == 32 for a, b in calls)  # digests: equal lengths, so the length of a password never leaks


# Slowing down -----------------------------------------------------------------------------------------------
def test_throttle_makes_an_address_wait_doubling_then_forgets() -> None:
    now = [1000.0]
    throttle = LoginThrottle(free_failures=3, first_delay=1.0, max_delay=8.0, forget_after=600, clock=lambda: now[0])
    for _ in range(3):
        assert throttle.failed("10.0.0.1") == 0 and throttle.retry_after("10.0.0.1") == 0
    assert throttle.failed("10.0.0.1") == 1.0
    assert throttle.retry_after("10.0.0.1") == 1.0 and throttle.retry_after("10.0.0.2") == 0  # per address
    assert [throttle.failed("10.0.0.1") for _ in range(4)] == [2.0, 4.0, 8.0, 8.0]  # doubling, capped
    now[0] += 8.5
    assert throttle.retry_after("10.0.0.1") == 0
    throttle.succeeded("10.0.0.1")
    assert throttle.failed("10.0.0.1") == 0  # a success starts over
    for _ in range(5):
        throttle.failed("10.0.0.3")
    now[0] += 601
    assert throttle.retry_after("10.0.0.3") == 0 and throttle.failed("10.0.0.3") == 0  # forgotten


def test_throttle_remembers_a_bounded_number_of_addresses() -> None:
    throttle = LoginThrottle(free_failures=0, max_addresses=3)
    for i in range(10):
        throttle.failed(f"10.0.0.{i}")
    assert throttle.retry_after("10.0.0.9") > 0 and throttle.retry_after("10.0.0.0") == 0
    assert len(throttle.pairs.records) == 3


def test_throttle_counts_per_address_and_user_name() -> None:
    """A guesser slows down only its own (address, name); past `user_free_failures` for one name, every address
    that has failed for it waits too, but an address that never failed for it is never refused."""
    now = [0.0]
    throttle = LoginThrottle(free_failures=2, user_free_failures=5, clock=lambda: now[0])
    for _ in range(3):
        throttle.failed("10.0.0.1", "ann")
    assert throttle.retry_after("10.0.0.1", "ann") == 1.0
    assert throttle.retry_after("10.0.0.1", "bob") == 0 and throttle.retry_after("10.0.0.2", "ann") == 0
    for i in range(2, 5):
        throttle.failed(f"10.0.0.{i}", "ann")  # the name's 6th failure overall
    assert throttle.retry_after("10.0.0.3", "ann") == 1.0  # it failed for ann: it waits for the name
    assert throttle.retry_after("10.0.0.9", "ann") == 0  # never failed: never refused
    throttle.succeeded("10.0.0.3", "ann")
    assert throttle.retry_after("10.0.0.3", "ann") == 0


# The API -------------------------------------------------------------------------------------------------------
def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def protected_operations(app) -> list[tuple[str, str]]:
    """(method, path) of every operation Easel's API publishes in its OpenAPI schema."""
    return [(method.upper(), path) for path, operations in app.openapi()["paths"].items()
            if path.startswith(("/sdapi/", "/easel/", "/extensions/")) for method in operations]


def _call(client, method: str, path: str, headers: dict[str, str] | None = None):
    path = path.replace("{", "").replace("}", "")  # any value for path parameters
    return client.request(method, path, headers=headers or {}, json={} if method in ("POST", "PUT") else None)


def test_every_api_route_needs_the_login(api_client) -> None:
    easel, client = api_client(gradio_auth=f"ann:{SECRET}")
    operations = protected_operations(client.app)
    assert ("POST", "/sdapi/v1/txt2img") in operations and len(operations) > 15
    for method, path in operations:
        response = _call(client, method, path)
        assert response.status_code == 401, (method, path, response.status_code)
        assert response.headers["www-authenticate"].startswith("Basic")
        assert _call(client, method, path, basic("ann", "wrong")).status_code in (401, 429), path
        easel.extras["login_throttle"].succeeded("testclient", "ann")
    assert client.get("/sdapi/v1/options", headers=basic("ann", SECRET)).status_code == 200


def test_api_auth_gives_the_api_its_own_logins(api_client) -> None:
    _, client = api_client(gradio_auth="ann:ui-pass", api_auth="robot:api-pass")
    assert client.get("/sdapi/v1/options", headers=basic("robot", "api-pass")).status_code == 200
    assert client.get("/sdapi/v1/options", headers=basic("ann", "ui-pass")).status_code == 401


def test_api_auth_alone_protects_the_api(api_client) -> None:
    _, client = api_client(api_auth="robot:api-pass")
    assert client.get("/sdapi/v1/options").status_code == 401
    assert client.get("/sdapi/v1/options", headers=basic("robot", "api-pass")).status_code == 200


def test_extension_routes_need_the_login(make_easel) -> None:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from webui.api.routes import create_api
    from webui.extensions import RouteContribution

    easel = make_easel(gradio_auth="ann:pw")
    easel.registry.routes.append(RouteContribution("/extensions/demo/ping", lambda: {"pong": True}, ["GET"], "demo"))
    app = FastAPI()
    create_api(app, easel)
    with TestClient(app) as client:
        assert client.get("/extensions/demo/ping").status_code == 401
        assert client.get("/extensions/demo/ping", headers=basic("ann", "pw")).json() == {"pong": True}


def test_repeated_api_failures_from_one_address_are_slowed_down(api_client) -> None:
    easel, client = api_client(gradio_auth="ann:pw")
    throttle = easel.extras["login_throttle"]
    statuses = [client.get("/sdapi/v1/options", headers=basic("ann", f"guess{i}")).status_code for i in range(6)]
    assert statuses[:5] == [401] * 5 and statuses[5] == 401  # the sixth failure starts the wait
    blocked = client.get("/sdapi/v1/options", headers=basic("ann", "pw"))  # this name from this address waits
    assert blocked.status_code == 429 and int(blocked.headers["retry-after"]) >= 1
    assert "too many failed logins" in blocked.json()["detail"]
    malformed = client.get("/sdapi/v1/options", headers={"Authorization": "Basic %%%"})
    assert malformed.status_code == 401  # no user name in it: counted apart from ann's
    throttle.pairs.records[("testclient", "ann")].blocked_until = 0  # the wait is over
    throttle.users.records["ann"].blocked_until = 0
    assert client.get("/sdapi/v1/options", headers=basic("ann", "pw")).status_code == 200
    assert throttle.retry_after("testclient", "ann") == 0 and ("testclient", "ann") not in throttle.pairs.records


def test_missing_credentials_are_not_counted_as_guesses(api_client) -> None:
    easel, client = api_client(gradio_auth="ann:pw")
    for _ in range(10):
        assert client.get("/sdapi/v1/options").status_code == 401
    assert not easel.extras["login_throttle"].pairs.records


# The UI login over HTTP, and passwords in logs --------------------------------------------------------------
def test_ui_login_is_slowed_down_per_address_and_passwords_never_logged(serve, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    easel, url = serve(api=True, gradio_auth=f"ann:{SECRET}")
    wait_until_up(url, "/", ok=(200,))
    assert httpx.get(f"{url}/config", timeout=10).status_code == 401  # Gradio's own routes need the login
    assert httpx.get(f"{url}/sdapi/v1/options", timeout=10).status_code == 401
    for i in range(5):
        response = httpx.post(f"{url}/login", data={"username": "ann", "password": f"guess-{i}"}, timeout=10)
        assert response.status_code == 400
    assert httpx.post(f"{url}/login", data={"username": "ann", "password": "guess-5"}, timeout=10).status_code == 400
    blocked = httpx.post(f"{url}/login", data={"username": "ann", "password": SECRET}, timeout=10)
    assert blocked.status_code == 429 and "too many failed logins" in blocked.json()["detail"]
    easel.extras["login_throttle"].pairs.records[("127.0.0.1", "ann")].blocked_until = 0
    with httpx.Client(timeout=30) as browser:
        assert browser.post(f"{url}/login", data={"username": "ann", "password": SECRET}).status_code == 200
        assert browser.get(f"{url}/config").status_code == 200  # the session cookie works
    assert ("127.0.0.1", "ann") not in easel.extras["login_throttle"].pairs.records
    api = httpx.post(f"{url}/sdapi/v1/txt2img", json={"prompt": "after login", **TINY}, auth=("ann", SECRET),
                     timeout=120)
    assert api.status_code == 200
    flags = httpx.get(f"{url}/sdapi/v1/cmd-flags", auth=("ann", SECRET), timeout=10).text
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "failed logins from 127.0.0.1" in logged
    assert SECRET not in logged and SECRET not in flags and "guess-" not in logged


# Routes mounted by anyone under /sdapi and /easel -------------------------------------------------------------
@pytest.mark.parametrize("flags", [{"api": True, "gradio_auth": f"ann:{SECRET}"},
                                   {"nowebui": True, "api": True, "api_auth": f"ann:{SECRET}"}])
def test_any_route_under_sdapi_or_easel_needs_the_login(make_easel, flags) -> None:
    """A route added to the app without Easel's route class (as a tab's own router might) is still behind the
    login, with the Gradio UI and with --nowebui."""
    from tests.security.conftest import free_port, stop_server
    from webui.app import create_server

    easel = make_easel(port=free_port(), **flags)
    app, url = create_server(easel, block=False)
    url = url.rstrip("/")
    try:
        app.add_api_route("/easel/v1/plain", lambda: {"plain": True}, methods=["GET", "POST"])
        app.add_api_route("/sdapi/v1/plain-too", lambda: {"plain": True}, methods=["GET"])
        wait_until_up(url, "/sdapi/v1/options", auth=("ann", SECRET))
        for path in ("/easel/v1/plain", "/sdapi/v1/plain-too", "/easel/v1/missing"):
            response = httpx.get(f"{url}{path}", timeout=10)
            assert response.status_code == 401, path
            assert response.headers["www-authenticate"].startswith("Basic")
            assert response.json()["error"] == "Unauthorized"
        wrong = httpx.post(f"{url}/easel/v1/plain", auth=("ann", "nope"), timeout=10)
        assert wrong.status_code == 401 and wrong.json()["detail"] == "wrong user name or password"
        assert httpx.get(f"{url}/easel/v1/plain", auth=("ann", SECRET), timeout=10).json() == {"plain": True}
        assert httpx.get(f"{url}/sdapi/v1/plain-too", auth=("ann", SECRET), timeout=10).json() == {"plain": True}
        throttle = easel.extras["login_throttle"]
        assert ("127.0.0.1", "ann") not in throttle.pairs.records  # the success cleared the one failure
    finally:
        stop_server(easel)
