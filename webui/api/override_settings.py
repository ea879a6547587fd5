"""`override_settings` of a txt2img or img2img body: every key honoured for that request only, or a 422 naming it
(`override_settings.<key>`).

The keys fall into five kinds:

- the model, VAE, clip skip and face restorer (`sd_model_checkpoint`, `sd_vae`, `CLIP_stop_at_last_layers`,
  `face_restoration_model`, `code_former_weight`): fields of the request itself;
- per-job settings (`webui.settings.PER_REQUEST_SETTINGS`, by AUTOMATIC1111's option name or Easel's setting name:
  `samples_save`, `randn_source`, `show_progress_every_n_steps`, ...): the request carries them
  (`setting_overrides`), checked exactly as POST /options checks them; nothing global changes, so requests running
  side by side never see each other's values;
- options whose value is fixed in Easel (`samples_format` png, `eta_noise_seed_delta` 0,
  ...): accepted at that value, a 422 saying why otherwise;
- the other options GET /options reports (server state: the checkpoint cache, upscaler tiles, output folders):
  accepted at their current value, a 422 otherwise, as are Easel settings that are the server's (limits, memory);
- anything else: a 422 naming it and listing the keys Easel applies per request.

A null value means "not overridden". With `override_settings_restore_afterwards: false` the honoured keys are then
kept as POST /options keeps them (`kept_options`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from webui.api.context import whole_number
from webui.api.errors import ApiError
from webui.api.options import setting_value
from webui.engine.face_restore import canonical_name
from webui.settings import PER_REQUEST_SETTINGS, UserSettings, checked_changes, coerce_setting

PREFIX = "override_settings."

# the request's own fields
REQUEST_KEYS = ("sd_model_checkpoint", "sd_vae", "CLIP_stop_at_last_layers", "face_restoration_model",
                "code_former_weight")

# AUTOMATIC1111 option name -> the per-job setting it is (Easel's own names are accepted too)
SETTING_KEYS = {"samples_save": "save_images", "show_progress_every_n_steps": "live_preview_every",
                "live_previews_enable": "live_preview_every", "randn_source": "randn_source",
                "flow_shift": "flow_shift", "img2img_fix_steps": "img2img_fix_steps", "enable_pnginfo": "enable_pnginfo",
                **{key: key for key in PER_REQUEST_SETTINGS}}

# options Easel has one behaviour for: the values that describe it, and why no other is possible
FIXED: dict[str, tuple[tuple[Any, ...], str]] = {
    "samples_format": (("png",), "Easel saves PNG images only"),
    "eta_noise_seed_delta": ((0,), "Easel's samplers draw their per-step noise from each image's seed, with no "
                                   "offset"),
    # Easel keeps no per-model VAE preference, so the selected VAE applies either way
    "sd_vae_overrides_per_model_preferences": ((True, False), "must be true or false"),
    "sd_lora": (("None", ""), "add LoRAs with <lora:name:weight> in the prompt"),
    "upscaler_for_img2img": ((None, "None", ""), "img2img resizes its input with Lanczos"),
}

# shown when a key is unknown: the AUTOMATIC1111 names Easel applies per request
HONOURED = (*REQUEST_KEYS, "samples_save", "randn_source", "show_progress_every_n_steps", "live_previews_enable",
            "flow_shift", "img2img_fix_steps", "enable_pnginfo", *FIXED)


@dataclass
class Overrides:
    """What a body's override_settings ask of its request."""

    checkpoint: Any = None  # sd_model_checkpoint, as sent (None: not overridden)
    values: dict[str, Any] = field(default_factory=dict)  # request fields: clip_skip, vae, face restorer, weight
    settings: dict[str, Any] = field(default_factory=dict)  # per-job settings, by setting key, checked
    names: dict[str, str] = field(default_factory=dict)  # setting key -> the option name the client used

    def setting_pairs(self) -> tuple[tuple[str, Any], ...]:
        return tuple(sorted(self.settings.items()))


