"""The Settings tab validates, applies and persists user settings; a bad value names its field."""
from __future__ import annotations

import json

import pytest

from webui.ui.tabs.settings import LABELS, apply_values


def test_apply_saves_valid_settings(built_ui) -> None:
    _, ui = built_ui
    settings = ui.easel.settings
    new = apply_values(ui, {"max_steps": 40.0, "live_preview_every": 2, "save_images": False,
                            "default_sampler": "DDIM"})
    assert settings.user is new and new.max_steps == 40 and isinstance(new.max_steps, int)
    stored = json.loads(settings.config_path.read_text())
    assert stored["max_steps"] == 40 and stored["save_images"] is False and stored["default_sampler"] == "DDIM"


@pytest.mark.parametrize("values,field", [
    ({"max_side": 100}, "max_side"),
    ({"ram_cache_size": 0}, "ram_cache_size"),
    ({"queue_size": None}, "queue_size"),
    ({"max_steps": -3}, "max_steps"),
    ({"default_sampler": "Nope"}, "default_sampler"),
    ({"face_restoration_model": "RestoreFormer"}, "face_restoration_model"),
    ({"code_former_weight": 1.5}, "code_former_weight"),
])
def test_bad_values_name_the_field_and_change_nothing(built_ui, values: dict, field: str) -> None:
    _, ui = built_ui
    before = ui.easel.settings.user
    with pytest.raises(ValueError, match=f"^{field}:"):
        apply_values(ui, values)
    assert ui.easel.settings.user is before
    assert not ui.easel.settings.config_path.exists()


def test_every_user_setting_has_a_label() -> None:
    import dataclasses

    from webui.settings import UserSettings

    assert {f.name for f in dataclasses.fields(UserSettings)} <= set(LABELS)


def test_load_message_is_shown(tmp_path) -> None:
    from tests.ui.conftest import StubEasel
    from webui.ui.app import build_ui

    easel = StubEasel(tmp_path)
    easel.settings.load_message = "config.json could not be read (bad JSON); defaults are used"
    blocks, _ = build_ui(easel)
    try:
        texts = [getattr(b, "value", "") for b in blocks.blocks.values()]
        assert any("config.json could not be read" in str(t) for t in texts)
    finally:
        blocks.close()
