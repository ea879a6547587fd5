"""Non-generative baselines for the Segment tab: per-pixel object probabilities from CLIPSeg or SAM 3.

The model manager loads the model and its processor (`LoadedSegmenter`); this module runs them. CLIPSeg predicts
one logit map per text query at its working size (352×352 for the released weights); the probability is its
sigmoid, resized to the source image. SAM 3 finds every instance of a text concept; the probability of a pixel is
the highest score-weighted mask probability of the instances kept (score ≥ 0.3, its default). A mask is the
probability above a threshold.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image

from webui.requests import RequestError

DEFAULT_THRESHOLD = 0.4
SAM3_INSTANCE_SCORE = 0.3


@torch.no_grad()
def clipseg_probabilities(model: Any, processor: Any, image: Image.Image, queries: list[str],
                          device: str = "cpu") -> np.ndarray:
    """[len(queries), H, W] object probabilities in [0, 1] at the image's size, from CLIPSeg."""
    image = image.convert("RGB")
    inputs = processor(text=queries, images=[image] * len(queries), padding=True, return_tensors="pt")
    dtype = next(model.parameters()).dtype
    inputs = {k: (v.to(device, dtype) if v.is_floating_point() else v.to(device)) for k, v in inputs.items()}
    logits = model(**inputs).logits  # [Q, h, w], or [h, w] for a single query
    if logits.ndim == 2:
        logits = logits.unsqueeze(0)
    probs = torch.sigmoid(logits.float()).unsqueeze(1)  # [Q, 1, h, w]
    probs = torch.nn.functional.interpolate(probs, size=(image.height, image.width), mode="bilinear",
                                            align_corners=False)  # [Q, 1, H, W]
    return probs[:, 0].cpu().numpy()


@torch.no_grad()
def sam3_probabilities(model: Any, processor: Any, image: Image.Image, queries: list[str],
                       device: str = "cpu") -> np.ndarray:
    """[len(queries), H, W] object probabilities in [0, 1] at the image's size, from SAM 3's instance masks."""
    image = image.convert("RGB")
    dtype = next(model.parameters()).dtype
    out = np.zeros((len(queries), image.height, image.width), np.float32)
    for q, query in enumerate(queries):
        inputs = processor(images=image, text=query, return_tensors="pt")
        inputs = {k: (v.to(device, dtype) if v.is_floating_point() else v.to(device)) for k, v in inputs.items()}
        outputs = model(**inputs)
        scores = torch.sigmoid(outputs.pred_logits.float())[0]  # [N]
        if getattr(outputs, "presence_logits", None) is not None:
            scores = scores * torch.sigmoid(outputs.presence_logits.float()).reshape(-1)[0]
        masks = torch.sigmoid(outputs.pred_masks.float())[0]  # [N, h, w]
        keep = scores >= SAM3_INSTANCE_SCORE
        if not keep.any():
            continue
        masks = torch.nn.functional.interpolate(masks[keep][:, None], size=(image.height, image.width),
                                                mode="bilinear", align_corners=False)[:, 0]  # [K, H, W]
        out[q] = masks.amax(dim=0).cpu().numpy()
    return out


def probabilities(kind: str, model: Any, processor: Any, image: Image.Image, queries: list[str],
                  device: str = "cpu") -> np.ndarray:
    """[len(queries), H, W] probabilities from a loaded segmenter of `kind` ("clipseg" or "sam3")."""
    if kind == "clipseg":
        return clipseg_probabilities(model, processor, image, queries, device)
    if kind == "sam3":
        return sam3_probabilities(model, processor, image, queries, device)
    raise RequestError("model", f"unknown segmenter kind {kind!r}; expected clipseg or sam3")
