"""Command-line flags, persisted settings and folder paths, as one validated object.

Flags keep AUTOMATIC1111's names (`--port`, `--listen`, `--share`, `--gradio-auth`, `--api`, `--nowebui`,
`--ckpt-dir`, `--lora-dir`, `--vae-dir`, `--data-dir`, `--medvram`, `--lowvram`, `--cors-allow-origins`, ...).
A `Settings` printed in a log masks the logins (`webui.redact`). The user settings that the
Settings tab edits are stored as JSON in `<data dir>/config.json`; a corrupt file is kept aside as
`config.json.bak` and replaced by defaults, and the reason is reported to the user. Every change to them, from
the Settings tab, `POST /sdapi/v1/options` or the Extensions tab, goes through `apply_changes`: the values are
checked together (a `SettingError` names each bad key and nothing changes), then written to config.json
atomically, then made current.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Collection

from webui.model_manager.memory import OFFLOAD_CHOICES  # noqa: F401 (the Settings tab reads it here)
from webui.requests import Limits

log = logging.getLogger(__name__)

VAE_TILING_CHOICES = ("Automatic", "Always", "Never")  # the `vae_tiling` setting (webui.engine.tiling)
WEIGHT_PRECISIONS = ("default", "fp8", "nf4", "int8")  # the `weight_precision` setting (webui.model_manager.formats)
RNG_SOURCES = ("CPU", "GPU", "NV")  # "Random number generator source" (webui.engine.noise)
FACE_RESTORERS = ("CodeFormer", "GFPGAN")  # face_restoration_model (webui.engine.face_restore)
CPU_BACKENDS = ("auto", "plain", "openvino", "compile")  # cpu_backend (webui.engine.cpu_path)

ROOT = Path(__file__).resolve().parent.parent
BUILTIN_MODELS_DIR = ROOT / "models" / "builtin"


class SettingError(ValueError):
    """A user setting given a value it cannot take. `key` names it as config.json and the Settings tab do."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.field = key
        self.message = message


