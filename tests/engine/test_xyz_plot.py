"""X/Y/Z plot on the tiny SD 1.x model: the cells, their order and infotext, the grids and their files, a checkpoint
axis loading each model once, the value syntax, and bad values named by axis."""
from __future__ import annotations

import logging
import shutil

import pytest
from PIL import Image

from webui.engine.script_job import ScriptJob
from webui.engine.worker import JobState
from webui.infotext import parse_infotext, read_png_parameters
from webui.requests import Img2ImgRequest, RequestError, Txt2ImgRequest
from webui.scripts.values import float_values, int_values, split_values

BASE = Txt2ImgRequest(prompt="a red ball", width=64, height=64, steps=2, seed=7, checkpoint="tiny-sd1")


def plot_job(easel, request, args) -> ScriptJob:
    job = easel.registry.scripts["x/y/z plot"].run(request, args)
    assert isinstance(job, ScriptJob)
    return job


def test_value_syntax():
    assert int_values("1-5") == [1, 2, 3, 4, 5]
    assert int_values("1-5 (+2)") == [1, 3, 5]
    assert int_values("10-1 (-3)") == [10, 7, 4, 1]
    assert int_values("1-10 [5]") == [1, 3, 5, 7, 10]
    assert int_values("3, 7, -1") == [3, 7, -1]
    assert float_values("0.5-1.5 (+0.25)") == [0.5, 0.75, 1.0, 1.25, 1.5]
    assert float_values("0-1 [3]") == [0.0, 0.5, 1.0]
    assert float_values("7, 7.5") == [7.0, 7.5]
    assert split_values('"a, b", c ,, d') == ["a, b", "c", "d"]
    with pytest.raises(ValueError, match="'x' is not a whole number"):
        int_values("1, x")
    with pytest.raises(ValueError, match="never goes"):
        int_values("1-5 (-1)")


def test_two_by_two_grid_order_and_infotext(make_easel):
    easel = make_easel()
    job = plot_job(easel, BASE, ["Steps", "1, 2", [], "CFG Scale", "3, 7.5", [], "Nothing", "", [],
                                 True, True, False, False, False, False, False, 0, False])
    done = easel.engine.generate(job, source="ui", timeout=600)
    assert done.state == JobState.DONE, done.error
    result = done.result
    assert len(result.images) == 5 and result.info["grids"] == 1
    grid, cells = result.images[0], result.images[1:]
    assert all(img.size == (64, 64) for img in cells)
    # two columns and two rows of 64 px cells, plus the label bands above and to the left
    assert grid.width > 128 and grid.height > 128 and (grid.width - 128) < 200 and (grid.height - 128) < 100
    params = [parse_infotext(text) for text in result.infotexts[1:]]
    assert [(p["Steps"], p["CFG scale"]) for p in params] == [("1", "3"), ("2", "3"), ("1", "7.5"), ("2", "7.5")]
    assert {p["Seed"] for p in params} == {"7"}  # one seed for every cell
    # the cells sit in the grid in that order: the bottom-right 64x64 block is the last image
    right, bottom = grid.width, grid.height
    assert list(grid.crop((right - 64, bottom - 64, right, bottom)).getdata()) == list(cells[3].convert("RGB").getdata())
    assert list(grid.crop((right - 128, bottom - 128, right - 64, bottom - 64)).getdata()) == \
        list(cells[0].convert("RGB").getdata())
    grid_info = parse_infotext(result.infotexts[0])
    assert grid_info["Script"] == "X/Y/Z plot" and grid_info["X Type"] == "Steps" and grid_info["X Values"] == "1, 2"
    assert grid_info["Y Type"] == "CFG Scale" and grid_info["Steps"] == "1"
    saved = result.paths[0]
    assert saved.parent.parent.name == "txt2img-grids"
    assert parse_infotext(read_png_parameters(Image.open(saved)))["Y Values"] == "3, 7.5"
    assert all(p.parent.parent.name == "txt2img-images" for p in result.paths[1:]) and len(result.paths) == 5
    # the progress counted the whole plot: four batches
    assert done.batch_total == 4


