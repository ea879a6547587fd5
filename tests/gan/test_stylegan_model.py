"""Easel's StyleGAN2/3 networks on tiny random generators, read from files as users have them: the same seed gives the
same image; ψ = 0 gives the average-w image for every seed; a conditional generator's class changes the image; a
seed walk has (seeds − 1) × frames + 1 frames and passes through each seed's own image; pickles are read tensors-only
and one that would run code is refused without running it."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tests import tiny_gan
from webui.gan.build import GeneratorFileError, describe, load_generator
from webui.gan.pipeline import StyleGANPipeline, gif_bytes


def pipeline(path) -> StyleGANPipeline:
    return StyleGANPipeline(load_generator(path))


def pixels(image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


@pytest.mark.parametrize("name, label", [("sg2-64", "StyleGAN2 generator, 64×64, unconditional"),
                                         ("sg2-cond", "StyleGAN2 generator, 32×32, 5 classes"),
                                         ("sg3-t", "StyleGAN3-T generator, 32×32, unconditional"),
                                         ("sg3-r-cond", "StyleGAN3-R generator, 32×32, 4 classes")])
def test_the_architecture_is_read_from_the_tensors(gan_files, name, label):
    assert describe(gan_files[name]).label.startswith(label)


@pytest.mark.parametrize("name, cls", [("sg2-64", None), ("sg3-t", None), ("sg3-r-cond", 2)])
def test_same_seed_same_image_and_psi_zero_is_the_average_image(gan_files, name, cls):
    pipe = pipeline(gan_files[name])
    first, other = pipe([7, 8], cls, 0.7)
    again = pipe([7], cls, 0.7)[0]
    assert np.array_equal(pixels(first), pixels(again))  # batch or alone, the same seed draws the same image
    assert np.abs(pixels(first) - pixels(other)).max() > 0
    average = pipe([1, 2, 3], cls, 0.0)
    assert all(np.array_equal(pixels(average[0]), pixels(image)) for image in average[1:])
    with torch.no_grad():  # ψ = 0 is w_avg itself, fed to the synthesis network
        config = pipe.generator.config
        ws = pipe.generator.mapping.w_avg.repeat(1, config.num_ws, 1)
        expected = pipe.synthesize(ws)[0]
    assert np.array_equal(pixels(average[0]), pixels(expected))


@pytest.mark.parametrize("name", ["sg2-cond", "sg3-r-cond"])
def test_the_class_changes_a_conditional_generators_image(gan_files, name):
    pipe = pipeline(gan_files[name])
    zero, one = pipe([5], 0, 1.0)[0], pipe([5], 1, 1.0)[0]
    assert np.abs(pixels(zero) - pixels(one)).max() > 0
    with pytest.raises(ValueError, match="classes: give a class from 0 to"):
        pipe([5], None, 1.0)


@pytest.mark.parametrize("space", ["z", "w"])
def test_a_seed_walk_passes_through_each_seeds_image(gan_files, space):
    pipe = pipeline(gan_files["sg2-64"])
    seeds = [3, 9, 4]
    frames = pipe.walk(seeds, 4, None, 0.8, space)
    assert len(frames) == (len(seeds) - 1) * 4 + 1
    own = pipe(seeds, None, 0.8)
    for index, image in zip((0, 4, 8), own):
        assert np.array_equal(pixels(frames[index]), pixels(image))
    assert np.abs(pixels(frames[1]) - pixels(frames[0])).max() > 0  # in between: neither seed's image
    from PIL import Image
    import io
    gif = Image.open(io.BytesIO(gif_bytes(frames)))
    assert gif.format == "GIF" and gif.n_frames == len(frames)


def test_a_pickle_of_tensors_reads_like_the_safetensors_file(gan_files):
    from_pickle = pipeline(gan_files["sg2-64-pkl"])([11], None, 0.5)[0]
    from_safetensors = pipeline(gan_files["sg2-64"])([11], None, 0.5)[0]
    assert np.array_equal(pixels(from_pickle), pixels(from_safetensors))  # G_ema, not G (+0.5) or D


def test_a_pickle_that_would_run_code_is_refused_unrun(tmp_path):
    marker = tmp_path / "ran"
    path = tiny_gan.save_malicious_pickle(tmp_path / "evil.pkl", marker, tiny_gan.tiny_state("stylegan2"))
    with pytest.raises(GeneratorFileError, match="refused: it holds Python objects other than tensors"):
        describe(path)
    with pytest.raises(GeneratorFileError, match="refused"):
        load_generator(path)
    assert not marker.exists()


def test_tensors_that_do_not_fit_are_refused_naming_them(tmp_path):
    state = tiny_gan.tiny_state("stylegan2", resolution=32)
    state["synthesis.b8.conv1.weight"] = torch.randn(16, 16, 3, 3)[:, :8].contiguous()
    path = tiny_gan.save_safetensors(tmp_path / "bad.safetensors", state)
    with pytest.raises(GeneratorFileError, match="synthesis.b8.conv1"):
        load_generator(path)
    del state["synthesis.b8.conv1.weight"]
    state.pop("synthesis.b4.conv1.noise_const")
    with pytest.raises(GeneratorFileError):
        load_generator(tiny_gan.save_safetensors(tmp_path / "bad2.safetensors", state))


def test_a_stylegan_file_among_checkpoints_says_where_it_belongs(gan_files):
    from webui.model_manager.identify import identify_file

    found = identify_file(gan_files["sg3-t"])
    assert not found.supported and "put it in models/GAN" in found.reason


def test_an_nvlabs_network_pickle_is_refused_with_how_to_export_it(tmp_path):
    """NVlabs pickles rebuild their networks through torch_utils.persistence (the classes' source code is inside):
    the weights-only reader refuses the global unread, and the reason says how to export the tensors."""
    # {"G_ema": torch_utils.persistence._reconstruct_persistent_obj({})}, protocol 2, as pickle.dump writes it
    data = (b"\x80\x02}q\x00X\x05\x00\x00\x00G_emaq\x01ctorch_utils.persistence\n_reconstruct_persistent_obj\nq\x02"
            b"}q\x03\x85q\x04Rq\x05s.")
    path = tmp_path / "stylegan2-ffhq-256x256.pkl"
    path.write_bytes(data)
    with pytest.raises(GeneratorFileError) as refused:
        describe(path)
    assert "torch_utils.persistence" in str(refused.value) and "safetensors" in str(refused.value)
