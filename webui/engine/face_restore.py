"""Face restoration: GFPGAN or CodeFormer run on the faces the detail fixer's finders find.

`FaceRestorers` knows the files in `models/GFPGAN/` and `models/Codeformer/` and loads them
(`webui.model_manager.face_models`, held in the model manager's memory cache like every model). `restore_faces`
finds the faces of an image with the detail fixer's finder and the query "face" (`webui.engine.detail.find_mask`:
an edit-capable checkpoint's generative segmentation, or CLIPSeg / SAM 3), splits the mask into regions, and for
each region: crops the square around it with padding, resizes it to the restorer's side, restores it, resizes it
back and blends it in through the region's mask (grown a little, feathered inwards), times `visibility`. Pixels
outside the grown regions are exactly the input's; visibility 0 returns the input unchanged. The crop is upright
(no landmark alignment), so a strongly tilted face restores less well than in tools that rotate faces upright.

txt2img, img2img and inpaint run it when a request has `restore_faces` (the restorer and CodeFormer's weight
come from the settings, as in AUTOMATIC1111); the Extras tab and `/sdapi/v1/extra-single-image` run GFPGAN and
CodeFormer with their own visibilities.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from scipy import ndimage

from webui.model_manager.extra_files import FACE_RESTORER_FOLDERS, face_restorer_files
from webui.requests import RequestError

log = logging.getLogger(__name__)

FACE_QUERY = "face"
FACE_RESTORER = "face restorer"  # their kind in the memory cache
GROW = 4  # px the region's mask grows before blending
PADDING = 0.25  # context around a face, as a share of its box's longer side


class FaceRestorerError(ValueError):
    """A restorer's file is missing, refused or not a face restorer; the message says which and where."""


@dataclass(frozen=True)
class FaceOptions:
    """What one restoration run uses: the restorer, its visibility, CodeFormer's weight and the face finder."""

    restorer: str = "CodeFormer"  # "GFPGAN" or "CodeFormer"
    visibility: float = 1.0
    codeformer_weight: float = 0.5  # CodeFormer's fidelity w: 0 = most restored, 1 = closest to the input
    finder: str = ""  # the detail fixer's finder ("" = its default)
    confidence: float = 0.3  # CLIPSeg / SAM 3 threshold


def canonical_name(name: str) -> str | None:
    """"GFPGAN" or "CodeFormer" for a name in any case; None for anything else."""
    return next((known for known in FACE_RESTORER_FOLDERS if known.lower() == str(name).strip().lower()), None)


class FaceRestorers:
    """The face-restoration files on disk and the loaded models (in the shared memory cache)."""

    def __init__(self, models_dir: Path, device: str = "cpu", dtype: torch.dtype = torch.float32,
                 memory: Any = None) -> None:
        self.models_dir = Path(models_dir)
        self.device = device
        self.dtype = dtype
        if memory is None:
            from webui.model_manager.memory import MemoryCache

            memory = MemoryCache(device)
        self.memory = memory

    def installed(self) -> dict[str, list[Path]]:
        """{restorer: its files}, for each restorer with at least one file."""
        return face_restorer_files(self.models_dir)

    def folder(self, name: str) -> Path:
        return self.models_dir / FACE_RESTORER_FOLDERS[name]

    @staticmethod
    def shown_folder(name: str) -> str:
        """The restorer's folder as messages show it (relative to the data folder: no absolute paths)."""
        return f"models/{FACE_RESTORER_FOLDERS[name]}/"

    def file_for(self, name: str) -> Path:
        """The file a restorer uses: the first whose name contains the restorer's ("GFPGANv1.4.pth",
        "codeformer-v0.1.0.safetensors"), else the first file. FaceRestorerError when there is none."""
        files = self.installed().get(name, [])
        if not files:
            raise FaceRestorerError(f"{name} is not installed: put its weights (.safetensors, or a .pth converted "
                                    f"tensors-only) in {self.shown_folder(name)}")
        return next((path for path in files if name.lower() in path.name.lower()), files[0])

    def check(self, name: str, field: str) -> str:
        """The restorer's canonical name; RequestError on `field` when it is unknown or has no file."""
        known = canonical_name(name)
        if known is None:
            raise RequestError(field, f"unknown face restorer {name!r}; choose GFPGAN or CodeFormer")
        try:
            self.file_for(known)
        except FaceRestorerError as exc:
            raise RequestError(field, str(exc)) from None
        return known

    def load(self, name: str) -> Any:
        """The loaded FaceModel of restorer `name` (from the cache when its file has not changed)."""
        from webui.model_manager.face_models import FaceModelError, load_face_model

        path = self.file_for(name)
        key = (str(path), path.stat().st_mtime, str(self.dtype))
        found = self.memory.get(FACE_RESTORER, key)
        if found is not None:
            return found
        self.memory.clear(FACE_RESTORER, where=lambda held: held[0] == key[0])  # an older version of the file
        try:
            model = load_face_model(path, self.device, self.dtype)
        except FaceModelError as exc:
            raise FaceRestorerError(f"{name}: {exc}") from None
        if model.kind != name:
            raise FaceRestorerError(f"{name}: {path.name} is a {model.kind} model; move it to "
                                    f"{self.shown_folder(model.kind)}")
        self.memory.add(FACE_RESTORER, key, model, name=f"{name} ({path.name})")
        return model

    def unload(self) -> None:
        self.memory.clear(FACE_RESTORER)