def test_two_by_two_by_two_with_a_checkpoint_axis_loads_each_once(make_easel, tiny_sd1_dir, tmp_path, caplog):
    models = tmp_path / "data" / "models" / "diffusers"
    models.mkdir(parents=True)
    shutil.copytree(tiny_sd1_dir, models / "tiny-b")
    easel = make_easel()
    caplog.set_level(logging.INFO, logger="webui.model_manager.manager")
    # the checkpoint is the X axis (the fastest-changing one in the grid), yet runs outermost
    job = plot_job(easel, BASE, [11, "tiny-sd1, tiny-b", [], 4, "1-2", [], "Seed", "5, 6", [],
                                 True, True, True, False, False, False, False, 2, False])
    assert job.run_order() == [0, 2, 4, 6, 1, 3, 5, 7]
    done = easel.engine.generate(job, source="ui", timeout=900)
    assert done.state == JobState.DONE, done.error
    loads = [r.getMessage() for r in caplog.records if r.getMessage().startswith("loading ")]
    assert [m.split()[1] for m in loads] == ["tiny-sd1", "tiny-b"]
    result = done.result
    assert result.info["grids"] == 3 and len(result.images) == 3 + 8  # the Z grid, its two sub-grids, the images
    params = [parse_infotext(t) for t in result.infotexts[3:]]
    assert [(p["Model"], p["Steps"], p["Seed"]) for p in params] == [
        (m, s, seed) for seed in ("5", "6") for s in ("1", "2") for m in ("tiny-sd1", "tiny-b")]
    main, first_sub = result.images[0], result.images[1]
    assert main.width > 2 * first_sub.width  # two sub-grids side by side, with a margin
    assert parse_infotext(result.infotexts[0])["Z Type"] == "Seed"
    assert "Z Type" not in parse_infotext(result.infotexts[1])
    # each sub-grid holds its Z value's four cells, row by row (X across, Y down), 2 px apart; the Z grid holds
    # the two sub-grids side by side (2 px apart) under their titles
    cells = result.images[3:]
    for number, sub in enumerate(result.images[1:3]):
        assert sub.size == (first_sub.width, first_sub.height)
        for index in range(4):
            row, column = divmod(index, 2)
            x, y = sub.width - 64 - (1 - column) * 66, sub.height - 64 - (1 - row) * 66
            assert pixels(sub.crop((x, y, x + 64, y + 64))) == pixels(cells[4 * number + index]), (number, index)
    assert main.width == 2 * first_sub.width + 2 and main.height > first_sub.height
    top = main.height - first_sub.height
    assert pixels(main.crop((0, top, first_sub.width, main.height))) == pixels(result.images[1])
    assert pixels(main.crop((first_sub.width + 2, top, main.width, main.height))) == pixels(result.images[2])
    grid_params = [parse_infotext(t) for t in result.infotexts[:3]]
    assert [p["Seed"] for p in grid_params] == ["5", "5", "6"]  # each grid: its first cell's infotext + the axes
    assert all(p["X Type"] == "Checkpoint name" and p["Y Type"] == "Steps" for p in grid_params)


def pixels(image: Image.Image) -> list:
    return list(image.convert("RGB").getdata())


def test_bad_values_name_the_axis(make_easel):
    easel = make_easel()
    with pytest.raises(ValueError, match=r"X axis \(Steps\): 'many' is not a whole number"):
        plot_job(easel, BASE, ["Steps", "1, many"])
    with pytest.raises(ValueError, match="Y type: no txt2img axis named 'Colour'"):
        plot_job(easel, BASE, ["Steps", "1", [], "Colour", "1"])
    with pytest.raises(ValueError, match="'Sigma Churn' is not supported"):
        plot_job(easel, BASE, ["Sigma Churn", "1"])
    with pytest.raises(ValueError, match="no checkpoint named 'nope'"):
        plot_job(easel, BASE, ["Checkpoint name", "nope"])
    job = plot_job(easel, BASE, ["Steps", "1, 5000"])
    with pytest.raises(RequestError) as caught:
        easel.engine.submit(job)
    assert caught.value.field == "script_args" and "Steps = 5000" in caught.value.message


