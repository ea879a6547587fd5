"""Tiled diffusion and the memory settings through /sdapi/v1: the request fields are honoured (the image comes out
at the asked size, its infotext says it was tiled) or refused with a 422 naming the field; the settings are read
and changed through the options route; the memory report says how the checkpoint runs (no GPU here)."""
from __future__ import annotations

from tests.api.conftest import info_of, open_b64
from webui.infotext import parse_infotext

TINY = {"prompt": "a red circle", "steps": 2, "sampler_name": "Euler", "seed": 7}
TILED = {"tiled_diffusion": True, "tiled_diffusion_tile_width": 16, "tiled_diffusion_tile_height": 16,
         "tiled_diffusion_overlap": 8}


def test_tiled_diffusion_fields_are_honoured(client) -> None:
    response = client.post("/sdapi/v1/txt2img", json={**TINY, **TILED, "width": 96, "height": 64})
    assert response.status_code == 200, response.text
    image = open_b64(response.json()["images"][0])
    assert image.size == (96, 64)
    params = parse_infotext(info_of(response.json())["infotexts"][0])
    assert params["Tiled Diffusion"] == "True" and params["Tiled Diffusion tile width"] == "16"
    assert params["Tiled Diffusion tile height"] == "16" and params["Tiled Diffusion overlap"] == "8"


def test_bad_tiles_are_a_422_naming_the_field(client) -> None:
    response = client.post("/sdapi/v1/txt2img", json={**TINY, **TILED, "tiled_diffusion_overlap": 16})
    assert response.status_code == 422 and response.json()["field"] == "tiled_diffusion_overlap"
    response = client.post("/sdapi/v1/txt2img", json={**TINY, **TILED, "tiled_diffusion_tile_width": 4})
    assert response.status_code == 422 and response.json()["field"] == "tiled_diffusion_tile_width"


def test_memory_settings_through_options_and_the_report(client) -> None:
    options = client.get("/sdapi/v1/options").json()
    assert options["vae_tiling"] == "Automatic" and options["offload_mode"] == "auto"
    bad = client.post("/sdapi/v1/options", json={"vae_tiling": "sometimes"})
    assert bad.status_code == 422 and "vae_tiling" in bad.text
    assert client.post("/sdapi/v1/options", json={"vae_tiling": "Always", "vae_tile_size": 64}).status_code == 200
    response = client.post("/sdapi/v1/txt2img", json={**TINY, "width": 64, "height": 64})
    assert parse_infotext(info_of(response.json())["infotexts"][0])["Tiled VAE"] == "64px"
    memory = client.get("/sdapi/v1/memory").json()
    assert "none (no GPU)" in str(memory)