def check_finder(manager: Any, finder: str, field: str) -> None:
    """RequestError on `field` when no model can find faces: the setting names none that is installed, or (left
    empty) no edit-capable checkpoint and no segmenter is installed."""
    from webui.engine.modes.segment import default_model

    try:
        name = finder or default_model(manager)
    except RequestError as exc:
        raise RequestError(field, f"faces are found by the detail fixer's finders, and {exc.message}") from None
    if manager.find_segmenter(name) is not None:
        return
    try:
        entry = manager.find_checkpoint(name)
    except LookupError:
        entry = None
    if entry is None or not any(e.name == entry.name for e in manager.edit_checkpoints()):
        raise RequestError(field, f"the face finder {name!r} (setting face_restoration_finder) is neither an "
                                  "installed segmenter nor a checkpoint that can edit")


# Running -------------------------------------------------------------------------------------------------------
def load_or_refuse(restorers: FaceRestorers, name: str, field: str) -> Any:
    """The loaded restorer; RequestError on `field` naming the file and why when it cannot load."""
    try:
        return restorers.load(name)
    except FaceRestorerError as exc:
        raise RequestError(field, str(exc)) from None


def apply(ctx: Any, restorers: FaceRestorers, options: FaceOptions, generated: list[Any]) -> list[Any]:
    """Restore the faces of each generated image (in place); each image's infotext records it. A restorer that
    cannot load is an error on `restore_faces` naming its file."""
    from webui.engine.worker import JobInterrupted

    for item in generated:
        try:
            ctx.job.check_interrupt()
            item.image, entries = restore_faces(ctx, restorers, item.image, options)
        except JobInterrupted:  # the images keep what was restored so far
            return generated
        except FaceRestorerError as exc:
            raise RequestError("restore_faces", str(exc)) from None
        item.extra.update(entries)
    return generated


def restore_faces(ctx: Any, restorers: FaceRestorers, image: Image.Image, options: FaceOptions
                  ) -> tuple[Image.Image, dict[str, Any]]:
    """`image` with its faces restored, and the infotext entries saying what ran ("Face restoration": the
    restorer, as AUTOMATIC1111 writes it; the finder, the faces found, and why none). FaceRestorerError when the
    restorer cannot load; RequestError("restore_faces") when no model can find faces."""
    from webui.engine.detail import find_mask, split_regions
    from webui.engine.detail_args import DetailPass

    entries: dict[str, Any] = {"Face restoration": options.restorer}
    if options.restorer == "CodeFormer":
        entries["CodeFormer weight"] = options.codeformer_weight
    image = image.convert("RGB")
    if options.visibility <= 0:
        return image, entries
    model = restorers.load(options.restorer)
    search = DetailPass(query=FACE_QUERY, finder=options.finder, confidence=options.confidence)
    try:
        mask, finder, message = find_mask(ctx, image, search)
    except RequestError as exc:  # no finder installed, or one that cannot segment
        raise RequestError("restore_faces", f"faces are found by the detail fixer's finders: {exc.message}") from None
    regions = split_regions(mask, search)
    entries["Face restoration finder"] = finder
    entries["Face restoration faces"] = len(regions)
    if not regions:
        entries["Face restoration result"] = message or "no face was found"
        return image, entries
    return restore_regions(image, regions, model, options.visibility, options.codeformer_weight), entries


def restore_regions(image: Image.Image, regions: list[np.ndarray], model: Any, visibility: float,
                    codeformer_weight: float = 0.5) -> Image.Image:
    """`image` with each region ([H, W] bool) restored by `model` and blended in by `visibility`; pixels outside
    every grown region are returned exactly as they were."""
    from webui.engine.detail import grow
    from webui.engine.images import masked_bbox

    source = np.asarray(image.convert("RGB"), dtype=np.float32)  # (H, W, 3)
    result = source.copy()
    if visibility <= 0:
        return image.convert("RGB")
    for region in regions:
        grown = grow(region, GROW)
        mask = Image.fromarray((grown * 255).astype(np.uint8), mode="L")
        box = mask.getbbox()
        if box is None:
            continue
        padding = round(max(box[2] - box[0], box[3] - box[1]) * PADDING)
        x0, y0, x1, y1 = masked_bbox(mask, padding, 1, 1)  # a square where the image allows
        crop = Image.fromarray(result[y0:y1, x0:x1].round().clip(0, 255).astype(np.uint8))
        restored = restore_crop(model, crop, codeformer_weight)  # (h, w, 3) float
        alpha = feather(grown)[y0:y1, x0:x1, None] * float(visibility)  # (h, w, 1) in [0, 1]
        patch = result[y0:y1, x0:x1]
        result[y0:y1, x0:x1] = np.where(alpha > 0, patch * (1 - alpha) + restored * alpha, patch)
    return Image.fromarray(result.round().clip(0, 255).astype(np.uint8))  # untouched pixels: exactly the input


def restore_crop(model: Any, crop: Image.Image, codeformer_weight: float) -> np.ndarray:
    """One face crop restored at the model's side and resized back: (h, w, 3) float32 in 0…255."""
    side = model.size
    work = crop.resize((side, side), Image.LANCZOS)
    x = torch.from_numpy(np.asarray(work, dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1)[None]  # (1, 3, S, S)
    y = model.restore(x, codeformer_weight)  # (1, 3, S, S) in [-1, 1]
    out = ((y[0].permute(1, 2, 0).cpu().numpy() + 1.0) * 127.5).clip(0, 255).round().astype(np.uint8)  # (S, S, 3)
    return np.asarray(Image.fromarray(out).resize(crop.size, Image.LANCZOS), dtype=np.float32)


def feather(mask: np.ndarray) -> np.ndarray:
    """[H, W] float weights: 1 deep inside `mask`, falling to 0 at its edge, exactly 0 outside it."""
    inside = ndimage.distance_transform_edt(mask)  # px to the nearest pixel outside
    ramp = max(1.0, min(8.0, float(inside.max()) / 3))
    return np.clip(inside / ramp, 0.0, 1.0).astype(np.float32)