def test_prompt_sr_and_order(make_easel):
    easel = make_easel()
    job = plot_job(easel, BASE.replace(prompt="a red ball, sky, grass"),
                   ["Prompt S/R", "red, blue", [], "Prompt order", "sky, grass"])
    assert [r.prompt for r in job.requests] == ["a red ball, sky, grass", "a blue ball, sky, grass",
                                                "a red ball, grass, sky", "a blue ball, grass, sky"]
    with pytest.raises(ValueError, match="'green' is in neither"):
        plot_job(easel, BASE, ["Prompt S/R", "green, blue"])


def requests_of(easel, request, axis, values):
    return plot_job(easel, request, [axis, values]).requests


def test_each_axis_sets_its_field(make_easel):
    easel = make_easel()
    hires = BASE.replace(enable_hr=True)
    assert [r.seed for r in requests_of(easel, BASE, "Seed", "1, 2")] == [1, 2]
    assert [r.subseed for r in requests_of(easel, BASE, "Var. seed", "4, 5")] == [4, 5]
    assert [r.subseed_strength for r in requests_of(easel, BASE, "Var. strength", "0-1 [3]")] == [0.0, 0.5, 1.0]
    assert [r.hr_second_pass_steps for r in requests_of(easel, hires, "Hires steps", "1-3")] == [1, 2, 3]
    assert [r.sampler for r in requests_of(easel, BASE, "Sampler", "euler a, DDIM")] == ["Euler a", "DDIM"]
    assert [r.hr_sampler_name for r in requests_of(easel, hires, "Hires sampler", "Euler")] == ["Euler"]
    assert [r.scheduler for r in requests_of(easel, BASE, "Schedule type", "Karras, Uniform")] == ["Karras",
                                                                                                     "Uniform"]
    assert [r.clip_skip for r in requests_of(easel, BASE, "Clip skip", "1, 2")] == [1, 2]
    assert [r.hr_denoising_strength for r in requests_of(easel, hires, "Denoising", "0.3")] == [0.3]
    assert [r.hr_upscaler for r in requests_of(easel, hires, "Hires upscaler", "latent, Lanczos")] == \
        ["Latent", "Lanczos"]
    assert [r.vae for r in requests_of(easel, BASE, "VAE", "Automatic, None")] == ["Automatic", "None"]
    assert [r.styles for r in requests_of(easel, BASE.replace(styles=("a",)), "Styles", "b, c")] == \
        [("a", "b"), ("a", "c")]
    assert [r.refiner_checkpoint for r in requests_of(easel, BASE, "Refiner checkpoint", "None, tiny-sd1")] == \
        ["None", "tiny-sd1"]
    refined = BASE.replace(refiner_checkpoint="tiny-sd1")
    assert [r.refiner_switch_at for r in requests_of(easel, refined, "Refiner switch at", "0.5, 0.7")] == [0.5, 0.7]
    assert [(r.width, r.height) for r in requests_of(easel, BASE, "Size", "64x96, 128X64")] == [(64, 96), (128, 64)]
    lora = BASE.replace(prompt="a cat <lora:ink:1>")
    assert [r.prompt for r in requests_of(easel, lora, "LoRA weight", "0, 0.5")] == \
        ["a cat <lora:ink:0>", "a cat <lora:ink:0.5>"]
    assert [r.prompt for r in requests_of(easel, BASE, "LoRA weight", "ink:0.25")] == ["a red ball <lora:ink:0.25>"]
    assert len(requests_of(easel, BASE, "Nothing", "")) == 1
    img2img = plot_job(easel, Img2ImgRequest(prompt="x", width=64, height=64, steps=2, seed=1,
                                             init_image=Image.new("RGB", (64, 64))), ["Denoising", "0.2, 0.4"])
    assert [r.denoising_strength for r in img2img.requests] == [0.2, 0.4]
    # hires settings while the hires fix is off, a switch point without a refiner: refused, naming the axis
    with pytest.raises(ValueError, match="Hires steps: enable Hires. fix"):
        requests_of(easel, BASE, "Hires steps", "2")
    with pytest.raises(ValueError, match="Refiner switch at: pick a refiner"):
        requests_of(easel, BASE, "Refiner switch at", "0.5")
    with pytest.raises(ValueError, match="Size: 'big' is not a size"):
        requests_of(easel, BASE, "Size", "big")
    with pytest.raises(ValueError, match="LoRA weight: the prompt has no"):
        requests_of(easel, BASE, "LoRA weight", "0.5")


