"""Regional prompts on SD 1.x and SDXL by attention coupling, on tiny random-weight models (64×64, 4 steps, Euler,
CFG 7): a region's prompt changes its own part of the image far more than the rest; weight 0 gives the plain image
bit for bit and one region covering everything with the base prompt gives it within 2 levels; painted masks give
what the same boxes give; the UNet's processors are put back after the job (the next plain image is bit-identical
to one made before); img2img, inpaint and batches run; flow families are refused naming the family; the API takes
it all through `alwayson_scripts`."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from tests.conftest import api_client
from tests.segment.conftest import b64_png, open_b64
from webui.engine.worker import JobState
from webui.requests import Img2ImgRequest, InpaintRequest, RequestError, Txt2ImgRequest

NAME = "regional prompter"
SMALL = dict(width=64, height=64, steps=4, sampler="Euler", cfg_scale=7.0, seed=3, prompt="a photo")
LEFT, RIGHT = [0, 0, 0.5, 1], [0.5, 0, 1, 1]


@pytest.fixture(scope="module")
def tiny_sdxl_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.tiny_models import make_tiny_sdxl

    return make_tiny_sdxl(tmp_path_factory.mktemp("regional-sdxl") / "tiny-sdxl")


@pytest.fixture
def easel(make_easel, tiny_sdxl_dir: Path):
    easel = make_easel()
    shutil.copytree(tiny_sdxl_dir, easel.settings.data_dir / "models" / "diffusers" / "tiny-sdxl")
    easel.manager.refresh()
    return easel


def regions_args(easel, regions: list[dict], base_weight: float = 0.2) -> dict:
    return easel.registry.parse_request_args({NAME: {"args": [{"base_weight": base_weight, "regions": regions}]}})


def image(easel, checkpoint: str, regions: list[dict] | None = None, kind=Txt2ImgRequest, **changes) -> np.ndarray:
    args = regions_args(easel, regions) if regions is not None else {}
    job = easel.engine.generate(kind(**{**SMALL, "checkpoint": checkpoint, "extension_args": args, **changes}),
                                timeout=300)
    assert job.state == JobState.DONE, job.error
    return np.stack([np.asarray(i.convert("RGB"), np.float64) for i in job.result.images])  # [B,H,W,3]


def change(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Mean absolute change in the left quarter and in the right quarter (the halves' outer parts)."""
    diff = np.abs(a - b)
    return float(diff[..., :, :16, :].mean()), float(diff[..., :, 48:, :].mean())


@pytest.mark.parametrize("checkpoint", ["tiny-sd1", "tiny-sdxl"])
def test_each_region_prompt_changes_its_own_half(easel, checkpoint: str) -> None:
    both = image(easel, checkpoint, [{"box": LEFT, "prompt": "red apple"}, {"box": RIGHT, "prompt": "blue sky"}])
    new_left = image(easel, checkpoint, [{"box": LEFT, "prompt": "green forest tree"},
                                         {"box": RIGHT, "prompt": "blue sky"}])
    new_right = image(easel, checkpoint, [{"box": LEFT, "prompt": "red apple"},
                                          {"box": RIGHT, "prompt": "yellow desert sand"}])
    # The tiny random UNet and VAE spread any change over the whole 64×64 picture (their convolutions see it all),
    # so the sides are compared by their outer quarters; measured ratios 1.8–2.2 (see the attention-layer test
    # below for the exact locality inside the coupled layers).
    left, right = change(both, new_left)
    print(checkpoint, "left prompt changed: left/right quarter", left, right)
    assert left > 0.5 and left > 1.5 * right, (left, right)  # the left prompt moved the left side
    left, right = change(both, new_right)
    print(checkpoint, "right prompt changed: left/right quarter", left, right)
    assert right > 0.5 and right > 1.5 * left, (left, right)  # the right prompt moved the right side
    plain = image(easel, checkpoint)
    assert np.abs(both - plain).mean() > 0.5  # the regions change the picture at all


@pytest.mark.parametrize("checkpoint", ["tiny-sd1", "tiny-sdxl"])
def test_weight_zero_is_the_plain_image_and_a_full_region_with_the_base_prompt_nearly(easel, checkpoint) -> None:
    plain = image(easel, checkpoint)
    unused = image(easel, checkpoint, [{"box": LEFT, "prompt": "red apple", "weight": 0}])
    assert np.array_equal(unused, plain)  # bit for bit: the coupled layers pass the base attention through
    everywhere = image(easel, checkpoint, [{"box": [0, 0, 1, 1], "prompt": SMALL["prompt"]}])
    assert np.abs(everywhere - plain).max() <= 2  # (0.2·a + 1·a)/1.2: float rounding only


