"""ControlNet preprocessors ("modules"): image in, control map out, mostly from controlnet-aux.

Each `Module` names the annotator weights it needs. Those load from `annotators/` inside a ControlNet model
folder (`models/ControlNet/annotators/`), where AUTOMATIC1111 users can copy the files from
huggingface.co/lllyasviel/Annotators; when a file is missing, Easel was started with `--allow-hub-downloads` and
is online, it is downloaded there; otherwise `AnnotatorMissingError` says exactly which file to put where. Before
controlnet-aux opens them, every weights file is checked to hold only tensors (TorchScript archives and pickles
needing other objects are refused with `UnsafeModelFileError`, naming the file), so nothing in it runs.
canny, shuffle, tile_resample, lineart_standard, recolor_luminance, recolor_intensity, blur_gaussian,
tile_colorfix(+sharp), inpaint_only, the reference modules, invert and none need no weights. Loaded annotators are kept
(per name) and run on the CPU, so previewing a map never competes with the worker for the GPU.

Every preprocessor runs as `run(image, resolution=512, threshold_a=None, threshold_b=None) -> image`, the
contract of `ExtensionAPI.add_preprocessor`: `resolution` is the working size of the shorter side and the two
thresholds are the module's own parameters (None: its default; see `Module.sliders`).
"""
from __future__ import annotations

import logging
import math
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image

from webui.extension_api import check_weights_file

log = logging.getLogger("easel.extensions.controlnet")

ANNOTATOR_REPO = "lllyasviel/Annotators"
ANNOTATOR_FOLDER = "annotators"
SHUFFLE_SEED = 0  # content shuffle is random; a fixed seed makes the same image give the same map


class AnnotatorMissingError(FileNotFoundError):
    """A preprocessor's weights are not installed and cannot be downloaded."""


@dataclass(frozen=True)
class Slider:
    """One threshold of a module, as sd-webui-controlnet's `module_detail` describes it."""

    name: str
    value: float
    minimum: float
    maximum: float
    step: float = 1.0