def test_seeds_fixed_kept_and_varied(make_easel):
    easel = make_easel()
    random_seed = BASE.replace(seed=-1)
    fixed = plot_job(easel, random_seed, ["Steps", "1, 2"])
    assert len({r.seed for r in fixed.requests}) == 1 and fixed.requests[0].seed >= 0
    kept = plot_job(easel, random_seed, ["Steps", "1, 2", [], 0, "", [], 0, "", [], True, False, False, True])
    assert [r.seed for r in kept.requests] == [-1, -1]
    varied = plot_job(easel, BASE, ["Steps", "1, 2", [], "CFG Scale", "3, 4", [], 0, "", [], True, False, False,
                                    False, True, True, False])
    assert [r.seed for r in varied.requests] == [7, 8, 9, 10]


def test_interrupt_keeps_the_cells_made(make_easel):
    easel = make_easel()

    def interrupt_at_the_third_cell(request):
        if request.steps == 3:
            easel.engine.worker.interrupt()  # the running job: the plot
        return request

    easel.registry.before_generate.append(interrupt_at_the_third_cell)
    plot = plot_job(easel, BASE, ["Steps", "1, 2, 3, 4", [], 0, "", [], 0, "", [], True, True])
    job = easel.engine.submit(plot, source="ui")
    job.wait(600)
    assert job.state == JobState.INTERRUPTED
    result = job.result
    assert result.info["grids"] == 1 and len(result.images) == 1 + 2  # the grid, then the two cells made
    assert [parse_infotext(t)["Steps"] for t in result.infotexts[1:]] == ["1", "2"]


def test_skip_ends_one_cell_and_the_plot_goes_on(make_easel):
    easel = make_easel()

    def skip_the_second_seed(call, run):
        if call.request.seed == 2:
            easel.engine.worker.skip()  # seen by the step callback after the first of the two steps
        return run(call)

    easel.registry.pipeline_wrappers.append(skip_the_second_seed)
    plot = plot_job(easel, BASE, ["Seed", "1, 2, 3", [], 0, "", [], 0, "", [], True, True])
    done = easel.engine.generate(plot, source="ui", timeout=600)
    assert done.state == JobState.DONE and len(done.result.images) == 1 + 3
    assert [parse_infotext(t)["Seed"] for t in done.result.infotexts[1:]] == ["1", "2", "3"]
    easel.registry.pipeline_wrappers.clear()
    whole = easel.engine.generate(BASE.replace(seed=2), source="ui", timeout=600)
    skipped = done.result.images[2]
    assert list(skipped.getdata()) != list(whole.result.images[0].getdata())  # stopped after one step
    third = easel.engine.generate(BASE.replace(seed=3), source="ui", timeout=600)
    assert list(done.result.images[3].getdata()) == list(third.result.images[0].getdata())  # not skipped


def test_a_checkpoint_axis_lets_the_cache_limit_drop_the_models_it_is_done_with(make_easel, tiny_sd1_dir, tmp_path):
    from webui.settings import UserSettings

    models = tmp_path / "data" / "models" / "diffusers"
    models.mkdir(parents=True)
    shutil.copytree(tiny_sd1_dir, models / "tiny-b")
    easel = make_easel(user=UserSettings(ram_cache_size=1))
    job = plot_job(easel, BASE.replace(steps=1), ["Checkpoint name", "tiny-sd1, tiny-b"])
    done = easel.engine.generate(job, source="ui", timeout=600)
    assert done.state == JobState.DONE, done.error
    # one checkpoint kept: the first was let go once its cells were made, not held to the end of the plot
    assert easel.manager.loaded_names() == ["tiny-b"]
