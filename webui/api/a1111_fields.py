"""Every field of AUTOMATIC1111's txt2img and img2img request bodies, with its AUTOMATIC1111 default, and the rule
that no field is silently dropped.

A field is honoured when Easel's body declares it (a request field with `FieldSpec.api`, or one of the body's own
fields in `webui.api.schemas`): it is then not looked up here at all, so a field declared later is honoured without
editing this table. An AUTOMATIC1111 field Easel does not honour is accepted only with a value that means "off"
or "default" (`neutral`: AUTOMATIC1111's default, and what clients such as the `webuiapi` package send for it);
any other value is a 422 naming the field and why. A field that is neither Easel's nor AUTOMATIC1111's is a 422
naming it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from webui.api.errors import ApiError


@dataclass(frozen=True)
class A1111Field:
    """One AUTOMATIC1111 request field: its default there, the values that leave it off, and why others are
    refused while Easel does not honour it."""

    default: Any
    neutral: tuple[Any, ...] = ()
    why: str = "not available in Easel"

    def accepts(self, value: Any) -> bool:
        if value is None:
            return True
        for ok in (self.default, *self.neutral):
            if ok is None:
                continue
            if isinstance(ok, bool) or isinstance(value, bool):
                if isinstance(ok, bool) and isinstance(value, bool) and ok == value:
                    return True
                if isinstance(ok, bool) and isinstance(value, int) and value in (0, 1) and bool(value) == ok:
                    return True  # AUTOMATIC1111 clients send 0/1 for booleans
                continue
            if isinstance(ok, (int, float)) and isinstance(value, (int, float)) and ok == value:
                return True  # exact for ints and floats alike (2 == 2.0), and no overflow on huge JSON numbers
            if type(ok) is type(value) and ok == value:
                return True
        return False


def _field(default: Any, *neutral: Any, why: str = "not available in Easel") -> A1111Field:
    return A1111Field(default, tuple(neutral), why)


_NO_VARIATION = "variation seeds are not available"
_NO_SCHEDULER_KNOBS = "Easel's samplers do not take this setting; only its default is accepted"
_NO_REFINER = "the refiner is not available"
_NO_HIRES_OPTION = "this hires fix option is not available"

# Fields of AUTOMATIC1111's StableDiffusionProcessing that its API exposes, with the fields its API adds.
SHARED_FIELDS: dict[str, A1111Field] = {
    "prompt": _field(""),
    "negative_prompt": _field(""),
    "styles": _field(None, [], why="prompt styles are not available"),
    "seed": _field(-1),
    "subseed": _field(-1, why=_NO_VARIATION),
    "subseed_strength": _field(0.0, why=_NO_VARIATION),
    "seed_resize_from_h": _field(-1, 0, why=_NO_VARIATION),
    "seed_resize_from_w": _field(-1, 0, why=_NO_VARIATION),
    "sampler_name": _field(None),
    "scheduler": _field(None),
    "batch_size": _field(1),
    "n_iter": _field(1),
    "steps": _field(50),
    "cfg_scale": _field(7.0),
    "width": _field(512),
    "height": _field(512),
    "restore_faces": _field(None, False, why="face restoration is not available"),  # honoured: a declared field
    "tiling": _field(None, False, why="seamless tiling is not available"),
    "do_not_save_samples": _field(False, True, why="the API saves images only when save_images is true"),
    "do_not_save_grid": _field(False, True, why="Easel makes no grids"),
    "eta": _field(None, 0.0, 1.0, why="the samplers use their own eta (1 for ancestral samplers, 0 for DDIM)"),
    "s_min_uncond": _field(None, 0.0, why=_NO_SCHEDULER_KNOBS),
    "s_churn": _field(None, 0.0, why=_NO_SCHEDULER_KNOBS),
    "s_tmax": _field(None, 0.0, why=_NO_SCHEDULER_KNOBS),
    "s_tmin": _field(None, 0.0, why=_NO_SCHEDULER_KNOBS),
    "s_noise": _field(None, 1.0, why=_NO_SCHEDULER_KNOBS),
    "override_settings": _field(None, {}),
    "override_settings_restore_afterwards": _field(True),
    "refiner_checkpoint": _field(None, "", why=_NO_REFINER),
    "refiner_switch_at": _field(None, why=_NO_REFINER),
    "disable_extra_networks": _field(False, why="<lora:...> tags are always applied"),
    "firstpass_image": _field(None, "", why="a first-pass image for the hires fix is not available"),
    "comments": _field(None, {}, why="comments are not written"),
    "sampler_index": _field("Euler"),
    "script_name": _field(None),
    "script_args": _field([]),
    "send_images": _field(True),
    "save_images": _field(False),
    "alwayson_scripts": _field({}),
    "force_task_id": _field(None, "", why="task ids are chosen by Easel"),
    "infotext": _field(None, "", why="send the parameters as fields instead of an infotext"),
}

TXT2IMG_FIELDS: dict[str, A1111Field] = {
    **SHARED_FIELDS,
    "enable_hr": _field(False),
    "denoising_strength": _field(0.75),
    "firstphase_width": _field(0, why="the old hires fix first-pass size is not available; use hr_scale"),
    "firstphase_height": _field(0, why="the old hires fix first-pass size is not available; use hr_scale"),
    "hr_scale": _field(2.0),
    "hr_upscaler": _field(None),
    "hr_second_pass_steps": _field(0),
    "hr_resize_x": _field(0),
    "hr_resize_y": _field(0),
    "hr_checkpoint_name": _field(None, "", "Use same checkpoint", why=_NO_HIRES_OPTION),
    "hr_sampler_name": _field(None, "", "Use same sampler", why=_NO_HIRES_OPTION),
    "hr_scheduler": _field(None, "", "Use same scheduler", why=_NO_HIRES_OPTION),
    "hr_prompt": _field("", why=_NO_HIRES_OPTION),
    "hr_negative_prompt": _field("", why=_NO_HIRES_OPTION),
}

IMG2IMG_FIELDS: dict[str, A1111Field] = {
    **SHARED_FIELDS,
    "init_images": _field(None),
    "resize_mode": _field(0),
    "denoising_strength": _field(0.75),
    "image_cfg_scale": _field(None, 1.5, why="image CFG applies to instruction-editing models, which img2img "
                                            "does not run"),
    "mask": _field(None),
    "mask_blur_x": _field(4),
    "mask_blur_y": _field(4),
    "mask_blur": _field(None),
    "mask_round": _field(True, why="masks are always rounded"),
    "inpainting_fill": _field(0),
    "inpaint_full_res": _field(True),
    "inpaint_full_res_padding": _field(0),
    "inpainting_mask_invert": _field(0),
    "initial_noise_multiplier": _field(None, 1.0, why="a noise multiplier is not available"),
    "latent_mask": _field(None, "", why="a separate latent mask is not available"),
    "include_init_images": _field(False),
}

FIELDS_BY_ENDPOINT: dict[str, dict[str, A1111Field]] = {"txt2img": TXT2IMG_FIELDS, "img2img": IMG2IMG_FIELDS}


def unhonoured(endpoint: str, declared: set[str]) -> dict[str, A1111Field]:
    """The AUTOMATIC1111 fields of an endpoint that the body (`declared`: its field names) does not honour."""
    return {name: spec for name, spec in FIELDS_BY_ENDPOINT[endpoint].items() if name not in declared}


def check_extra_fields(endpoint: str, declared: set[str], extra: dict[str, Any] | None) -> None:
    """ApiError 422 for the first field of `extra` (what the body did not declare) that is not AUTOMATIC1111's, or
    is AUTOMATIC1111's with a value Easel cannot honour."""
    table = FIELDS_BY_ENDPOINT[endpoint]
    for name, value in (extra or {}).items():
        spec = table.get(name)
        if spec is None:
            other = "img2img" if endpoint == "txt2img" else "txt2img"
            where = f" (it is a field of {other})" if name in FIELDS_BY_ENDPOINT[other] else ""
            raise ApiError(422, name, f"unknown field for {endpoint}{where}; Easel refuses fields it would ignore")
        if name in declared:
            continue
        if not spec.accepts(value):
            shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
            raise ApiError(422, name, f"{spec.why}; only {_defaults_text(spec)} is accepted, got {shown}")


def _defaults_text(spec: A1111Field) -> str:
    values = ["null", *(_json(v) for v in (spec.default, *spec.neutral) if v is not None)]
    return " or ".join(dict.fromkeys(values))


def _json(value: Any) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)
