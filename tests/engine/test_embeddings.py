"""Textual-inversion embeddings on the tiny SD 1.x and SDXL models: a prompt word applies the file's vectors,
multi-vector files expand to all their tokens, emphasis weights them, prompts without the name stay bit for bit
the same, SDXL takes clip_l + clip_g, a wrong width is an error naming the prompt field, pickle files are listed
as skipped and never opened, the API lists what fits the current model, and the infotext records `TI hashes`."""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from tests.conftest import api_client
from tests.security.conftest import write_malicious_checkpoint
from tests.tiny_models import make_tiny_sdxl
from webui.engine.prompts import _weighted_tokens
from webui.engine.worker import JobState
from webui.infotext import parse_infotext, read_png_parameters, request_updates
from webui.model_manager.convert import convert_checkpoint
from webui.model_manager.embeddings import expand
from webui.model_manager.identify import Arch
from webui.model_manager.manager import LoadedPipeline
from webui.requests import Img2ImgRequest, RequestError, Txt2ImgRequest

SMALL = dict(width=64, height=64, steps=2, sampler="Euler", seed=11)
API_SMALL = {**{k: v for k, v in SMALL.items() if k != "sampler"}, "sampler_name": "Euler"}
SD1_WIDTH = 32  # the tiny SD 1.x text encoder's token width
XL_WIDTHS = (32, 64)  # the tiny SDXL's clip_l and clip_g widths


def write(path: Path, tensors: dict[str, torch.Tensor]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return path


def vectors(n: int, width: int, seed: int) -> torch.Tensor:
    return torch.randn(n, width, generator=torch.Generator().manual_seed(seed))


def short_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:10]


def run(easel, prompt: str, checkpoint: str = "tiny-sd1", **changes):
    job = easel.engine.generate(Txt2ImgRequest(prompt=prompt, checkpoint=checkpoint, **{**SMALL, **changes}),
                                timeout=120)
    assert job.state == JobState.DONE, job.error
    return job.result


def failure(easel, prompt: str, checkpoint: str = "tiny-sd1", **changes) -> RequestError:
    job = easel.engine.generate(Txt2ImgRequest(prompt=prompt, checkpoint=checkpoint, **{**SMALL, **changes}),
                                timeout=120)
    assert job.state == JobState.FAILED and isinstance(job.exception, RequestError), job.error
    return job.exception


def pixels(result) -> np.ndarray:
    return np.asarray(result.images[0].convert("RGB")).astype(int)


@pytest.fixture(scope="session")
def tiny_sdxl_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_sdxl(tmp_path_factory.mktemp("ti-sdxl") / "tiny-sdxl")


@pytest.fixture
def easel(make_easel):
    easel = make_easel()
    folder = easel.settings.models_dir / "embeddings"
    write(folder / "zqstyle.safetensors", {"emb_params": vectors(1, SD1_WIDTH, 1) * 3})
    write(folder / "nested" / "duo.safetensors", {"emb_params": vectors(2, SD1_WIDTH, 2) * 3})
    write(folder / "solo.safetensors", {"<solo>": vectors(2, SD1_WIDTH, 2)[0] * 3})  # duo's first vector, 1-D
    write(folder / "legacy.safetensors", {"string_to_param.*": vectors(2, SD1_WIDTH, 2)[:1] * 3,
                                          "string_to_token.*": torch.tensor(265)})
    write(folder / "wide.safetensors", {"emb_params": vectors(1, 64, 3)})
    write(folder / "xlstyle.safetensors", {"clip_l": vectors(2, XL_WIDTHS[0], 4) * 3,
                                           "clip_g": vectors(2, XL_WIDTHS[1], 5) * 3})
    write(folder / "broken.safetensors", {"a": torch.zeros(2, 4), "b": torch.zeros(3)})
    easel.manager.refresh_embeddings()
    return easel


