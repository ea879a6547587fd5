"""The UI's request path for a StyleGAN generator on a real Easel: picking it hides the controls a GAN does not use
(sampler, steps, CFG, negative prompt, …) and shows the truncation ψ (and the class for a conditional one) and the
Seed walk accordion, SD shows them the other way round; Generate sends neither hidden values nor a sampler the GAN
cannot run and draws the seed's image; the Seed walk button makes the GIF."""
from __future__ import annotations

import asyncio

from PIL import Image

from tests.families.test_family_ui import blocks_by_id, handler
from webui.infotext import parse_infotext
from webui.ui.app import build_ui


def visible(update) -> bool:
    """An update's visibility: a dict (gr.update) or a component (gr.Dropdown(visible=...))."""
    return update["visible"] if isinstance(update, dict) else update.visible


def test_stylegan_controls_generation_and_seed_walk_through_the_ui(gan_easel):
    easel = gan_easel("sg2-64", "sg2-cond", install_sd1=True)
    blocks, ui = build_ui(easel)
    tab = ui.generation["txt2img"]
    controls = tab.controls

    panel = handler(blocks, ui.checkpoint, "change")
    accordion = blocks_by_id(blocks, "txt2img_seed_walk")
    samplers = [t.controls["sampler"].value for t in ui.generation.values()]
    for checkpoint, gan, conditional in (("sg2-64", True, False), ("sg2-cond", True, True),
                                         ("tiny-sd1", False, False)):
        updates = dict(zip(panel.outputs, panel.fn(checkpoint, *samplers)))
        for name in ("sampler", "steps", "cfg_scale", "negative_prompt", "clip_skip", "scheduler"):
            assert visible(updates[controls[name]]) is not gan, (checkpoint, name)
        assert visible(updates[controls["truncation_psi"]]) is gan
        assert visible(updates[controls["class_label"]]) is conditional
        assert visible(updates[accordion]) is gan

    generate = handler(blocks, blocks_by_id(blocks, "txt2img_generate"), "click")
    values = {component: getattr(component, "value", None) for component in generate.inputs}
    values.update({ui.checkpoint: "sg2-64", controls["prompt"]: "", controls["negative_prompt"]: "left over",
                   controls["sampler"]: "Euler a", controls["steps"]: 37, controls["cfg_scale"]: 11,
                   controls["width"]: 64, controls["height"]: 64, controls["seed"]: 21,
                   controls["truncation_psi"]: 0.5})

    async def last_update():
        final = None
        async for update in generate.fn(values):
            final = update
        return final

    final = asyncio.run(last_update())
    info = next(value for value in final.values() if isinstance(value, str) and "Truncation psi" in value)
    params = parse_infotext(info)
    assert params["Seed"] == "21" and params["Truncation psi"] == "0.5" and params["Model"] == "sg2-64"
    assert "Steps" not in params and "Negative prompt" not in info  # hidden values were not sent (or refused)

    walk = handler(blocks, blocks_by_id(blocks, "txt2img_seed_walk_button"), "click")
    args = {walk.inputs[0]: "sg2-64", walk.inputs[1]: 21, walk.inputs[2]: "21, 22", walk.inputs[3]: 3,
            walk.inputs[4]: "Linear in w", walk.inputs[5]: 0.5, walk.inputs[6]: -1, walk.inputs[7]: ""}
    path, note = asyncio.run(walk.fn(*[args[c] for c in walk.inputs]))
    gif = Image.open(path)
    assert gif.format == "GIF" and gif.n_frames == 4 and note.startswith("4 frames")
