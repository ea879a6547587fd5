"""`apply_changes`, the one path for settings changes: every bad key is named, nothing changes on an error, and a
good change is written to config.json before it becomes current."""
from __future__ import annotations

import json

from webui.settings import Settings, apply_changes


def test_every_bad_key_is_named_and_nothing_changes(tmp_path) -> None:
    settings = Settings(data_dir=tmp_path)
    before = settings.user
    current, errors = apply_changes(settings, {"max_side": 100, "queue_size": "many", "save_images": True,
                                               "no_such_setting": 1})
    assert current is before and settings.user is before and not settings.config_path.exists()
    assert [(e.key, e.message) for e in errors] == [("no_such_setting", "is not a setting"),
                                                    ("queue_size", "must be a whole number >= 0, got 'many'"),
                                                    ("max_side", "must be a multiple of 8 and at least 64")]
    current, errors = apply_changes(settings, {"default_sampler": "Nope"}, samplers=["Euler", "DDIM"])
    assert [str(e) for e in errors] == ["default_sampler: unknown sampler 'Nope'"] and settings.user is before


def test_a_good_change_is_written_then_made_current(tmp_path) -> None:
    settings = Settings(data_dir=tmp_path)
    new, errors = apply_changes(settings, {"max_steps": 40.0, "save_images": 0, "disabled_extensions": ("b", "a")},
                                samplers=["Euler"])
    assert errors == [] and settings.user is new
    assert (new.max_steps, new.save_images, new.disabled_extensions) == (40, False, ["b", "a"])
    stored = json.loads(settings.config_path.read_text())
    assert stored["max_steps"] == 40 and stored["save_images"] is False
    reloaded = Settings(data_dir=tmp_path)
    reloaded.load_user_settings()
    assert reloaded.user == new and reloaded.load_message is None