def test_a_prompt_word_applies_the_embedding_and_other_prompts_stay_bit_identical(easel) -> None:
    manager = easel.manager
    before = pixels(run(easel, "a red cube"))
    shared_tokenizer = manager.get("tiny-sd1", "txt2img").pipe.tokenizer
    unknown = pixels(run(easel, "a red cube qqxv"))
    with_name = run(easel, "a red cube zqstyle")
    assert not np.array_equal(pixels(with_name), unknown)
    assert not np.array_equal(pixels(with_name), before)
    assert np.array_equal(pixels(run(easel, "a red cube")), before)  # same cached pipeline, embedding loaded
    assert np.array_equal(pixels(run(easel, "a red cube ZQStyle")), pixels(with_name))  # any case, as a word
    assert manager.embeddings_in("zqstyles, my_zqstyle, zqstyle2") == []  # only whole words
    assert "<ti-" not in str(shared_tokenizer.get_added_vocab())  # the tokenizer it had was copied, not changed
    pipes = [manager.get("tiny-sd1", mode).pipe for mode in ("txt2img", "img2img", "inpaint")]
    assert all(p.tokenizer is pipes[0].tokenizer and p.tokenizer is not shared_tokenizer for p in pipes)
    assert manager.stats["disk_loads"] == 1

    # Emphasis weights the embedding like any word; the negative prompt takes embeddings too.
    emphasised = run(easel, "a red cube (zqstyle:1.4)")
    assert not np.array_equal(pixels(emphasised), pixels(with_name))
    negative = run(easel, "a red cube", negative_prompt="zqstyle")
    assert not np.array_equal(pixels(negative), before)
    path = easel.settings.models_dir / "embeddings" / "zqstyle.safetensors"
    assert parse_infotext(negative.infotexts[0])["TI hashes"] == f"zqstyle: {short_hash(path)}"

    # img2img (a from_pipe view of the same weights) uses it as well.
    job = easel.engine.generate(Img2ImgRequest(prompt="zqstyle", checkpoint="tiny-sd1", init_image=with_name.images[0],
                                               denoising_strength=0.5, **SMALL), timeout=120)
    assert job.state == JobState.DONE, job.error
    assert parse_infotext(job.result.infotexts[0])["TI hashes"].startswith("zqstyle: ")


def test_infotext_records_ti_hashes_and_png_info_reads_them(easel) -> None:
    path = easel.settings.models_dir / "embeddings" / "zqstyle.safetensors"
    result = run(easel, "a red cube, (zqstyle:1.2)", negative_prompt="duo")
    saved = read_png_parameters(Image.open(result.paths[0]))
    duo = easel.settings.models_dir / "embeddings" / "nested" / "duo.safetensors"
    assert f'TI hashes: "zqstyle: {short_hash(path)}, duo: {short_hash(duo)}"' in saved
    params = parse_infotext(saved)
    assert params["Prompt"] == "a red cube, (zqstyle:1.2)" and params["Negative prompt"] == "duo"
    assert params["Seed"] == str(SMALL["seed"])
    updates = request_updates(params, Txt2ImgRequest)
    again = run(easel, updates["prompt"], negative_prompt=updates["negative_prompt"])
    assert np.array_equal(pixels(again), pixels(result))
    assert "TI hashes" not in parse_infotext(run(easel, "a red cube").infotexts[0])

    # AUTOMATIC1111's own infotext with TI hashes (and Lora hashes) parses too.
    a1111 = ("masterpiece, EasyNegative\nNegative prompt: bad-hands-5\nSteps: 20, Sampler: DPM++ 2M, CFG scale: 7, "
             'Seed: 5, Size: 512x512, Model hash: 6ce0161689, TI hashes: "EasyNegative: c74b4e810b03, bad-hands-5: '
             'aa7651be15", Version: v1.10.1')
    parsed = parse_infotext(a1111)
    assert parsed["TI hashes"] == "EasyNegative: c74b4e810b03, bad-hands-5: aa7651be15"
    assert parsed["Version"] == "v1.10.1" and parsed["Negative prompt"] == "bad-hands-5"
    assert request_updates(parsed, Txt2ImgRequest)["steps"] == 20