@dataclass
class UserSettings:
    """Settings a user changes in the Settings tab; persisted to config.json."""

    ram_cache_size: int = 2  # checkpoints kept loaded (on the device or in RAM)
    # Memory budgets for every loaded model (checkpoints, VAEs, segmenters, upscalers, ControlNets), in MiB;
    # 0 = automatic: RAM half of the machine's memory, the GPU 60% of its memory (see webui.model_manager.memory).
    ram_budget_mb: int = 0
    vram_budget_mb: int = 0
    live_preview_every: int = 4  # steps between preview images; 0 = off
    default_sampler: str = "Euler a"
    max_side: int = 2048
    max_pixels: int = 2048 * 2048
    max_steps: int = 150
    max_batch_size: int = 8
    max_batch_count: int = 100
    max_prompt_chars: int = 8000
    max_images: int = 200  # batch size x batch count per request
    max_request_pixels: int = 8 * 2048 * 2048  # all images one API request carries (and Extras makes), in pixels
    max_request_images: int = 100  # images one API request carries
    queue_size: int = 64
    save_images: bool = True
    enable_pnginfo: bool = True  # write the generation parameters into saved PNGs (and the API's images)
    randn_source: str = "CPU"  # starting noise: CPU (torch's CPU generator), GPU (the device's), NV (CUDA's, on the CPU)
    # Flow-matching models (SD3, Flux, Z-Image, Qwen-Image, built-in): timestep shift; 0 = each model's own
    flow_shift: float = 0.0
    # img2img and inpainting run exactly `steps` steps (a schedule 1 / denoising strength times as long), not
    # steps x denoising strength of a `steps`-long schedule
    img2img_fix_steps: bool = False
    builtin_plan_layout: bool = True  # the built-in model plans its layouts (and redraws objects) as its config says
    filename_digits: int = 5
    disabled_extensions: list[str] = field(default_factory=list)
    lora_fuse: bool = False  # fold a LoRA set used twice in a row into the weights (faster steps)
    lora_hotswap: bool = False  # swap LoRA weights in place, so a compiled denoiser stays compiled
    lora_max_rank: int = 128  # hot-swap pads every LoRA to this rank
    lora_keep_loaded: int = 4  # unused LoRAs kept loaded (inactive) so switching back is instant; 0 = drop at once
    compile_denoiser: bool = False  # torch.compile the UNet/transformer once LoRAs are hot-swapped
    # Face restoration (`restore_faces`): the restorer, CodeFormer's fidelity weight (0 = most restored, 1 = closest
    # to the input), and how faces are found: the detail fixer's finder ("" = its default) and CLIPSeg/SAM threshold
    face_restoration_model: str = "CodeFormer"
    code_former_weight: float = 0.5
    face_restoration_finder: str = ""
    face_restoration_confidence: float = 0.3
    # VAE tiling and slicing (webui.engine.tiling): Automatic (above 1536x1536 pixels or with tiled diffusion),
    # Always, Never; the tile in pixels (0 = the VAE's own, 512 for SD 1.x)
    vae_tiling: str = "Automatic"
    vae_tile_size: int = 0
    # How a checkpoint runs on the GPU (webui.model_manager.memory.choose_offload): auto (from the free GPU memory
    # and the model's size), none, model, sequential, group; --medvram, --lowvram and --offload override it
    offload_mode: str = "auto"
    # How each transformer/UNet is stored once loaded (webui.model_manager.formats): default (as --precision says),
    # fp8 (layerwise upcast), nf4 / int8 (bitsandbytes, CUDA only); a --precision fp8/nf4/int8 flag overrides it
    weight_precision: str = "default"
    # The CPU execution path (webui.engine.cpu_path, docs/CPU.md): auto (cpu_path.AUTO_BACKEND for full-size SD
    # 1.x/2.x UNets on a CPU device; plain for now), plain, openvino, compile (torch.compile)
    cpu_backend: str = "auto"
    tiny_vae_decode: bool = False  # decode with the tiny VAE (TAESD in models/VAE-approx): fast, slightly different
    tiny_vae_preview: bool = True  # live previews through the tiny VAE when its file is there

    def limits(self) -> Limits:
        return Limits(self.max_side, self.max_pixels, self.max_steps, self.max_batch_size,
                      self.max_batch_count, self.max_prompt_chars, self.max_images)

    def validate(self) -> None:
        """Raise the first `SettingError` (a ValueError naming the key), if any."""
        problems = self.problems()
        if problems:
            raise problems[0]

    def problems(self) -> list[SettingError]:
        """Every key with a value it cannot take (one error per key), in field order, types before ranges."""
        found: dict[str, SettingError] = {}

        def refuse(key: str, message: str) -> None:
            found.setdefault(key, SettingError(key, message))

        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(f.default, bool):
                if not isinstance(value, bool):
                    refuse(f.name, f"must be true or false, got {value!r}")
            elif isinstance(f.default, int):
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    refuse(f.name, f"must be a whole number >= 0, got {value!r}")
            elif isinstance(f.default, float):
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 100:
                    refuse(f.name, f"must be a number from 0 to 100, got {value!r}")
            elif isinstance(f.default, str) and not isinstance(value, str):
                refuse(f.name, f"must be text, got {value!r}")
        extensions = self.disabled_extensions
        if not isinstance(extensions, list) or not all(isinstance(name, str) for name in extensions):
            refuse("disabled_extensions", "must be a list of extension names")
        minimums = {"ram_cache_size": 1, "queue_size": 1,  # a queue.Queue of size 0 would hold any number of jobs
                    "lora_max_rank": 1, "max_request_pixels": 1, "max_request_images": 1}
        for name, lowest in minimums.items():
            if name not in found and getattr(self, name) < lowest:
                refuse(name, f"must be at least {lowest}")
        if "randn_source" not in found and self.randn_source not in RNG_SOURCES:
            refuse("randn_source", f"must be one of {', '.join(RNG_SOURCES)}; got {self.randn_source!r}")
        if "face_restoration_model" not in found and self.face_restoration_model not in FACE_RESTORERS:
            refuse("face_restoration_model", f"must be one of {', '.join(FACE_RESTORERS)}; got "
                                             f"{self.face_restoration_model!r}")
        for name in ("code_former_weight", "face_restoration_confidence"):
            if name not in found and not 0 <= getattr(self, name) <= 1:
                refuse(name, f"must be between 0 and 1, got {getattr(self, name)!r}")
        if "offload_mode" not in found and self.offload_mode not in OFFLOAD_CHOICES:
            refuse("offload_mode", f"must be one of {', '.join(OFFLOAD_CHOICES)}; got {self.offload_mode!r}")
        if "weight_precision" not in found and self.weight_precision not in WEIGHT_PRECISIONS:
            refuse("weight_precision", f"must be one of {', '.join(WEIGHT_PRECISIONS)}; got {self.weight_precision!r}")
        if "cpu_backend" not in found and self.cpu_backend not in CPU_BACKENDS:
            refuse("cpu_backend", f"must be one of {', '.join(CPU_BACKENDS)}; got {self.cpu_backend!r}")
        if "vae_tiling" not in found and self.vae_tiling not in VAE_TILING_CHOICES:
            refuse("vae_tiling", f"must be one of {', '.join(VAE_TILING_CHOICES)}; got {self.vae_tiling!r}")
        if "vae_tile_size" not in found and self.vae_tile_size and (self.vae_tile_size < 64 or self.vae_tile_size % 8):
            refuse("vae_tile_size", "must be 0 (the VAE's own) or a multiple of 8 from 64")
        if "max_side" not in found and (self.max_side < 64 or self.max_side % 8):
            refuse("max_side", "must be a multiple of 8 and at least 64")
        return list(found.values())


