"""Browser fixtures: a real Easel server on a free port and headless Debian Chromium driven by Playwright.

The server is built like `webui.app.main` does (settings → manager → engine → UI) over a tmp data dir holding
the tiny SD 1.x model (`make_easel`), so the tests exercise the real pipelines, queue and file outputs.
Chromium is Debian's (`apt-get install -y chromium`); without it these tests are skipped with that hint.
"""
from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest
from playwright.sync_api import expect

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run"]
SHOTS = Path("/tmp/easel-shots")
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.browser)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    easel: Any
    url: str

    @property
    def outputs(self) -> Path:
        return self.easel.settings.outputs_dir


@pytest.fixture(scope="package")  # Playwright's sync API holds an event loop on this thread until it stops
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip("Debian chromium is not installed: apt-get update && apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def serving(easel: Any) -> Iterator[Server]:
    """The page and API of `easel` on its port while the caller's fixture lasts; closed afterwards."""
    from webui.app import create_server

    _, url = create_server(easel, block=False)
    yield Server(easel, url)
    blocks = easel.extras.get("blocks")
    if blocks is not None:
        blocks.close()


@pytest.fixture
def server(make_easel) -> Iterator[Server]:
    yield from serving(make_easel(port=free_port()))


@pytest.fixture
def page(browser, server: Server) -> Iterator[Any]:
    context = browser.new_context(viewport=DESKTOP)
    context.set_default_timeout(30_000)
    # expect() waits 5 s by default: too short for a CI machine under load (a tab switch or an upload's size
    # update there took longer); the same 30 s as the page's actions, still failing fast on a real miss
    expect.set_options(timeout=30_000)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    tab.goto(server.url)
    tab.wait_for_selector("#txt2img_generate")
    yield tab
    context.close()
    assert not errors, f"JavaScript errors in the page: {errors}"
