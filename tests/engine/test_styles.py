"""Prompt styles through the engine on the tiny SD 1.x model: a style's text reaches the text encoder (the same seed
gives the same image as the prompt typed with the style's text), while the infotext keeps the prompt as typed."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from webui.engine.worker import JobState
from webui.infotext import parse_infotext, read_png_parameters, request_updates
from webui.requests import RequestError, Txt2ImgRequest
from webui.settings import UserSettings

SMALL = dict(width=64, height=64, steps=2, checkpoint="tiny-sd1", sampler="Euler", seed=7)
STYLES = ('name,prompt,negative_prompt\n'
          'ink,"ink wash painting of {prompt}, monochrome",blurry\n'
          'grain,film grain,"{prompt}, oversaturated"\n')


def run(easel, request):
    job = easel.engine.generate(request, timeout=120)
    assert job.state == JobState.DONE, job.error
    return job.result


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB")).astype(int)


@pytest.fixture
def easel(make_easel):
    easel = make_easel()
    (easel.settings.data_dir / "styles.csv").write_text(STYLES, encoding="utf-8")
    return easel


def test_a_style_reaches_the_encoder_and_the_infotext_keeps_the_prompt_as_typed(easel) -> None:
    styled = run(easel, Txt2ImgRequest(prompt="a red cube", negative_prompt="dark", styles=("ink", "grain"),
                                       **SMALL))
    typed = run(easel, Txt2ImgRequest(prompt="ink wash painting of a red cube, monochrome, film grain",
                                      negative_prompt="dark, blurry, oversaturated", **SMALL))
    plain = run(easel, Txt2ImgRequest(prompt="a red cube", negative_prompt="dark", **SMALL))
    assert np.array_equal(pixels(styled.images[0]), pixels(typed.images[0]))  # bit for bit
    assert not np.array_equal(pixels(styled.images[0]), pixels(plain.images[0]))
    assert styled.info["styled"] == {"prompt": "ink wash painting of a red cube, monochrome, film grain",
                                     "negative_prompt": "dark, blurry, oversaturated"}

    params = parse_infotext(read_png_parameters(Image.open(styled.paths[0])))
    assert params["Prompt"] == "a red cube" and params["Negative prompt"] == "dark"
    assert params["Styles array"] == '["ink", "grain"]'
    restored = request_updates(params, Txt2ImgRequest, known_styles=easel.styles.styles())
    assert (restored["prompt"], restored["negative_prompt"], restored["styles"]) == ("a red cube", "dark",
                                                                                    ("ink", "grain"))
    assert "Styles array" not in parse_infotext(typed.infotexts[0])


def test_an_unknown_style_is_refused_before_the_job_is_queued(easel) -> None:
    with pytest.raises(RequestError) as error:
        easel.engine.submit(Txt2ImgRequest(prompt="x", styles=("ink", "watercolour"), **SMALL))
    assert error.value.field == "styles"
    assert error.value.message == "unknown style 'watercolour'; the styles are: 'ink', 'grain'"


def test_a_style_that_makes_the_prompt_too_long_is_refused(make_easel) -> None:
    easel = make_easel(user=UserSettings(max_prompt_chars=30))
    (easel.settings.data_dir / "styles.csv").write_text(STYLES, encoding="utf-8")
    with pytest.raises(RequestError) as error:
        easel.engine.submit(Txt2ImgRequest(prompt="a red cube", styles=("ink",), **SMALL))
    assert error.value.field == "styles" and "the limit is 30" in error.value.message
