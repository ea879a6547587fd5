"""The image browser's index learns of each image the engine saves, without a rescan: a txt2img generation on the
tiny SD 1.x model and an Extras upscale; a listener that fails never fails the job."""
from __future__ import annotations

from PIL import Image

from webui.engine.worker import JobState
from webui.gallery_index import Query
from webui.requests import Txt2ImgRequest


def test_saved_images_are_indexed_at_once(make_easel) -> None:
    easel = make_easel()
    index = easel.gallery
    job = easel.engine.generate(Txt2ImgRequest(prompt="a lonely lighthouse", seed=321, width=64, height=64, steps=2,
                                               checkpoint="tiny-sd1", sampler="Euler"), timeout=120)
    assert job.state == JobState.DONE, job.error
    [path] = job.result.paths
    found = index.search(Query(words="lighthouse"))
    assert [e.path for e in found.items] == [path.relative_to(easel.settings.outputs_dir).as_posix()]
    entry = found.items[0]
    assert (entry.seed, entry.model, entry.mode, entry.width) == (321, "tiny-sd1", "txt2img", 64)

    upscaled = easel.upscale(Image.new("RGB", (16, 16), (9, 9, 9)), "Lanczos", scale=2.0)
    assert upscaled.wait(60) and upscaled.error is None
    assert [e.width for e in index.search(Query(mode="extras")).items] == [32]
    assert index.rescan().added == 0  # nothing was left for the rescan to find


def test_a_failing_listener_never_fails_the_job(make_easel) -> None:
    easel = make_easel()

    def broken(path) -> None:
        raise RuntimeError("index unavailable")

    easel.engine.saved_listeners.insert(0, broken)
    job = easel.engine.generate(Txt2ImgRequest(prompt="still saved", seed=1, width=64, height=64, steps=2,
                                               checkpoint="tiny-sd1", sampler="Euler"), timeout=120)
    assert job.state == JobState.DONE, job.error
    assert job.result.paths[0].is_file()
    assert easel.gallery.search(Query(words="saved")).total == 1  # the listeners after it still ran
