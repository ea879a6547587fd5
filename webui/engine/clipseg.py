"""A non-generative baseline for the Segment tab: text-prompted masks from CLIPSeg (transformers).

CLIPSeg predicts a per-pixel logit map for each text query at 352×352; the mask is the sigmoid above a
threshold, resized to the source image. Weights are a transformers folder (for example CIDAS/clipseg-rd64-refined
saved under `models/clipseg/`) or a hub id for users who are online.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

DEFAULT_THRESHOLD = 0.4


class ClipSegSegmenter:
    def __init__(self, source: str | Path, device: str = "cpu") -> None:
        from transformers import CLIPSegForImageSegmentation, CLIPSegProcessor

        local = Path(source).exists()
        self.processor = CLIPSegProcessor.from_pretrained(str(source), local_files_only=local)
        self.model = CLIPSegForImageSegmentation.from_pretrained(str(source), local_files_only=local).eval().to(device)
        self.device = device

    @torch.no_grad()
    def probabilities(self, image: Image.Image, queries: list[str]) -> np.ndarray:
        """[len(queries), H, W] object probabilities at the image's size."""
        image = image.convert("RGB")
        inputs = self.processor(text=queries, images=[image] * len(queries), padding=True, return_tensors="pt")
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        logits = self.model(**inputs).logits  # [Q, h, w] or [h, w] for a single query
        if logits.ndim == 2:
            logits = logits.unsqueeze(0)
        probs = torch.sigmoid(logits).unsqueeze(1).float()  # [Q, 1, h, w]
        probs = torch.nn.functional.interpolate(probs, size=(image.height, image.width), mode="bilinear",
                                                align_corners=False)
        return probs[:, 0].cpu().numpy()

    def masks(self, image: Image.Image, queries: list[str], threshold: float = DEFAULT_THRESHOLD) -> list[np.ndarray]:
        return [p > threshold for p in self.probabilities(image, queries)]
