"""Prompt matrix and Prompts from file or textbox on the tiny SD 1.x model."""
from __future__ import annotations

import pytest

from webui.engine.script_job import ScriptJob
from webui.engine.worker import JobState
from webui.infotext import parse_infotext
from webui.requests import Txt2ImgRequest

BASE = Txt2ImgRequest(prompt="a ball", negative_prompt="blur", width=64, height=64, steps=2, seed=11,
                      checkpoint="tiny-sd1")


def script(easel, name, request, args) -> ScriptJob:
    job = easel.registry.scripts[name].run(request, args)
    assert isinstance(job, ScriptJob)
    return job


def test_prompt_matrix_makes_every_combination(make_easel):
    easel = make_easel()
    job = script(easel, "prompt matrix", BASE.replace(prompt="a ball | red | in the sky"),
                 [False, True, "positive", "comma", 2])
    assert [r.prompt for r in job.requests] == ["a ball", "a ball, red", "a ball, in the sky",
                                                "a ball, red, in the sky"]
    assert [r.seed for r in job.requests] == [11, 12, 13, 14]  # different seeds
    at_start = script(easel, "prompt matrix", BASE.replace(negative_prompt="blur | dark"),
                      [True, False, "negative", "space", 0])
    assert [r.negative_prompt for r in at_start.requests] == ["blur", "dark blur"]
    assert {r.seed for r in at_start.requests} == {11}
    done = easel.engine.generate(job, source="ui", timeout=600)
    assert done.state == JobState.DONE, done.error
    result = done.result
    assert len(result.images) == 1 + 4 and result.info["grids"] == 1
    assert [parse_infotext(t)["Prompt"] for t in result.infotexts[1:]] == [r.prompt for r in job.requests]
    assert parse_infotext(result.infotexts[0])["Script"] == "Prompt matrix"
    grid = result.images[0]
    assert grid.width > 2 * 64 and grid.height > 2 * 64  # 2 x 2 cells with labels
    assert result.paths[0].parent.parent.name == "txt2img-grids"
    with pytest.raises(ValueError, match="no '\\|' parts"):
        script(easel, "prompt matrix", BASE, [])
    three = script(easel, "prompt matrix", BASE.replace(prompt="a ball | red | big | at night"), [])
    assert len(three.requests) == 2 ** 3 and len({r.prompt for r in three.requests}) == 8  # every subset, once
    assert three.grids[0].columns * 2 == len(three.grids[0].cells) == 8  # one grid of 4 x 2


def test_prompts_from_file_per_line_options(make_easel):
    easel = make_easel()
    text = ('a red ball\n\n'
            '--prompt "a blue cube" --steps 1 --cfg_scale 5 --seed 3 --negative_prompt "ugly, dark" '
            '--sampler_name "Euler a" --width 72\n'
            '--prompt "a green cone" --n_iter 2\n')
    job = script(easel, "prompts from file or textbox", BASE, [True, False, "end", text])
    done = easel.engine.generate(job, source="ui", timeout=600)
    assert done.state == JobState.DONE, done.error
    result = done.result
    assert result.info["grids"] == 0 and len(result.images) == 4 and done.batch_total == 4
    params = [parse_infotext(t) for t in result.infotexts]
    assert [p["Prompt"] for p in params] == ["a ball a red ball", "a ball a blue cube", "a ball a green cone",
                                             "a ball a green cone"]
    second = params[1]
    assert (second["Steps"], second["CFG scale"], second["Seed"], second["Negative prompt"], second["Sampler"],
            second["Size"]) == ("1", "5", "3", "ugly, dark", "Euler a", "72x64")
    assert [p["Seed"] for p in params] == ["11", "3", "13", "14"]  # iterate seed every line (line 3: 11 + 2)
    assert result.images[1].size == (72, 64)


def test_prompts_from_file_errors_name_the_line(make_easel):
    easel = make_easel()
    run = easel.registry.scripts["prompts from file or textbox"].run
    with pytest.raises(ValueError, match="line 2: unknown option --colour"):
        run(BASE, [False, False, "a\n--prompt b --colour red"])
    with pytest.raises(ValueError, match="line 1: --steps: 'ten' is not a valid value"):
        run(BASE, [False, False, "start", "--steps ten"])
    with pytest.raises(ValueError, match="give at least one line"):
        run(BASE, [False, False, "end", "  \n"])


def test_an_extension_script_from_the_ui_runs_as_one_job(make_easel, tmp_path):
    from webui.extensions import ExtensionAPI
    from webui.requests import RequestError

    easel = make_easel()
    api = ExtensionAPI(easel, easel.registry, "sweep", tmp_path)

    def sweep(request, args):
        if not args or not isinstance(args[0], list):
            raise ValueError("args[0] must be a list of words")
        return [request.replace(prompt=f"{request.prompt}, {word}") for word in args[0]]

    api.add_script("Word sweep", sweep, args=("words",))
    assert "Word sweep".lower() in easel.script_titles("img2img").values()
    job = easel.script_job("word sweep", BASE, [["red", "blue"]])
    assert isinstance(job, ScriptJob)
    done = easel.engine.generate(job, source="ui", timeout=600)
    assert done.state == JobState.DONE and done.batch_total == 2
    assert [parse_infotext(t)["Prompt"] for t in done.result.infotexts] == ["a ball, red", "a ball, blue"]
    with pytest.raises(RequestError) as bad:
        easel.script_job("word sweep", BASE, ["red"])
    assert bad.value.field == "script_args" and "args[0]" in bad.value.message
    with pytest.raises(RequestError) as unknown:
        easel.script_job("loopback wave", BASE, [])
    assert unknown.value.field == "script_name"
    with pytest.raises(ValueError, match="already registered"):
        api.add_script("X/Y/Z plot", sweep)