def test_the_processors_are_put_back_after_the_job(easel) -> None:
    from webui.engine.regional_attention import CoupledAttnProcessor

    before = image(easel, "tiny-sd1")
    unet = easel.manager.get("tiny-sd1", "txt2img").pipe.unet
    own = dict(unet.attn_processors)
    image(easel, "tiny-sd1", [{"box": LEFT, "prompt": "red apple"}, {"box": RIGHT, "prompt": "blue sky"}])
    after = image(easel, "tiny-sd1")
    assert np.array_equal(before, after)  # the next plain request is the plain image, bit for bit
    assert unet.attn_processors == own and not any(isinstance(p, CoupledAttnProcessor) for p in own.values())


def test_processors_restored_on_the_unet_itself(tiny_sd1_dir: Path) -> None:
    """The context manager puts the very same processor objects back, even when the call fails."""
    from diffusers import StableDiffusionPipeline

    from webui.builtin.regional import Region
    from webui.engine.regional_attention import CoupledAttnProcessor, regions_coupled

    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd1_dir, safety_checker=None)
    own = dict(pipe.unet.attn_processors)
    regions = [Region((0, 0, 0.5, 1), "red apple")]
    with regions_coupled(pipe, regions, 0.2, 1, False):
        coupled = pipe.unet.attn_processors
        assert sum(isinstance(p, CoupledAttnProcessor) for p in coupled.values()) == \
            sum(name.endswith("attn2.processor") for name in coupled)  # cross-attention only
        assert all(not isinstance(p, CoupledAttnProcessor) for n, p in coupled.items() if "attn1" in n)
    assert pipe.unet.attn_processors == own
    with pytest.raises(ZeroDivisionError), regions_coupled(pipe, regions, 0.2, 1, False):
        1 / 0
    assert pipe.unet.attn_processors == own and not pipe.unet._forward_pre_hooks


def test_inside_a_coupled_layer_a_region_prompt_reaches_its_tokens_only(tiny_sd1_dir: Path) -> None:
    """One cross-attention layer, its tokens on the 8×8 grid of a 64×64 image: changing the left region's prompt
    changes the prompted row's left-half tokens and leaves every right-half token and the negative row exactly."""
    import torch
    from diffusers import StableDiffusionPipeline

    from webui.builtin.regional import Region
    from webui.engine.regional_attention import Coupling, CoupledAttnProcessor, encode_regions

    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd1_dir, safety_checker=None)
    pipe._guidance_scale = 7.0  # do_classifier_free_guidance: the batch is [negative, prompted]
    layer = next(m for n, m in pipe.unet.named_modules() if n.endswith("attn2"))
    torch.manual_seed(0)
    hidden = torch.randn(2, 64, layer.to_q.in_features)  # [rows,N=8·8,C]
    text = torch.randn(2, 77, 32)  # [rows,T,D]: the negative and base prompts' states

    def run(left_prompt: str) -> torch.Tensor:
        regions = [Region((0, 0, 0.5, 1), left_prompt), Region((0.5, 0, 1, 1), "blue sky")]
        coupling = Coupling(pipe, regions, 0.2, encode_regions(pipe, regions, 1, False))
        coupling.latent_hw = (8, 8)
        with torch.no_grad():
            return CoupledAttnProcessor(layer.processor, coupling)(layer, hidden, text).view(2, 8, 8, -1)

    one, two = run("red apple"), run("green forest tree")
    assert torch.equal(one[0], two[0])  # the negative row: untouched
    assert torch.equal(one[1, :, 4:], two[1, :, 4:])  # the right half: exactly the same
    assert (one[1, :, :4] - two[1, :, :4]).abs().min() > 0  # every left-half token changed


