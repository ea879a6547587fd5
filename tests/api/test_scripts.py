"""The built-in scripts over the API: `script_name` / `script_args` in AUTOMATIC1111's positional order."""
from __future__ import annotations

from tests.api.conftest import TINY, b64_png, gradient, info_of, open_b64
from webui.infotext import parse_infotext


def xyz_args(x_type, x_values, y_type=0, y_values="", lone=True):
    return [x_type, x_values, [], y_type, y_values, [], 0, "", [], True, lone, False, False, False, False, False,
            0, False]


def test_xyz_plot_by_index_and_label(client):
    listed = client.get("/sdapi/v1/scripts").json()
    for mode in ("txt2img", "img2img"):
        assert {"x/y/z plot", "prompt matrix", "prompts from file or textbox"} <= set(listed[mode])
    body = {"prompt": "a cat", "seed": 3, **TINY, "script_name": "X/Y/Z Plot",
            "script_args": xyz_args(4, "1, 2", "CFG Scale", "3, 7")}  # 4: Steps in AUTOMATIC1111's txt2img list
    response = client.post("/sdapi/v1/txt2img", json=body)
    assert response.status_code == 200, response.text
    data = response.json()
    info = info_of(data)
    assert len(data["images"]) == 5 and info["index_of_first_image"] == 1 and len(info["infotexts"]) == 5
    grid = open_b64(data["images"][0])
    assert grid.width > 128 and grid.height > 128
    assert parse_infotext(grid.info["parameters"])["X Type"] == "Steps"
    cells = [parse_infotext(open_b64(image).info["parameters"]) for image in data["images"][1:]]
    assert [(c["Steps"], c["CFG scale"]) for c in cells] == [("1", "3"), ("2", "3"), ("1", "7"), ("2", "7")]
    # without "include lone images" (AUTOMATIC1111's default) only the grid comes back
    only_grid = client.post("/sdapi/v1/txt2img", json={**body, "script_args": xyz_args("Seed", "1, 2", lone=False)})
    assert only_grid.status_code == 200 and len(only_grid.json()["images"]) == 1


def test_xyz_plot_img2img_index_list(client):
    body = {"init_images": [b64_png(gradient())], **TINY, "denoising_strength": 0.5, "script_name": "x/y/z plot",
            "script_args": xyz_args(5, "4, 6")}  # 5: CFG Scale in the img2img list (no Hires steps there)
    response = client.post("/sdapi/v1/img2img", json=body)
    assert response.status_code == 200, response.text
    cells = [parse_infotext(open_b64(image).info["parameters"]) for image in response.json()["images"][1:]]
    assert [c["CFG scale"] for c in cells] == ["4", "6"]


def test_bad_script_args_name_the_axis(client):
    base = {"prompt": "x", **TINY, "script_name": "x/y/z plot"}
    bad_value = client.post("/sdapi/v1/txt2img", json={**base, "script_args": xyz_args("Steps", "1, lots")})
    assert bad_value.status_code == 422 and bad_value.json()["field"] == "script_args"
    assert "X axis (Steps)" in bad_value.json()["detail"]
    too_many = client.post("/sdapi/v1/txt2img", json={**base, "script_args": xyz_args("Steps", "1, 900")})
    assert too_many.status_code == 422 and too_many.json()["field"] == "script_args"
    assert "Steps = 900" in too_many.json()["detail"]
    bad_type = client.post("/sdapi/v1/txt2img", json={**base, "script_args": xyz_args(99, "1")})
    assert bad_type.status_code == 422 and "X type: 99" in bad_type.json()["detail"]


def test_sd_upscale_over_the_api(client):
    listed = client.get("/sdapi/v1/scripts").json()
    assert {"sd upscale", "loopback"} <= set(listed["img2img"]) and "sd upscale" not in listed["txt2img"]
    body = {"init_images": [b64_png(gradient())], **TINY, "seed": 5, "denoising_strength": 0.5,
            "script_name": "SD upscale", "script_args": ["", 16, 1, 2]}  # 1: Lanczos in AUTOMATIC1111's list
    response = client.post("/sdapi/v1/img2img", json=body)
    assert response.status_code == 200, response.text
    data = response.json()
    assert len(data["images"]) == 1 and info_of(data)["index_of_first_image"] == 0
    image = open_b64(data["images"][0])
    assert image.size == (128, 128)
    assert parse_infotext(image.info["parameters"])["SD upscale upscaler"] == "Lanczos"
    by_name = client.post("/sdapi/v1/img2img", json={**body, "script_args": ["", 16, "Nearest", 1.5]})
    assert by_name.status_code == 200, by_name.text
    assert open_b64(by_name.json()["images"][0]).size == (96, 96)
    for args, words in ((["", 16, 9, 2], "index 9"), (["", 80, "Lanczos", 2], "Tile overlap"),
                        (["", 16, "Lanczos", "big"], "Scale Factor")):
        bad = client.post("/sdapi/v1/img2img", json={**body, "script_args": args})
        assert bad.status_code == 422 and bad.json()["field"] == "script_args", bad.text
        assert words in bad.json()["detail"]
    txt = client.post("/sdapi/v1/txt2img", json={"prompt": "x", **TINY, "script_name": "sd upscale",
                                                 "script_args": ["", 16, 1, 2]})
    assert txt.status_code == 422 and txt.json()["field"] == "script_name"


def test_loopback_over_the_api(client):
    body = {"init_images": [b64_png(gradient())], **TINY, "seed": 5, "denoising_strength": 0.5,
            "script_name": "loopback", "script_args": [2, 0.3, "Linear", "None"]}
    response = client.post("/sdapi/v1/img2img", json=body)
    assert response.status_code == 200, response.text
    data = response.json()
    info = info_of(data)
    assert len(data["images"]) == 3 and info["index_of_first_image"] == 1
    assert open_b64(data["images"][0]).size == (128, 64)  # the grid: two loops side by side
    loops = [parse_infotext(open_b64(image).info["parameters"]) for image in data["images"][1:]]
    assert [(p["Denoising strength"], p["Loopback"], p["Seed"]) for p in loops] == [("0.5", "1/2", "5"),
                                                                                    ("0.3", "2/2", "6")]
    bad = client.post("/sdapi/v1/img2img", json={**body, "script_args": [2, 0.3, "Linear", "CLIP"]})
    assert bad.status_code == 422 and bad.json()["field"] == "script_args"
    assert "interrogat" in bad.json()["detail"]
