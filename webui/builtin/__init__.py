"""Easel's built-in model as the app runs it: a small pixel-space diffusion transformer with its own text encoder.

model.py (the transformer), text.py (tokenizer and text encoder), pipeline.py (the diffusers pipeline: text-to-image,
img2img, inpainting, editing), lora.py (LoRA adapters and learned trigger words on it), layout.py (grid positions
planned into the prompt), data.py (the procedural world: palette, shapes, words, rendered scenes and example tasks)
and objective.py (the training objective, which the LoRA trainer shares). Training, evaluation and probes live in
webui/builtin_lab/, which this package never imports.
"""