def half_mask(size: int = 64) -> Image.Image:
    mask = Image.new("L", (size, size), 0)
    ImageDraw.Draw(mask).rectangle([0, 0, size // 2 - 1, size - 1], fill=255)
    return mask


@pytest.mark.parametrize("checkpoint", ["tiny-sd1", "tiny-sdxl"])
def test_painted_masks_give_what_the_same_boxes_give(easel, checkpoint: str) -> None:
    right = Image.eval(half_mask(), lambda v: 255 - v)
    boxes = image(easel, checkpoint, [{"box": LEFT, "prompt": "red apple"}, {"box": RIGHT, "prompt": "blue sky"}])
    painted = image(easel, checkpoint, [{"mask": b64_png(half_mask()), "prompt": "red apple"},
                                        {"mask": b64_png(right.resize((256, 256), Image.NEAREST)), "prompt": "blue sky"}])
    assert np.array_equal(boxes, painted)  # the masks shrink to each layer's grid as the boxes rasterise there


def test_a_painted_circle_changes_inside_more_than_outside(easel) -> None:
    circle = Image.new("RGBA", (64, 64), (0, 0, 0, 0))  # a transparent layer: the opaque stroke is the region
    ImageDraw.Draw(circle).ellipse([16, 16, 47, 47], fill=(255, 0, 0, 255))
    one = image(easel, "tiny-sd1", [{"mask": b64_png(circle), "prompt": "red apple"}])
    two = image(easel, "tiny-sd1", [{"mask": b64_png(circle), "prompt": "green forest tree"}])
    inside = np.zeros((64, 64), bool)
    inside[20:44, 20:44] = True
    diff = np.abs(one - two)[0].mean(-1)
    assert diff[inside].mean() > 2 * diff[~inside].mean(), (diff[inside].mean(), diff[~inside].mean())


def test_img2img_inpaint_and_batches_run_with_regions(easel) -> None:
    source = Image.fromarray(image(easel, "tiny-sd1")[0].astype(np.uint8))
    regions = [{"box": LEFT, "prompt": "red apple"}, {"box": RIGHT, "prompt": "blue sky"}]
    for kind, extra in ((Img2ImgRequest, {"init_image": source, "denoising_strength": 0.8}),
                        (InpaintRequest, {"init_image": source, "mask": half_mask(), "denoising_strength": 0.9})):
        plain = image(easel, "tiny-sd1", None, kind, **extra)
        regional = image(easel, "tiny-sd1", regions, kind, **extra)
        assert np.abs(plain - regional).mean() > 0.3, kind.__name__
    batch = image(easel, "tiny-sd1", regions, batch_size=2)
    single = image(easel, "tiny-sd1", regions, seed=SMALL["seed"] + 1)
    assert batch.shape[0] == 2 and np.abs(batch[1] - single[0]).max() <= 3  # batched rounding only
    job = easel.engine.generate(InpaintRequest(**{**SMALL, "checkpoint": "tiny-sd1", "init_image": source,
                                                  "mask": half_mask(), "inpaint_full_res": True,
                                                  "extension_args": regions_args(easel, regions)}), timeout=300)
    assert job.state == JobState.FAILED and isinstance(job.exception, RequestError)
    assert job.exception.field == f"alwayson_scripts.{NAME}" and "whole picture" in str(job.exception)


def test_the_hires_fix_pass_runs_coupled_too(easel) -> None:
    """A wrapper registered after regional prompts (so inside them) sees each pass's cross-attention processors."""
    from webui.engine.regional_attention import CoupledAttnProcessor

    seen: list[tuple[str, bool]] = []

    def record(call, run):
        processors = call.pipe.unet.attn_processors.values()
        seen.append((call.task, any(isinstance(p, CoupledAttnProcessor) for p in processors)))
        return run(call)

    easel.registry.pipeline_wrappers.append(record)
    hires = image(easel, "tiny-sd1", [{"box": LEFT, "prompt": "red apple"}], enable_hr=True, hr_scale=2.0,
                  hr_denoising_strength=0.6)
    assert hires.shape[1:3] == (128, 128) and seen == [("txt2img", True), ("img2img", True)]
    seen.clear()
    image(easel, "tiny-sd1")
    assert seen == [("txt2img", False)]


@pytest.fixture(scope="module")
def tiny_flux_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.tiny_models import make_tiny_flux

    return make_tiny_flux(tmp_path_factory.mktemp("regional-flux") / "tiny-flux")


def test_flow_families_are_refused_naming_the_family(easel, tiny_flux_dir: Path) -> None:
    shutil.copytree(tiny_flux_dir, easel.settings.data_dir / "models" / "diffusers" / "tiny-flux")
    easel.manager.refresh()
    job = easel.engine.generate(Txt2ImgRequest(**{**SMALL, "checkpoint": "tiny-flux", "cfg_scale": 1.0,
                                                  "extension_args": regions_args(easel, [{"box": LEFT, "prompt": "x"}])}),
                                timeout=300)
    assert job.state == JobState.FAILED and isinstance(job.exception, RequestError), job.error
    assert job.exception.field == f"alwayson_scripts.{NAME}"
    assert "Flux.1" in str(job.exception) and "tiny-flux" in str(job.exception)


def test_the_api_takes_regions_and_painted_masks_through_alwayson_scripts(easel) -> None:
    body = {"prompt": "a photo", "width": 64, "height": 64, "steps": 4, "seed": 3, "cfg_scale": 7,
            "sampler_name": "Euler", "override_settings": {"sd_model_checkpoint": "tiny-sdxl"}}
    grid = {"divide": "columns", "ratios": "1,1", "prompts": ["red apple", "blue sky"], "base_weight": 0.2}
    painted = {"masks": [b64_png(half_mask()), b64_png(Image.eval(half_mask(), lambda v: 255 - v))],
               "prompts": ["red apple", "blue sky"], "base_weight": 0.2}
    with api_client(easel) as client:
        plain = client.post("/sdapi/v1/txt2img", json=body)
        by_grid = client.post("/sdapi/v1/txt2img", json={**body, "alwayson_scripts": {NAME: {"args": [grid]}}})
        by_mask = client.post("/sdapi/v1/txt2img", json={**body, "alwayson_scripts": {NAME: {"args": [painted]}}})
        for answer in (plain, by_grid, by_mask):
            assert answer.status_code == 200, answer.text
        grid_pixels, mask_pixels, plain_pixels = (np.asarray(open_b64(a.json()["images"][0]).convert("RGB"))
                                                  for a in (by_grid, by_mask, plain))
        assert np.array_equal(grid_pixels, mask_pixels) and not np.array_equal(grid_pixels, plain_pixels)
        text = json.loads(by_mask.json()["info"])["infotexts"][0]
        assert 'Regional prompts: ' in text and "painted 64x64" in text

        def refused(args: dict) -> str:
            answer = client.post("/sdapi/v1/txt2img", json={**body, "alwayson_scripts": {NAME: {"args": [args]}}})
            assert answer.status_code == 422, answer.text
            assert answer.json()["field"] == f"alwayson_scripts.{NAME}"
            return answer.json()["detail"]

        assert "regions[0].mask" in refused({"regions": [{"mask": "not base64!", "prompt": "x"}]})
        assert "regions[0].mask" in refused({"regions": [{"mask": b64_png(Image.new("L", (8, 8))), "prompt": "x"}]})
        assert "box or a mask" in refused({"regions": [{"mask": b64_png(half_mask()), "box": LEFT, "prompt": "x"}]})
        assert "masks" in refused({"masks": [b64_png(half_mask())], "prompts": ["a", "b"]})
        assert "ratios: does not go with `masks`" in refused({"masks": [b64_png(half_mask())], "prompts": ["a"],
                                                            "ratios": "1"})
        assert "prompts: does not go with `regions`" in refused({"regions": [{"box": LEFT, "prompt": "a"}],
                                                                "prompts": ["b"]})


def test_a_hypernetwork_runs_inside_the_coupling(easel) -> None:
    """The coupled layers wrap the hypernetwork's processor instead of replacing it: with the region at weight 0
    the image is the hypernetwork's own, bit for bit, and at weight 1 the region changes it."""
    from tests.api.test_hypernetworks import write_hypernetwork

    write_hypernetwork(easel.settings.models_dir / "hypernetworks" / "style.safetensors")
    prompt = "a photo <hypernet:style:1>"
    styled = image(easel, "tiny-sd1", prompt=prompt)
    assert np.abs(styled - image(easel, "tiny-sd1")).mean() > 0.5  # the hypernetwork changes the picture
    off = image(easel, "tiny-sd1", [{"box": LEFT, "prompt": "red apple", "weight": 0}], prompt=prompt)
    assert np.array_equal(off, styled)
    on = image(easel, "tiny-sd1", [{"box": LEFT, "prompt": "red apple"}], prompt=prompt)
    assert np.abs(on - styled).mean() > 0.3
