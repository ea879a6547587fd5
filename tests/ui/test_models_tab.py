"""The Models tab's table and memory line over a real model manager with the tiny SD 1.x model."""
from __future__ import annotations

import re

from webui.ui.app import build_ui
from webui.ui.tabs.models import checkpoint_rows, human_bytes, memory_text


def test_rows_show_family_hash_and_load_state(make_easel) -> None:
    easel = make_easel()
    blocks, ui = build_ui(easel)
    try:
        rows = {row[0]: row for row in checkpoint_rows(ui)}
        assert rows["tiny-sd1"][1] == "sd1" and rows["tiny-sd1"][4] == ""
        easel.manager.compute_hash("tiny-sd1")
        assert re.fullmatch(r"[0-9a-f]{10}", checkpoint_rows(ui)[0][2])
        easel.manager.get("tiny-sd1", "txt2img")
        assert {row[0]: row for row in checkpoint_rows(ui)}["tiny-sd1"][4] == "on device"
        text = memory_text(easel.manager.memory_report())
        assert "1/2 models cached" in text and "tiny-sd1 (active)" in text
    finally:
        blocks.close()


def test_human_bytes() -> None:
    assert human_bytes(512) == "512 B"
    assert human_bytes(3 * 1024 * 1024) == "3.0 MiB"
    assert human_bytes(5 * 1024**4) == "5120.0 GiB"
