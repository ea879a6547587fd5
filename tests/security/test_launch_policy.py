"""Start-up policy: a public link without logins refuses to start (unless --share-insecure, which warns),
--listen without logins warns, and --share without internet leaves the local server running with a clear error."""
from __future__ import annotations

import logging
import socket

import httpx
import pytest

from tests.security.conftest import TINY, free_port, wait_until_up
from webui.security import InsecureLaunchError, launch_warnings
from webui.settings import Settings


def settings(tmp_path, **kwargs) -> Settings:
    return Settings(data_dir=tmp_path, **kwargs)


def test_share_without_logins_refuses_and_says_why(tmp_path) -> None:
    with pytest.raises(InsecureLaunchError) as caught:
        launch_warnings(settings(tmp_path, share=True))
    text = str(caught.value)
    assert "public link" in text and "the UI would have no login" in text
    assert "--gradio-auth" in text and "--share-insecure" in text
    with pytest.raises(InsecureLaunchError, match="the UI would have no login"):  # an API login is not enough
        launch_warnings(settings(tmp_path, share=True, api=True, api_auth="robot:pw"))


def test_share_with_logins_or_insecure_flag(tmp_path) -> None:
    assert launch_warnings(settings(tmp_path, share=True, api=True, gradio_auth="ann:pw")) == []
    logins = tmp_path / "logins.txt"
    logins.write_text("ann:pw\n", encoding="utf-8")
    assert launch_warnings(settings(tmp_path, share=True, gradio_auth_path=logins)) == []
    warnings = launch_warnings(settings(tmp_path, share=True, share_insecure=True))
    assert len(warnings) == 1 and "WITHOUT a login" in warnings[0]


def test_listen_without_logins_warns(tmp_path) -> None:
    warnings = launch_warnings(settings(tmp_path, listen=True, api=True))
    assert len(warnings) == 1 and "--listen" in warnings[0] and "the UI and the API has no login" in warnings[0]
    assert launch_warnings(settings(tmp_path, listen=True, gradio_auth="ann:pw")) == []
    assert launch_warnings(settings(tmp_path)) == []  # loopback only: nothing to say
    nowebui = launch_warnings(settings(tmp_path, share=True, nowebui=True, api=True, api_auth="r:pw"))
    assert nowebui == ["--share has no effect with --nowebui: the public link is made by the Gradio UI"]


def test_main_refuses_before_building_anything(tmp_path, caplog) -> None:
    from webui.app import main

    caplog.set_level(logging.INFO)
    data = tmp_path / "data"
    with pytest.raises(SystemExit) as caught:
        main(["--share", "--data-dir", str(data), "--port", str(free_port())])
    assert caught.value.code == 2
    assert "Easel did not start: --share publishes Easel on a public link" in caplog.text
    assert not (data / "models").exists()  # refused before the app was built


def test_main_reports_a_malformed_login_without_echoing_it(tmp_path, caplog) -> None:
    from webui.app import main

    with pytest.raises(SystemExit):
        main(["--gradio-auth", "annhunter2", "--data-dir", str(tmp_path / "data")])
    assert "--gradio-auth: login 1 is not user:password" in caplog.text and "hunter2" not in caplog.text


def test_create_server_refuses_share_before_listening(make_easel) -> None:
    from webui.app import create_server

    port = free_port()
    easel = make_easel(port=port, share=True)
    with pytest.raises(InsecureLaunchError):
        create_server(easel, block=False)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))  # nothing took the port


def test_listen_without_logins_starts_with_a_warning(serve, caplog) -> None:
    caplog.set_level(logging.WARNING)
    easel, url = serve(listen=True, api=True, nowebui=True)
    wait_until_up(url.replace("0.0.0.0", "127.0.0.1"))
    assert "--listen: Easel accepts connections from other machines" in caplog.text


def test_share_without_internet_keeps_the_local_server(serve, caplog, monkeypatch) -> None:
    import gradio.networking

    # No route to Gradio's share server (these machines have no internet; make it certain).
    monkeypatch.setattr(gradio.networking, "GRADIO_API_SERVER", "http://127.0.0.1:9/v3/tunnel-request")
    caplog.set_level(logging.INFO)
    easel, url = serve(share=True, api=True, gradio_auth="ann:pw")
    assert easel.extras["share_url"] is None
    assert "--share: the public link could not be created" in caplog.text
    assert f"Easel keeps running locally at {url}" in caplog.text
    wait_until_up(url, auth=("ann", "pw"))
    response = httpx.post(f"{url}/sdapi/v1/txt2img", json={"prompt": "still here", **TINY}, auth=("ann", "pw"),
                          timeout=120)
    assert response.status_code == 200


def test_share_start_does_not_hang_when_the_share_server_never_answers(serve, caplog, monkeypatch) -> None:
    """A firewall that swallows packets: the share server accepts the connection and never answers. Gradio
    would wait 30 s; Easel gives up after SHARE_PROBE_SECONDS and serves locally."""
    import threading
    import time

    import gradio.networking

    import webui.app

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept_and_say_nothing() -> None:
        silent.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(silent.accept()[0])
            except OSError:
                continue

    threading.Thread(target=accept_and_say_nothing, daemon=True).start()
    monkeypatch.setattr(gradio.networking, "GRADIO_API_SERVER",
                        f"http://127.0.0.1:{silent.getsockname()[1]}/v3/tunnel-request")
    monkeypatch.setattr(webui.app.share_server_problem, "__defaults__", (2.0,))
    caplog.set_level(logging.INFO)
    try:
        started = time.monotonic()
        assert webui.app.share_server_problem(1.0) == "no answer within 1 s"
        assert time.monotonic() - started < 1.5
        easel, url = serve(share=True, api=True, gradio_auth="ann:pw")
        assert easel.extras["share_url"] is None
        assert "--share: the public link could not be created" in caplog.text and "no answer within 2 s" in caplog.text
        assert len(held) == 2  # the two probes; Gradio itself (30 s wait) was never sent there
        wait_until_up(url, auth=("ann", "pw"))
    finally:
        stop.set()
        for connection in held:
            connection.close()
        silent.close()