def coerce_setting(f: dataclasses.Field, value: Any) -> Any:
    """A value as the controls and clients send it, in the setting's own type where that is unambiguous: a
    whole-number float or numeric text for a number (a number box gives 4.0; clients send "4"), 0 or 1 for a
    flag, a tuple for a list. Anything else is left for `UserSettings.problems` to refuse."""
    if isinstance(f.default, bool):
        return bool(value) if not isinstance(value, bool) and isinstance(value, (int, float)) and value in (0, 1) \
            else value
    if isinstance(f.default, float) and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    if isinstance(f.default, int) and not isinstance(value, bool):
        try:
            number = float(value) if isinstance(value, (float, str)) else None
        except ValueError:
            return value
        return int(number) if number is not None and number.is_integer() else value
    if isinstance(value, tuple):
        return list(value)
    return value


_CHANGES = threading.Lock()  # one change at a time: read, check, write, make current

# Settings the engine reads for each job, so one request may carry its own values (the API's override_settings):
# saving, previews, the noise source, the flow shift, the built-in model's layout plan, the face finder. Limits,
# memory budgets and the like are the server's and never come from a request.
PER_REQUEST_SETTINGS = ("save_images", "enable_pnginfo", "live_preview_every", "randn_source", "flow_shift", "img2img_fix_steps",
                        "builtin_plan_layout", "filename_digits", "face_restoration_finder",
                        "face_restoration_confidence")


def checked_changes(current: UserSettings, changes: dict[str, Any], samplers: Collection[str] | None = None
                    ) -> tuple[UserSettings, list[SettingError]]:
    """(`current` with `changes` applied, the errors: one per bad key), checked as `apply_changes` checks them;
    nothing is written or made current."""
    fields = {f.name: f for f in dataclasses.fields(UserSettings)}
    new = dataclasses.replace(current, **{key: coerce_setting(fields[key], value)
                                          for key, value in changes.items() if key in fields})
    errors = [SettingError(key, "is not a setting") for key in changes if key not in fields] + \
        new.problems()
    if samplers is not None and "default_sampler" in changes and \
            not any(error.key == "default_sampler" for error in errors) and new.default_sampler not in samplers:
        errors.append(SettingError("default_sampler", f"unknown sampler {new.default_sampler!r}"))
    return new, errors


def job_settings(current: UserSettings, overrides: Any) -> UserSettings:
    """The settings one job runs with: `current` with a request's own values (`(key, value)` pairs) for the
    per-request settings; other keys are ignored here (the API refuses them before a request is made)."""
    own = {key: value for key, value in dict(overrides or ()).items() if key in PER_REQUEST_SETTINGS}
    return dataclasses.replace(current, **own) if own else current


