"""The UI's request path for a family (DiT) on a real Easel: picking the checkpoint hides the controls DiT does not
use (negative prompt, CLIP skip, tiling, schedule type) and shows them again for SD; the Generate handler does not
send a hidden control's stale value, and its job draws the class the prompt names."""
from __future__ import annotations

import asyncio

from webui.infotext import parse_infotext
from webui.ui.app import build_ui


def handler(blocks, component, event):
    found = [f for f in blocks.fns.values() if (component._id, event) in f.targets]
    assert len(found) == 1, (component, event)
    return found[0]


def test_dit_controls_and_generation_through_the_ui(family_easel, tiny_dit_dir):
    easel = family_easel(install_sd1=True, tiny_dit=tiny_dit_dir)
    blocks, ui = build_ui(easel)
    tab = ui.generation["txt2img"]
    negative = tab.controls["negative_prompt"]

    change = handler(blocks, ui.checkpoint, "change")
    samplers = [t.controls["sampler"].value for t in ui.generation.values()]
    for checkpoint, shown in (("tiny-dit", False), ("tiny-sd1", True)):
        updates = dict(zip(change.outputs, change.fn(checkpoint, *samplers)))
        for name in ("negative_prompt", "clip_skip", "tiling", "scheduler"):
            assert updates[tab.controls[name]]["visible"] is shown, (checkpoint, name)
        assert updates[tab.controls["stage2_steps"]]["visible"] is False  # DeepFloyd IF's only
    assert updates[ui.generation["img2img"].controls["noise_level"]]["visible"] is False  # Stable unCLIP's only

    generate = handler(blocks, blocks_by_id(blocks, "txt2img_generate"), "click")
    values = {component: getattr(component, "value", None) for component in generate.inputs}
    values.update({ui.checkpoint: "tiny-dit", tab.controls["prompt"]: "golden retriever",
                   negative: "blurry, left from an SD prompt", tab.controls["sampler"]: "Default",
                   tab.controls["steps"]: 2, tab.controls["width"]: 64, tab.controls["height"]: 64,
                   tab.controls["seed"]: 11})

    async def last_update():
        final = None
        async for update in generate.fn(values):
            final = update
        return final

    final = asyncio.run(last_update())
    info = next(value for value in final.values() if isinstance(value, str) and "Steps:" in value)
    params = parse_infotext(info)
    assert params["Class"] == "golden retriever (207)" and params["Model"] == "tiny-dit"
    assert "Negative prompt" not in info  # the hidden negative prompt was not sent (DiT would refuse it)


def blocks_by_id(blocks, elem_id):
    found = [b for b in blocks.blocks.values() if getattr(b, "elem_id", None) == elem_id]
    assert len(found) == 1, elem_id
    return found[0]