def test_multi_vector_embeddings_expand_to_every_vector(easel) -> None:
    manager = easel.manager
    loaded = manager.get("tiny-sd1", "txt2img")
    found = manager.embeddings_in("a duo, solo and legacy")
    assert [e.name for e in found] == ["duo", "solo", "legacy"]
    duo, solo, legacy = manager.apply_embeddings(loaded, found)
    assert len(duo.tokens) == 2 and len(solo.tokens) == 1 and len(legacy.tokens) == 1
    tokenizer = loaded.pipe.tokenizer
    duo_ids, _ = _weighted_tokens(tokenizer, expand("a (duo:1.2) cat", [duo]))
    solo_ids, weights = _weighted_tokens(tokenizer, expand("a (solo:1.2) cat", [solo]))
    assert len(duo_ids) == len(solo_ids) + 1
    assert duo_ids[1:3] == tokenizer.convert_tokens_to_ids(list(duo.tokens)) and weights[1] == pytest.approx(1.2)
    rows = loaded.pipe.text_encoder.get_input_embeddings().weight
    assert torch.equal(rows[duo_ids[1:3]], vectors(2, SD1_WIDTH, 2) * 3)

    two, one = pixels(run(easel, "a red cube duo")), pixels(run(easel, "a red cube solo"))
    assert not np.array_equal(two, one)
    assert np.array_equal(pixels(run(easel, "a red cube legacy")), one)  # string_to_param.* = the same vector
    assert len(manager.apply_embeddings(loaded, found)) == 3 and len(tokenizer) == len(loaded.pipe.tokenizer)


def test_sdxl_takes_clip_l_and_clip_g(easel, tiny_sdxl_dir) -> None:
    shutil.copytree(tiny_sdxl_dir, easel.settings.models_dir / "diffusers" / "tiny-sdxl")
    easel.manager.refresh()
    before = pixels(run(easel, "a red cube", "tiny-sdxl"))
    unknown = pixels(run(easel, "a red cube qqxv", "tiny-sdxl"))
    with_name = run(easel, "a red cube [xlstyle]", "tiny-sdxl")
    assert not np.array_equal(pixels(with_name), unknown)
    assert np.array_equal(pixels(run(easel, "a red cube", "tiny-sdxl")), before)
    assert "TI hashes" in parse_infotext(with_name.infotexts[0])
    pipe = easel.manager.get("tiny-sdxl", "txt2img").pipe
    for tokenizer, encoder, tensor in ((pipe.tokenizer, pipe.text_encoder, vectors(2, XL_WIDTHS[0], 4)),
                                       (pipe.tokenizer_2, pipe.text_encoder_2, vectors(2, XL_WIDTHS[1], 5))):
        ids = [i for t, i in tokenizer.get_added_vocab().items() if t.startswith("<ti-")]
        assert len(ids) == 2
        assert torch.equal(encoder.get_input_embeddings().weight[sorted(ids)], tensor * 3)

    # An SD 1.x-style embedding on SDXL, and the SDXL one on SD 1.x: the field, the embedding and both widths.
    error = failure(easel, "a red cube zqstyle", "tiny-sdxl")
    assert error.field == "prompt"
    assert "'zqstyle'" in str(error) and "32 wide" in str(error) and "clip_g 64" in str(error)
    error = failure(easel, "a red cube", "tiny-sd1", negative_prompt="xlstyle")
    assert error.field == "negative_prompt"
    assert "'xlstyle'" in str(error) and "clip_g 64" in str(error) and "32-wide" in str(error)


def test_a_wrong_width_is_a_prompt_error_and_the_model_keeps_working(easel) -> None:
    before = pixels(run(easel, "a red cube"))
    error = failure(easel, "a red cube, wide")
    assert error.field == "prompt"
    message = str(error)
    assert "'wide'" in message and "64 wide" in message and "32-wide" in message and "tiny-sd1" in message
    assert np.array_equal(pixels(run(easel, "a red cube")), before)
    assert "TI hashes" not in parse_infotext(run(easel, "a red cube broken").infotexts[0])  # unusable: plain text