def apply_changes(settings: Settings, changes: dict[str, Any], samplers: Collection[str] | None = None
                  ) -> tuple[UserSettings, list[SettingError]]:
    """The one way user settings change: check `changes` ({key: value}) against the current settings, and only
    when every value is good write config.json (atomically) and make them current.

    Returns (the settings now current, the errors): with any error, one per bad key, nothing has changed. With
    `samplers` (the names this Easel offers), a new `default_sampler` must be one of them.
    """
    with _CHANGES:
        current = settings.user
        new, errors = checked_changes(current, changes, samplers)
        if not errors and new.weight_precision in ("nf4", "int8") and new.weight_precision != current.weight_precision:
            from webui.model_manager.formats import check_storage  # torch: only when someone asks for bitsandbytes

            try:
                check_storage(new.weight_precision, settings.resolved_device(), "weight_precision")
            except ValueError as exc:
                errors = [SettingError("weight_precision", str(exc).removeprefix("weight_precision "))]
        if errors:
            return current, errors
        settings.write_user_settings(new)
        settings.user = new
        return new, []


@dataclass
class Settings:
    """Everything the app is built from: flags, folders and the user settings."""

    port: int = 7860
    listen: bool = False
    share: bool = False
    gradio_auth: str | None = None
    api: bool = False
    nowebui: bool = False
    data_dir: Path = ROOT
    ckpt_dirs: list[Path] = field(default_factory=list)
    lora_dirs: list[Path] = field(default_factory=list)
    vae_dirs: list[Path] = field(default_factory=list)
    device: str = "auto"
    precision: str = "auto"
    medvram: bool = False
    lowvram: bool = False
    offload_flag: str | None = None  # --offload: overrides the offload_mode setting (--medvram/--lowvram win)
    builtin_dir: Path = BUILTIN_MODELS_DIR
    gradio_auth_path: Path | None = None  # a file of user:pass lines (or comma-separated), added to --gradio-auth
    api_auth: str | None = None  # logins for the API only; None = the UI's logins
    share_insecure: bool = False  # allow --share without logins
    enable_insecure_extension_access: bool = False  # allow installing extensions while reachable beyond localhost
    allow_hub_downloads: bool = False  # "org/repo" names in requests may be fetched from the Hugging Face hub
    controlnet_dirs: list[Path] = field(default_factory=list)
    esrgan_dirs: list[Path] = field(default_factory=list)
    embedding_dirs: list[Path] = field(default_factory=list)  # --embeddings-dir
    max_upload_bytes: int = 64 * 1024 * 1024  # largest file uploaded to the UI, and largest API request body
    allowed_hosts: list[str] = field(default_factory=list)  # --allowed-hosts: more Host names Easel answers to
    cors_allow_origins: list[str] = field(default_factory=list)  # --cors-allow-origins: pages that may call Easel
    cors_allow_origins_regex: str | None = None  # --cors-allow-origins-regex
    forwarded_allow_ips: list[str] = field(default_factory=list)  # proxies whose X-Forwarded-For is believed
    api_server_stop: bool = False  # --api-server-stop: the API may stop, restart or kill the server
    workers: int = 0  # --workers: generation replicas on Ray (0: the in-process worker; docs/SCALING.md)
    ray_address: str | None = None  # --ray-address: join this Ray cluster instead of starting one
    min_workers: int = 0  # --min-workers: with it below --workers, Ray Serve scales the replicas between the two
    user: UserSettings = field(default_factory=UserSettings)
    load_message: str | None = None  # what happened when config.json was read, if worth telling

    def __repr__(self) -> str:
        """The settings with the logins masked (`webui.redact`), so a dump in a log shows no password."""
        from webui.redact import redact_mapping

        values = redact_mapping({f.name: getattr(self, f.name) for f in dataclasses.fields(self)})
        return f"Settings({', '.join(f'{key}={value!r}' for key, value in values.items())})"

    # Folders -----------------------------------------------------------------------------------
    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def outputs_dir(self) -> Path:
        return self.data_dir / "outputs"

    @property
    def config_path(self) -> Path:
        return self.data_dir / "config.json"

    def extension_dirs(self) -> list[Path]:
        dirs = [ROOT / "extensions"]
        if (self.data_dir / "extensions").resolve() != dirs[0].resolve():
            dirs.append(self.data_dir / "extensions")
        return dirs

    @property
    def hash_cache_path(self) -> Path:
        return self.data_dir / "cache" / "hashes.json"

    def checkpoint_dirs(self) -> list[Path]:
        """Full checkpoints, and transformer/UNet-only files (GGUF, fp8) in the folders Forge and ComfyUI use."""
        return [self.models_dir / "Stable-diffusion", self.models_dir / "diffusion_models", self.models_dir / "unet",
                *self.ckpt_dirs]

    def text_encoder_dirs(self) -> list[Path]:
        """Separate text encoder files (CLIP-L, CLIP-G, T5-XXL, Qwen), as Forge and ComfyUI keep them."""
        return [self.models_dir / "text_encoders", self.models_dir / "clip"]

    def diffusers_dirs(self) -> list[Path]:
        return [self.models_dir / "diffusers"]

    def all_vae_dirs(self) -> list[Path]:
        return [self.models_dir / "VAE", *self.vae_dirs]

    def all_lora_dirs(self) -> list[Path]:
        return [self.models_dir / "Lora", *self.lora_dirs]

    def all_embedding_dirs(self) -> list[Path]:
        return [self.models_dir / "embeddings", *self.embedding_dirs]

    def all_controlnet_dirs(self) -> list[Path]:
        return [self.models_dir / "ControlNet", *self.controlnet_dirs]

    def all_upscaler_dirs(self) -> list[Path]:
        return [self.models_dir / "ESRGAN", *self.esrgan_dirs]

    def gan_dirs(self) -> list[Path]:
        """StyleGAN2/3 generator files (webui.gan)."""
        return [self.models_dir / "GAN"]

    def served_paths(self) -> tuple[list[str], list[str]]:
        """(allowed, blocked) paths for Gradio's file routes: outputs yes; models, settings and logins never."""
        from webui.security import served_paths

        return served_paths(self)

    def builtin_dirs(self) -> list[Path]:
        """The built-in model ships with the code, whatever --data-dir says."""
        return [self.builtin_dir]

    # Device ------------------------------------------------------------------------------------
    def resolved_device(self) -> str:
        if self.device != "auto":
            return self.device
        import torch

        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return "mps"
        return "cpu"

    def resolved_dtype(self) -> Any:
        import torch

        device = self.resolved_device()
        table = {"full": torch.float32, "fp32": torch.float32, "half": torch.float16, "fp16": torch.float16,
                 "bf16": torch.bfloat16}
        if self.precision in table:
            return table[self.precision]
        if self.precision in ("fp8", "nf4", "int8"):  # stored compactly, computed in bf16 (fp16 on Apple GPUs)
            return torch.float16 if device == "mps" else torch.bfloat16
        return torch.float16 if device in ("cuda", "mps") else torch.float32

    def weight_storage(self) -> str:
        """How the transformer/UNet is stored: "fp8", "nf4", "int8", or "" (in the compute dtype): the
        --precision flag when it names one, else the weight_precision setting (read at each load)."""
        if self.precision in ("fp8", "nf4", "int8"):
            return self.precision
        return "" if self.user.weight_precision == "default" else self.user.weight_precision

    def offload(self) -> str:
        """The offload mode asked for: --lowvram (sequential), --medvram (model), --offload, else the setting."""
        if self.lowvram:
            return "sequential"
        if self.medvram:
            return "model"
        return self.offload_flag or self.user.offload_mode

    def auth_pairs(self) -> list[tuple[str, str]]:
        """The UI's logins: `--gradio-auth user:pass[,user2:pass2]` plus those in the `--gradio-auth-path` file."""
        from webui.security import ui_logins

        return ui_logins(self.gradio_auth, self.gradio_auth_path)

    def api_auth_pairs(self) -> list[tuple[str, str]]:
        """The API's logins: `--api-auth` when given, else the UI's."""
        from webui.security import api_logins

        return api_logins(self.api_auth, self.auth_pairs())

    # Persistence -------------------------------------------------------------------------------
    def load_user_settings(self) -> None:
        """Read config.json; keep a corrupt file aside and fall back to defaults."""
        path = self.config_path
        if not path.exists():
            return
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(raw, dict):
                raise ValueError("top level is not an object")
            known = {f.name for f in dataclasses.fields(UserSettings)}
            user = UserSettings(**{k: v for k, v in raw.items() if k in known})
            user.validate()
            self.user = user
        except (ValueError, TypeError, OSError) as exc:  # bad JSON, bad values, not UTF-8, not a readable file
            backup = path.with_name(path.name + ".bak")
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            try:
                os.replace(path, backup)
                kept = f"it was kept as {backup.name}"
            except OSError as move_error:
                kept = f"it could not be moved aside ({move_error.strerror or move_error})"
            self.user = UserSettings()
            self.load_message = f"config.json could not be read ({reason}); {kept} and defaults are used"
            log.warning(self.load_message)

    def save_user_settings(self) -> None:
        """Write the current user settings to config.json (changes go through `apply_changes`)."""
        self.write_user_settings(self.user)

    def write_user_settings(self, user: UserSettings) -> None:
        """Write `user` to config.json atomically: a temporary file beside it, then renamed over it."""
        user.validate()
        self.config_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.config_path.with_name(self.config_path.name + ".tmp")
        tmp.write_text(json.dumps(dataclasses.asdict(user), indent=2), encoding="utf-8")
        os.replace(tmp, self.config_path)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="launch.py", description="Easel: a local-first web UI for images")
    p.add_argument("--port", type=int, default=7860, help="port to listen on (default 7860)")
    p.add_argument("--listen", action="store_true", help="listen on 0.0.0.0 so others on the network can connect")
    p.add_argument("--share", action="store_true", help="open a public Gradio link")
    p.add_argument("--gradio-auth", default=None, metavar="USER:PASS[,USER2:PASS2]", help="protect the UI with logins")
    p.add_argument("--gradio-auth-path", type=Path, default=None, metavar="FILE",
                   help="file with user:pass logins (one per line or comma-separated)")
    p.add_argument("--api-auth", default=None, metavar="USER:PASS[,USER2:PASS2]",
                   help="logins for the API (default: the UI's logins)")
    p.add_argument("--share-insecure", action="store_true", help="allow --share without logins (not recommended)")
    p.add_argument("--enable-insecure-extension-access", action="store_true",
                   help="allow installing extensions from the UI even with --listen or --share")
    p.add_argument("--allow-hub-downloads", action="store_true",
                   help="let requests name Hugging Face repositories (org/repo) to download, and fetch missing "
                        "companions and annotators; off by default: only models in Easel's folders are used")
    p.add_argument("--allowed-hosts", default=None, metavar="HOST[,HOST]",
                   help="more host names Easel answers to (behind a reverse proxy): name, *.domain or *")
    p.add_argument("--cors-allow-origins", default=None, metavar="ORIGIN[,ORIGIN]",
                   help="web pages on other origins allowed to call Easel, e.g. http://localhost:3000")
    p.add_argument("--cors-allow-origins-regex", default=None, metavar="REGEX",
                   help="a regular expression for more allowed origins (matched against the whole origin)")
    p.add_argument("--forwarded-allow-ips", default=None, metavar="IP[,IP]",
                   help="reverse proxies whose X-Forwarded-For header gives the client's address")
    p.add_argument("--api", action="store_true", help="serve the AUTOMATIC1111-compatible API at /sdapi/v1")
    p.add_argument("--nowebui", action="store_true", help="serve the API only, no UI")
    p.add_argument("--api-server-stop", action="store_true",
                   help="add /sdapi/v1/server-stop, server-restart and server-kill (behind the API's logins)")
    p.add_argument("--data-dir", type=Path, default=None, help="where settings, outputs and user models live")
    p.add_argument("--ckpt-dir", type=Path, action="append", default=[], help="extra checkpoint folder")
    p.add_argument("--lora-dir", type=Path, action="append", default=[], help="extra LoRA folder")
    p.add_argument("--vae-dir", type=Path, action="append", default=[], help="extra VAE folder")
    p.add_argument("--controlnet-dir", type=Path, action="append", default=[], help="extra ControlNet model folder")
    p.add_argument("--esrgan-models-path", type=Path, action="append", default=[], help="extra upscaler model folder")
    p.add_argument("--embeddings-dir", type=Path, action="append", default=[],
                   help="extra textual-inversion embeddings folder")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    p.add_argument("--precision", default="auto", choices=["auto", "full", "half", "bf16", "fp8", "nf4", "int8"],
                   help="weights precision; fp8 stores the transformer/UNet in fp8 computed in bf16, nf4/int8 "
                        "quantize it with bitsandbytes (CUDA only)")
    p.add_argument("--medvram", action="store_true", help="offload idle model parts to the CPU")
    p.add_argument("--lowvram", action="store_true", help="offload layer by layer (slow, least VRAM)")
    p.add_argument("--offload", choices=list(OFFLOAD_CHOICES), default=None,
                   help="how checkpoints run on the GPU: auto (from free VRAM and model size), none, model "
                        "(= --medvram), sequential (= --lowvram), group (layer by layer with CUDA streams)")
    p.add_argument("--workers", type=int, default=0, metavar="N",
                   help="run generation on N replicas on Ray (a local Ray instance unless --ray-address; one per "
                        "GPU by default); needs the 'cluster' extra: pip install -e .[cluster]")
    p.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="join an existing Ray cluster (ray start --head) for the generation replicas")
    p.add_argument("--min-workers", type=int, default=0, metavar="N",
                   help="scale the replicas between N and --workers on the queue's length (Ray Serve autoscaling)")
    p.add_argument("--exit", action="store_true", help="set up, then exit")
    p.add_argument("--skip-install", action="store_true", help="skip creating .venv and installing")
    return p


