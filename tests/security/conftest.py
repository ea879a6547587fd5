"""Helpers for the security tests: real servers on loopback ports, a malicious pickle, an API client fixture.

The servers are the ones users run (`webui.app.create_server`: Gradio UI with the API beside it, or the API alone
under uvicorn), built over the tiny SD 1.x model by the root `make_easel` fixture.
"""
from __future__ import annotations

import builtins
import os
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import pytest

TINY = {"width": 64, "height": 64, "steps": 2}

_RECORDERS: list[tuple[frozenset[str], list[str]]] = []  # (audit events, paths seen) of each recording test


def _audit(event: str, args: tuple, recorders=_RECORDERS, fsdecode=os.fsdecode,
           pathlike=(str, bytes, os.PathLike)) -> None:
    # Everything it uses is bound here: at interpreter exit the module's globals are already cleared.
    if recorders and args and isinstance(args[0], pathlike):
        for events, paths in recorders:
            if event in events:
                paths.append(fsdecode(args[0]))


sys.addaudithook(_audit)  # audit hooks cannot be removed; this one only records while a test asks it to


def _recording(*events: str) -> Iterator[list[str]]:
    entry: tuple[frozenset[str], list[str]] = (frozenset(events), [])
    _RECORDERS.append(entry)
    try:
        yield entry[1]
    finally:
        _RECORDERS.remove(entry)


@pytest.fixture
def opened() -> Iterator[list[str]]:
    """Paths opened while the test runs."""
    yield from _recording("open")


@pytest.fixture
def touched() -> Iterator[list[str]]:
    """Paths opened or listed while the test runs."""
    yield from _recording("open", "os.scandir", "os.listdir")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_up(url: str, path: str = "/sdapi/v1/sd-models", timeout: float = 60,
                  auth: tuple[str, str] | None = None, ok: tuple[int, ...] = (200,)) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}{path}", timeout=5, auth=auth).status_code in ok:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url}{path} did not come up")


def infotext_of(image_b64: str) -> dict[str, str]:
    """The parameters of a base64 PNG an API answer carries."""
    import base64
    import io

    from PIL import Image

    from webui.infotext import parse_infotext, read_png_parameters

    return parse_infotext(read_png_parameters(Image.open(io.BytesIO(base64.b64decode(image_b64)))) or "")


def ui_generate(url: str, auth: tuple[str, str] | None = None, timeout: float = 300) -> Callable[[str, int], str]:
    """The txt2img tab's Generate button through Gradio's queue (logged in with `auth`): generate(prompt, seed) ->
    the Parameters text. A busy CPU answers slowly, hence the long timeout."""
    from gradio_client import Client

    client = Client(url, auth=auth, verbose=False, httpx_kwargs={"timeout": timeout})
    endpoint = client.view_api(return_format="dict", print_info=False)["named_endpoints"]["/on_generate"]
    by_label = {p["label"]: p["parameter_name"] for p in endpoint["parameters"]}
    labels = [r.get("label") for r in endpoint["returns"]]

    def generate(prompt: str, seed: int) -> str:
        values = {"Checkpoint": "tiny-sd1", "Prompt": prompt, "Seed": seed, "Sampling steps": 1, "Width": 64,
                  "Height": 64, "Batch count": 1, "Batch size": 1}
        arguments = {p["parameter_name"]: None for p in endpoint["parameters"] if not p["parameter_has_default"]}
        arguments.update({by_label[label]: value for label, value in values.items()})  # e.g. an extension's image
        return client.predict(**arguments, api_name="/on_generate")[labels.index("Parameters")]

    return generate


def one_worker_thread(easel) -> None:
    """Run the worker's torch ops on one thread: on a CPU shared with other work, two intra-op threads that wait
    for each other make every tiny job several times slower."""
    import torch

    easel.engine.before_generate.append(lambda request: torch.set_num_threads(1))


def stop_server(easel: Any) -> None:
    server = easel.extras.get("server")
    if server is not None:
        server.should_exit = True
    blocks = easel.extras.get("blocks")
    if blocks is not None:
        blocks.close()


class _Servers:
    """Starts servers over Easels made by `make(**settings)` and stops every one it started."""

    def __init__(self, make: Callable[..., Any]) -> None:
        self.make = make
        self.started: list[Any] = []

    def __call__(self, **kwargs: Any) -> tuple[Any, str]:
        from webui.app import create_server

        easel = self.make(**kwargs)
        self.started.append(easel)
        _, url = create_server(easel, block=False)
        return easel, url.rstrip("/")

    def stop_all(self) -> None:
        for easel in self.started:
            stop_server(easel)


@pytest.fixture
def serve(make_easel) -> Iterator[Callable[..., tuple[Any, str]]]:
    """serve(**settings) -> (easel, base URL): a running server on a free loopback port, stopped afterwards."""
    servers = _Servers(lambda **kwargs: make_easel(port=free_port(), **kwargs))
    yield servers
    servers.stop_all()


@pytest.fixture(scope="module")
def serve_module(tmp_path_factory, tiny_sd1_dir) -> Iterator[Callable[..., tuple[Any, str]]]:
    """serve_module(**settings) -> (easel, base URL): like `serve`, but the server (over its own data folder with
    the tiny model) lasts for the whole test module, for tests that share one server's setup."""
    from webui.app import build
    from webui.settings import Settings

    def make(**kwargs: Any) -> Any:
        root = tmp_path_factory.mktemp("easel")
        models = root / "data" / "models" / "diffusers"
        models.mkdir(parents=True)
        shutil.copytree(tiny_sd1_dir, models / "tiny-sd1")
        settings = Settings(data_dir=root / "data", device="cpu", precision="full", builtin_dir=root / "no-builtin",
                            port=free_port(), **kwargs)
        easel = build(settings)
        easel.engine.start()
        return easel

    servers = _Servers(make)
    yield servers
    servers.stop_all()


class Payload:
    """Unpickling this opens (and so creates) `marker` for writing: the shape of a code-running checkpoint."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (builtins.open, (str(self.marker), "w"))


def write_malicious_checkpoint(path: Path, marker: Path) -> Path:
    """A Stable-Diffusion-shaped .ckpt (a state_dict of tensors) that also carries a file-creating payload."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(4, 4, 3, 3)},
                "global_step": 10, "payload": Payload(marker)}, str(path))
    assert not marker.exists()
    return path


@pytest.fixture
def api_client(make_easel):
    """(easel, TestClient) over a bare FastAPI app with Easel's API, as `--nowebui` serves it."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from webui.api.routes import create_api

    clients = []

    def build(**kwargs: Any) -> tuple[Any, Any]:
        easel = make_easel(**kwargs)
        app = FastAPI()
        create_api(app, easel)
        client = TestClient(app, raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return easel, client

    yield build
    for client in clients:
        client.__exit__(None, None, None)