@dataclass(frozen=True)
class Module:
    name: str
    run: Callable[..., np.ndarray]  # run(rgb HxWx3 uint8, resolution, a, b, loader) -> HxWx3 uint8
    files: tuple[str, ...] = ()  # annotator weights it needs, all in one annotators folder
    threshold_a: Slider | None = None
    threshold_b: Slider | None = None
    uses_resolution: bool = True

    @property
    def model_free(self) -> bool:
        return not self.files

    def sliders(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if self.uses_resolution:
            out.append({"name": "Preprocessor Resolution", "value": 512, "min": 64, "max": 2048, "step": 8})
        for slider in (self.threshold_a, self.threshold_b):
            if slider is not None:
                out.append({"name": slider.name, "value": slider.value, "min": slider.minimum,
                            "max": slider.maximum, "step": slider.step})
        return out


# Helpers -------------------------------------------------------------------------------------------------------
def _rgb(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.uint8)  # HxWx3


def _hwc3(array: np.ndarray) -> np.ndarray:
    if array.ndim == 2:
        array = array[:, :, None]
    if array.shape[2] == 1:
        array = np.concatenate([array] * 3, axis=2)
    return np.ascontiguousarray(array[:, :, :3]).astype(np.uint8)


def _value(given: float | None, slider: Slider | None) -> float:
    assert slider is not None
    return slider.value if given is None else given


def _pil_out(detected: Any) -> np.ndarray:
    return _hwc3(np.asarray(detected.convert("RGB") if isinstance(detected, Image.Image) else detected))


# Modules without weights ---------------------------------------------------------------------------------------
_CANNY_LOW = Slider("Canny Low Threshold", 100, 1, 255)
_CANNY_HIGH = Slider("Canny High Threshold", 200, 1, 255)
_TILE_RATE = Slider("Down Sampling Rate", 1.0, 1.0, 8.0, 0.01)


def _none(image: np.ndarray, resolution: int, a: float | None, b: float | None, loader: Any) -> np.ndarray:
    return image


def _invert(image: np.ndarray, resolution: int, a: float | None, b: float | None, loader: Any) -> np.ndarray:
    return 255 - image


def _canny(image: np.ndarray, resolution: int, a: float | None, b: float | None, loader: Any) -> np.ndarray:
    low, high = int(_value(a, _CANNY_LOW)), int(_value(b, _CANNY_HIGH))
    detector = loader.detector("CannyDetector", lambda aux, folder: aux.CannyDetector())
    return _pil_out(detector(image, low_threshold=low, high_threshold=high, detect_resolution=resolution,
                             image_resolution=resolution, output_type="np"))


def _shuffle(image: np.ndarray, resolution: int, a: float | None, b: float | None, loader: Any) -> np.ndarray:
    detector = loader.detector("ContentShuffleDetector", lambda aux, folder: aux.ContentShuffleDetector())
    with loader.numpy_seed(SHUFFLE_SEED):  # controlnet-aux draws its noise from numpy's global generator
        return _pil_out(detector(image, detect_resolution=resolution, image_resolution=resolution,
                                 output_type="np"))


def _tile_resample(image: np.ndarray, resolution: int, a: float | None, b: float | None, loader: Any) -> np.ndarray:
    """Blur the details away by scaling down by the rate (1 keeps the image as it is)."""
    import cv2

    rate = _value(a, _TILE_RATE)
    if rate < 1.1:
        return image
    height, width = image.shape[:2]
    return cv2.resize(image, (max(1, int(width / rate)), max(1, int(height / rate))), interpolation=cv2.INTER_AREA)


def _lineart_standard(image: np.ndarray, resolution: int, a: float | None, b: float | None,
                      loader: Any) -> np.ndarray:
    detector = loader.detector("LineartStandardDetector", lambda aux, folder: aux.LineartStandardDetector())
    return _pil_out(detector(image, detect_resolution=resolution, output_type="np"))


_GAMMA = Slider("Gamma Correction", 1.0, 0.1, 2.0, 0.001)
_BLUR_SIGMA = Slider("Sigma", 9.0, 0.01, 64.0, 0.01)
_VARIATION = Slider("Variation", 8.0, 3.0, 32.0, 1.0)
_SHARPNESS = Slider("Sharpness", 1.0, 0.0, 2.0, 0.01)
_STYLE_FIDELITY = Slider("Style Fidelity (only for Balanced mode)", 0.5, 0.0, 1.0, 0.01)


def _recolor(channel: Callable[[np.ndarray], np.ndarray]) -> Callable[..., np.ndarray]:
    """A grey map of one brightness channel (uint8 HxW), raised to the gamma of threshold A."""

    def run(image: np.ndarray, resolution: int, a: float | None, b: float | None, loader: Any) -> np.ndarray:
        grey = channel(image).astype(np.float32) / 255.0  # HxW in 0..1
        grey = np.power(grey, float(_value(a, _GAMMA)))
        return _hwc3(np.clip(np.rint(grey * 255.0), 0, 255).astype(np.uint8))

    return run


def _luminance(image: np.ndarray) -> np.ndarray:
    """CIELAB L* scaled to 0..255 (OpenCV's 8-bit L channel)."""
    import cv2

    return cv2.cvtColor(image, cv2.COLOR_RGB2LAB)[:, :, 0]


def _intensity(image: np.ndarray) -> np.ndarray:
    """HSV value: the largest of the three channels."""
    return image.max(axis=2)


def _blur_gaussian(image: np.ndarray, resolution: int, a: float | None, b: float | None,
                   loader: Any) -> np.ndarray:
    """The image blurred by a Gaussian of standard deviation threshold A (in pixels of the image)."""
    import cv2

    sigma = float(_value(a, _BLUR_SIGMA))
    return cv2.GaussianBlur(image, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)


# Modules with weights ------------------------------------------------------------------------------------------
def _pretrained(class_name: str, **kwargs: Any) -> Callable[[Any, str], Any]:
    return lambda aux, folder: getattr(aux, class_name).from_pretrained(folder, **kwargs)


_MIDAS_A = Slider("Midas A", math.pi * 2.0, 0.0, 20.0, 0.01)
_MIDAS_BG = Slider("Midas Background Threshold", 0.1, 0.0, 1.0, 0.01)
_LERES_A = Slider("Remove Near %", 0, 0, 100, 0.1)
_LERES_B = Slider("Remove Background %", 0, 0, 100, 0.1)
_MLSD_V = Slider("MLSD Value Threshold", 0.1, 0.01, 2.0, 0.01)
_MLSD_D = Slider("MLSD Distance Threshold", 0.1, 0.01, 20.0, 0.01)
_OPENPOSE_FILES = ("body_pose_model.pth", "hand_pose_model.pth", "facenet.pth")


def _weighted(key: str, factory: Callable[[Any, str], Any], call: Callable[..., Any]) -> Callable[..., np.ndarray]:
    """A module whose detector is loaded (once) from the annotators folder and called with `call`."""

    def run(image: np.ndarray, resolution: int, a: float | None, b: float | None, loader: Any) -> np.ndarray:
        detector = loader.detector(key, factory)
        return _pil_out(call(detector, image, resolution, a, b))

    return run


def _plain(detector: Any, image: np.ndarray, resolution: int, a: float | None, b: float | None, **kw: Any) -> Any:
    return detector(image, detect_resolution=resolution, image_resolution=resolution, output_type="pil", **kw)


MODULES: dict[str, Module] = {}


def _add(module: Module) -> None:
    MODULES[module.name] = module


_add(Module("none", _none, uses_resolution=False))
_add(Module("invert", _invert, uses_resolution=False))
_add(Module("canny", _canny, threshold_a=_CANNY_LOW, threshold_b=_CANNY_HIGH))
_add(Module("shuffle", _shuffle))
_add(Module("tile_resample", _tile_resample, threshold_a=_TILE_RATE, uses_resolution=False))
_add(Module("lineart_standard", _lineart_standard))
_add(Module("recolor_luminance", _recolor(_luminance), threshold_a=_GAMMA, uses_resolution=False))
_add(Module("recolor_intensity", _recolor(_intensity), threshold_a=_GAMMA, uses_resolution=False))
_add(Module("blur_gaussian", _blur_gaussian, threshold_a=_BLUR_SIGMA, uses_resolution=False))
# The tile colour fix: the map is the image; the generated images' low frequencies (a Gaussian of sigma
# "Variation") are then replaced by the control image's (`+sharp` also sharpens by "Sharpness"); see apply.py.
_add(Module("tile_colorfix", _none, threshold_a=_VARIATION, uses_resolution=False))
_add(Module("tile_colorfix+sharp", _none, threshold_a=_VARIATION, threshold_b=_SHARPNESS, uses_resolution=False))
# The unit's image with its mask goes to an inpaint ControlNet (masked pixels become -1); see apply.py.
_add(Module("inpaint_only", _none, uses_resolution=False))
# Reference modules need no ControlNet model: the map is the reference image, used by reference.py.
_add(Module("reference_only", _none, threshold_a=_STYLE_FIDELITY, uses_resolution=False))
_add(Module("reference_adain", _none, threshold_a=_STYLE_FIDELITY, uses_resolution=False))
_add(Module("reference_adain+attn", _none, threshold_a=_STYLE_FIDELITY, uses_resolution=False))
REFERENCE_MODULES = ("reference_only", "reference_adain", "reference_adain+attn")
COLORFIX_MODULES = ("tile_colorfix", "tile_colorfix+sharp")
INPAINT_MODULES = ("inpaint_only",)
_add(Module("depth_midas", _weighted("midas", _pretrained("MidasDetector"), lambda d, im, r, a, b: d(
    im, a=_value(a, _MIDAS_A), bg_th=_value(b, _MIDAS_BG), detect_resolution=r, image_resolution=r,
    output_type="pil")), files=("dpt_hybrid-midas-501f0c75.pt",), threshold_a=_MIDAS_A, threshold_b=_MIDAS_BG))
_add(Module("depth_leres", _weighted("leres", _pretrained("LeresDetector"), lambda d, im, r, a, b: d(
    im, thr_a=_value(a, _LERES_A), thr_b=_value(b, _LERES_B), detect_resolution=r, image_resolution=r,
    output_type="pil")), files=("res101.pth", "latest_net_G.pth"), threshold_a=_LERES_A, threshold_b=_LERES_B))
_add(Module("normal_bae", _weighted("normalbae", _pretrained("NormalBaeDetector"), _plain), files=("scannet.pt",)))
_add(Module("lineart_realistic", _weighted("lineart", _pretrained("LineartDetector"), _plain),
            files=("sk_model.pth", "sk_model2.pth")))
_add(Module("lineart_coarse", _weighted("lineart", _pretrained("LineartDetector"),
                                        lambda d, im, r, a, b: _plain(d, im, r, a, b, coarse=True)),
            files=("sk_model.pth", "sk_model2.pth")))
_add(Module("lineart_anime", _weighted("lineart_anime", _pretrained("LineartAnimeDetector"), _plain),
            files=("netG.pth",)))
_add(Module("softedge_hed", _weighted("hed", _pretrained("HEDdetector"), _plain), files=("ControlNetHED.pth",)))
_add(Module("softedge_hedsafe", _weighted("hed", _pretrained("HEDdetector"),
                                          lambda d, im, r, a, b: _plain(d, im, r, a, b, safe=True)),
            files=("ControlNetHED.pth",)))
_add(Module("softedge_pidinet", _weighted("pidinet", _pretrained("PidiNetDetector"), _plain),
            files=("table5_pidinet.pth",)))
_add(Module("softedge_pidisafe", _weighted("pidinet", _pretrained("PidiNetDetector"),
                                           lambda d, im, r, a, b: _plain(d, im, r, a, b, safe=True)),
            files=("table5_pidinet.pth",)))
_add(Module("scribble_hed", _weighted("hed", _pretrained("HEDdetector"),
                                      lambda d, im, r, a, b: _plain(d, im, r, a, b, scribble=True)),
            files=("ControlNetHED.pth",)))
_add(Module("scribble_pidinet", _weighted("pidinet", _pretrained("PidiNetDetector"),
                                          lambda d, im, r, a, b: _plain(d, im, r, a, b, scribble=True)),
            files=("table5_pidinet.pth",)))
for _name, _body, _hand, _face in (("openpose", True, False, False), ("openpose_hand", True, True, False),
                                   ("openpose_face", True, False, True), ("openpose_faceonly", False, False, True),
                                   ("openpose_full", True, True, True)):
    _add(Module(_name, _weighted("openpose", _pretrained("OpenposeDetector"),
                                 lambda d, im, r, a, b, body=_body, hand=_hand, face=_face: _plain(
                                     d, im, r, a, b, include_body=body, include_hand=hand, include_face=face)),
                files=_OPENPOSE_FILES))
_add(Module("mlsd", _weighted("mlsd", _pretrained("MLSDdetector"), lambda d, im, r, a, b: d(
    im, thr_v=_value(a, _MLSD_V), thr_d=_value(b, _MLSD_D), detect_resolution=r, image_resolution=r,
    output_type="pil")), files=("mlsd_large_512_fp32.pth",), threshold_a=_MLSD_V, threshold_b=_MLSD_D))

# Names older sd-webui-controlnet clients send.
ALIASES = {"depth": "depth_midas", "softedge": "softedge_hed", "scribble": "scribble_hed", "depth_leres++": "depth_leres", "normal_map": "normal_bae",
           "lineart": "lineart_realistic", "hed": "softedge_hed", "hed_safe": "softedge_hedsafe",
           "pidinet": "softedge_pidinet", "pidinet_safe": "softedge_pidisafe", "fake_scribble": "scribble_hed",
           "pidinet_scribble": "scribble_pidinet", "openposev2": "openpose_full", "openpose_full_body": "openpose_full",
           "tile": "tile_resample", "blur": "blur_gaussian", "shuffle_content": "shuffle", "canny_edge": "canny"}


# Loading and running ---------------------------------------------------------------------------------------------
def keep_aspect(detected: Image.Image, source: tuple[int, int]) -> Image.Image:
    """`detected` with the source's aspect ratio again (controlnet-aux rounds both sides to multiples of 64, which
    stretches maps of images that are not square), its shorter side kept."""
    width, height = source
    if abs(detected.width * height - detected.height * width) <= max(width, height):  # same shape within a pixel
        return detected
    short = min(detected.size)
    scale = short / min(width, height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return detected.resize(size, Image.BILINEAR)


def hub_offline() -> bool:
    return any(os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")
               for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


@dataclass
class Preprocessors:
    """Runs modules, loading annotator weights from `folders` (each a ControlNet folder's `annotators/`)."""

    folders: list[Path]
    offline: Callable[[], bool] = hub_offline
    _detectors: dict[str, Any] = field(default_factory=dict)
    _lock: threading.RLock = field(default_factory=threading.RLock)
    _numpy_lock: threading.Lock = field(default_factory=threading.Lock)

    def names(self) -> list[str]:
        return list(MODULES)

    def find(self, name: str) -> str:
        """The canonical module name for a name or alias (any case); LookupError lists the known ones."""
        lowered = name.strip().lower()
        if lowered in MODULES:
            return lowered
        if lowered in ALIASES:
            return ALIASES[lowered]
        raise LookupError(f"unknown preprocessor {name!r}; choose one of {', '.join(MODULES)}")

    def module(self, name: str) -> Module:
        return MODULES[self.find(name)]

    def weights_folder(self, module: Module) -> Path:
        """The annotators folder holding all of `module`'s files, downloading them there when online."""
        for folder in self.folders:
            if all((folder / name).is_file() for name in module.files):
                return folder
        target = self.folders[0]
        missing = [name for name in module.files if not (target / name).is_file()]
        if self.offline():
            raise AnnotatorMissingError(
                f"preprocessor {module.name} needs {' and '.join(missing)} in {target} (from "
                f"huggingface.co/{ANNOTATOR_REPO}); Easel does not download it (offline, or started without "
                f"--allow-hub-downloads), so put the file{'s' if len(missing) > 1 else ''} there by hand")
        from huggingface_hub import hf_hub_download

        target.mkdir(parents=True, exist_ok=True)
        for name in missing:
            log.info("downloading %s from %s into %s", name, ANNOTATOR_REPO, target)
            hf_hub_download(ANNOTATOR_REPO, name, local_dir=str(target))
        return target

    def detector(self, key: str, factory: Callable[[Any, str], Any], module: Module | None = None) -> Any:
        """A controlnet-aux detector, made once (`factory(controlnet_aux, weights folder)`)."""
        with self._lock:
            if key not in self._detectors:
                import controlnet_aux  # imported on first use: it takes seconds and loads timm

                folder = str(self.weights_folder(module)) if module is not None and module.files else ""
                for name in module.files if module is not None else ():
                    check_weights_file(Path(folder) / name, f"preprocessor {module.name}")  # tensors only
                self._detectors[key] = factory(controlnet_aux, folder)
            return self._detectors[key]

    def numpy_seed(self, seed: int) -> Any:
        """Seed numpy's global generator inside the block and restore it after (one block at a time)."""
        owner = self

        class _Seeded:
            def __enter__(self) -> None:
                owner._numpy_lock.acquire()
                self.state = np.random.get_state()
                np.random.seed(seed)

            def __exit__(self, *exc: Any) -> None:
                np.random.set_state(self.state)
                owner._numpy_lock.release()

        return _Seeded()

    def run(self, name: str, image: Image.Image, resolution: int = 512, threshold_a: float | None = None,
            threshold_b: float | None = None) -> Image.Image:
        """The control map of `image` (RGB) made by module `name`."""
        module = self.module(name)
        loader = _BoundLoader(self, module)
        with self._lock:  # annotators are not thread-safe; one map at a time
            array = module.run(_rgb(image), int(resolution), threshold_a, threshold_b, loader)
        return keep_aspect(Image.fromarray(_hwc3(array)), image.size)

    def as_function(self, name: str) -> Callable[..., Image.Image]:
        """`run` for one module, in the form `ExtensionAPI.add_preprocessor` registers."""

        def preprocess(image: Image.Image, resolution: int = 512, threshold_a: float | None = None,
                       threshold_b: float | None = None) -> Image.Image:
            return self.run(name, image, resolution, threshold_a, threshold_b)

        preprocess.__name__ = f"controlnet_{name}"
        return preprocess


@dataclass
class _BoundLoader:
    """What a module's `run` receives: detectors loaded with its own weight files."""

    owner: Preprocessors
    module: Module

    def detector(self, key: str, factory: Callable[[Any, str], Any]) -> Any:
        return self.owner.detector(key, factory, self.module)

    def numpy_seed(self, seed: int) -> Any:
        return self.owner.numpy_seed(seed)