def test_pickles_are_listed_as_skipped_and_never_opened(easel, tmp_path) -> None:
    marker = tmp_path / "pwned.txt"
    folder = easel.settings.models_dir / "embeddings"
    write_malicious_checkpoint(folder / "evil.pt", marker)
    write_malicious_checkpoint(folder / "evil2.bin", marker)
    easel.manager.refresh_embeddings()
    entries = {e.name: e for e in easel.manager.embeddings()}
    for name in ("evil", "evil2"):
        assert not entries[name].usable and "python -m webui.model_manager.convert" in entries[name].reason
    result = run(easel, "evil evil2")  # plain words: nothing is loaded
    assert "TI hashes" not in parse_infotext(result.infotexts[0])
    assert not marker.exists()

    # A tensors-only AUTOMATIC1111 .pt converts (weights-only) to a file that loads.
    source = folder / "a1111.pt"
    torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": vectors(3, SD1_WIDTH, 9)}, "name": "a1111",
                "step": 500}, str(source))
    convert_checkpoint(source)
    easel.manager.refresh_embeddings()
    converted = {e.name: e for e in easel.manager.embeddings()}["a1111"]
    assert converted.usable and converted.vectors == 3 and converted.path.suffix == ".safetensors"
    assert "TI hashes" in parse_infotext(run(easel, "a a1111 cube").infotexts[0])


def test_api_lists_what_fits_the_current_model(easel, tmp_path) -> None:
    write_malicious_checkpoint(easel.settings.models_dir / "embeddings" / "evil.pt", tmp_path / "pwned.txt")
    easel.manager.refresh_embeddings()
    with api_client(easel) as client:
        listed = client.get("/sdapi/v1/embeddings").json()  # no model loaded yet: every readable file
        assert set(listed["loaded"]) == {"zqstyle", "duo", "solo", "legacy", "wide", "xlstyle"}
        assert set(listed["skipped"]) == {"broken", "evil"}
        assert "convert" in listed["skipped"]["evil"]["reason"]

        run(easel, "a red cube")
        listed = client.get("/sdapi/v1/embeddings").json()
        assert listed["loaded"]["duo"] == {"step": None, "sd_checkpoint": None, "sd_checkpoint_name": None,
                                           "shape": SD1_WIDTH, "vectors": 2}
        assert set(listed["loaded"]) == {"zqstyle", "duo", "solo", "legacy"}
        assert set(listed["skipped"]) == {"broken", "evil", "wide", "xlstyle"}
        assert listed["skipped"]["xlstyle"]["shape"] == sum(XL_WIDTHS)
        assert listed["skipped"]["xlstyle"]["vectors"] == 2
        assert "64 wide" in listed["skipped"]["wide"]["reason"]

        response = client.post("/sdapi/v1/txt2img", json={"prompt": "a (wide:1.1) cube", **API_SMALL})
        assert response.status_code == 422 and response.json()["field"] == "prompt"
        assert "'wide'" in response.json()["detail"]
        response = client.post("/sdapi/v1/txt2img", json={"prompt": "a red cube", "negative_prompt": "duo", **API_SMALL})
        assert response.status_code == 200 and "TI hashes" in response.json()["info"]

        write(easel.settings.models_dir / "embeddings" / "late.safetensors", {"emb_params": vectors(4, SD1_WIDTH, 7)})
        assert client.post("/sdapi/v1/refresh-embeddings").status_code == 200
        assert client.get("/sdapi/v1/embeddings").json()["loaded"]["late"]["vectors"] == 4
    assert not (tmp_path / "pwned.txt").exists()


def test_flow_models_take_the_name_as_plain_text(easel) -> None:
    loaded = easel.manager.get("tiny-sd1", "txt2img")
    flux = LoadedPipeline(pipe=loaded.pipe, entry=loaded.entry, arch=Arch.FLUX, mode="txt2img")
    assert easel.manager.apply_embeddings(flux, easel.manager.embeddings_in("zqstyle")) == []
    assert "<ti-" not in str(loaded.pipe.tokenizer.get_added_vocab())