def check_workers(value: int, flag: str = "--workers") -> int:
    """--workers (or --min-workers) as given; ValueError naming the flag when it is negative."""
    if value < 0:
        raise ValueError(f"{flag} must be 0 or more, got {value}")
    return value


def check_min_workers(value: int, workers: int) -> int:
    """--min-workers as given; ValueError naming the flag when it is negative or above --workers."""
    check_workers(value, "--min-workers")
    if value and value > workers:
        raise ValueError(f"--min-workers ({value}) must be at most --workers ({workers})")
    return value


def settings_from_args(args: argparse.Namespace) -> Settings:
    from webui.http_guard import (parse_allowed_hosts, parse_cors_origins, parse_cors_regex,
                                  parse_forwarded_allow_ips)

    parse_cors_regex(args.cors_allow_origins_regex)  # a bad expression stops the start, naming the flag
    s = Settings(
        port=args.port, listen=args.listen, share=args.share, gradio_auth=args.gradio_auth,
        api=args.api or args.nowebui, nowebui=args.nowebui,
        data_dir=(args.data_dir or ROOT).resolve(),
        ckpt_dirs=[p.resolve() for p in args.ckpt_dir], lora_dirs=[p.resolve() for p in args.lora_dir],
        vae_dirs=[p.resolve() for p in args.vae_dir], device=args.device, precision=args.precision,
        medvram=args.medvram, lowvram=args.lowvram, offload_flag=getattr(args, "offload", None),
        gradio_auth_path=args.gradio_auth_path.resolve() if args.gradio_auth_path else None,
        api_auth=args.api_auth, share_insecure=args.share_insecure,
        enable_insecure_extension_access=args.enable_insecure_extension_access,
        allow_hub_downloads=args.allow_hub_downloads,
        controlnet_dirs=[p.resolve() for p in args.controlnet_dir],
        embedding_dirs=[p.resolve() for p in args.embeddings_dir],
        esrgan_dirs=[p.resolve() for p in args.esrgan_models_path],
        allowed_hosts=parse_allowed_hosts(args.allowed_hosts),
        cors_allow_origins=parse_cors_origins(args.cors_allow_origins),
        cors_allow_origins_regex=args.cors_allow_origins_regex or None,
        forwarded_allow_ips=parse_forwarded_allow_ips(args.forwarded_allow_ips),
        api_server_stop=args.api_server_stop,
        workers=check_workers(getattr(args, "workers", 0)), ray_address=getattr(args, "ray_address", None) or None,
        min_workers=check_min_workers(getattr(args, "min_workers", 0), getattr(args, "workers", 0)),
    )
    s.api_auth_pairs()  # fail early on a malformed --gradio-auth, --gradio-auth-path file or --api-auth
    s.load_user_settings()
    return s
