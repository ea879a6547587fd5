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
