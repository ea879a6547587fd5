"""Research tools for Easel's built-in model: they train it, score it and look inside it; the app never imports them.

train.py (train from scratch or from shipped weights, resumable; `python3 launch.py train-builtin`), evaluate.py
(a classical shape detector and the model's scores on held-out prompts), evaluate_segmentation.py (segmentation
scored against true masks), probe.py (what a prompt's words change in one denoising step). They import the
runtime model in webui/builtin/ (model, text encoder, pipeline, the procedural world of data.py, the training
objective of objective.py); nothing there imports them back, which tests/builtin/test_layers.py checks.
"""