def read_overrides(override: dict[str, Any] | None, current: UserSettings, reported: dict[str, Any],
                   check_vae: Any) -> Overrides:
    """Every key of `override` checked (ApiError 422 naming `override_settings.<key>`) and sorted into what the
    request takes. `current`: the user settings now; `reported`: GET /options' answer; `check_vae(value, field)`
    the VAE check /options uses."""
    found = Overrides()
    raw: dict[str, Any] = {}  # setting key -> value as sent
    for key, value in (override or {}).items():
        name = PREFIX + key
        if value is None:
            continue
        if key == "sd_model_checkpoint":
            found.checkpoint = value
        elif key == "CLIP_stop_at_last_layers":
            found.values["clip_skip"] = whole_number(value, name, 1, 12)
        elif key == "sd_vae":
            found.values["vae"] = check_vae(value, name)
        elif key in ("face_restoration_model", "code_former_weight"):
            found.values.update(face_value(key, value))
        elif key in SETTING_KEYS:
            setting, wanted = SETTING_KEYS[key], option_value(key, value, current)
            if setting in raw and not same(wanted, raw[setting]):
                raise ApiError(422, name, f"sets {setting} to {short(wanted)}, and "
                                          f"override_settings.{found.names[setting]} to {short(raw[setting])}")
            raw.setdefault(setting, wanted)
            found.names.setdefault(setting, key)
        elif key in FIXED or key in reported:
            check_described(key, value, reported, name, "not applied per request (a server setting")
        elif key in {f.name for f in dataclasses.fields(UserSettings)}:
            raise ApiError(422, name, "not applied per request (a server setting); change it in the Settings tab")
        else:
            raise ApiError(422, name, "not a setting Easel knows; it applies these per request: "
                                      f"{', '.join(HONOURED)}")
    if raw:
        _, errors = checked_changes(current, raw)
        if errors:
            error = errors[0]
            raise ApiError(422, PREFIX + found.names.get(error.key, error.key), error.message)
        fields = {f.name: f for f in dataclasses.fields(UserSettings)}
        found.settings = {key: coerce_setting(fields[key], value) for key, value in raw.items()}
    return found


def option_value(option: str, value: Any, current: UserSettings) -> Any:
    """An option's value as its setting takes it (AUTOMATIC1111's -1 preview period is 0; live_previews_enable
    turns previews off, or on at the current period, 4 steps when it is off)."""
    if option == "live_previews_enable":
        if not isinstance(value, bool):
            raise ApiError(422, PREFIX + option, f"must be true or false, got {short(value)}")
        return (current.live_preview_every or 4) if value else 0
    return setting_value(option, value)


def face_value(key: str, value: Any) -> dict[str, Any]:
    """face_restoration_model or code_former_weight, checked, as the request's own field."""
    if key == "face_restoration_model":
        restorer = canonical_name(value)
        if restorer is None:
            raise ApiError(422, PREFIX + key, f"must be CodeFormer or GFPGAN, got {short(value)}")
        return {key: restorer}
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ApiError(422, PREFIX + key, f"must be a number from 0 to 1, got {short(value)}")
    return {key: float(value)}


def check_described(key: str, value: Any, reported: dict[str, Any], name: str, why_not: str) -> None:
    """A fixed option (FIXED) or one GET /options reports, accepted only at the value that describes Easel now;
    else ApiError 422 on `name`, saying `why_not` for a reported option another value of which cannot be set."""
    if key in FIXED:
        allowed, why = FIXED[key]
        if not any(same(value, ok) for ok in allowed):
            shown = " or ".join(json_text(ok) for ok in allowed)
            raise ApiError(422, name, f"{why}; only {shown} is accepted, got {short(value)}")
    elif not same(value, reported[key]):
        raise ApiError(422, name, f"{why_not}, now {json_text(reported[key])}); got {short(value)}")


def kept_options(found: Overrides) -> dict[str, Any]:
    """The user settings to keep after the request (override_settings_restore_afterwards: false), by setting key."""
    kept = dict(found.settings)
    kept.update({key: found.values[key] for key in ("face_restoration_model", "code_former_weight")
                 if key in found.values})
    return kept


def same(value: Any, expected: Any) -> bool:
    """Whether a sent value is `expected`: booleans as true/false or 0/1, numbers by value, text in any case."""
    if isinstance(expected, bool) or isinstance(value, bool):
        if isinstance(value, bool) and isinstance(expected, bool):
            return value == expected
        return isinstance(expected, bool) and isinstance(value, int) and value in (0, 1) and bool(value) == expected
    if isinstance(expected, (int, float)) and isinstance(value, (int, float)):
        return value == expected
    if isinstance(expected, str) and isinstance(value, str):
        return value.strip().lower() == expected.lower()
    return value == expected


def json_text(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return f'"{value}"' if isinstance(value, str) else str(value)


def short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
