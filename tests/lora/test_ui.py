"""The LoRA picker and the Models tab's LoRA table, on real listed entries."""
from __future__ import annotations

from pathlib import Path

from webui.model_manager.identify import Arch
from webui.model_manager.loras import LoraEntry
from webui.ui.lora_picker import describe, insert_tag, lora_tag
from webui.ui.tabs.models import lora_rows


def test_insert_tag_appends_once() -> None:
    assert lora_tag("ink") == "<lora:ink:1>" and lora_tag("ink", 0.75) == "<lora:ink:0.75>"
    assert insert_tag("a castle ", "styles/ink") == "a castle <lora:styles/ink:1>"
    assert insert_tag("", "ink") == "<lora:ink:1>"
    assert insert_tag("a castle <lora:ink:0.4>", "ink") == "a castle <lora:ink:0.4>"  # already there: kept
    assert insert_tag("a castle", None) == "a castle"


def test_descriptions_and_table_rows() -> None:
    entry = LoraEntry("ink", Path("/m/ink.safetensors"), Arch.SD1, "0123456789ab", "kohya", ("zqx", "ink wash"),
                      rank=16)
    assert describe(entry) == "SD 1.x · rank 16 · hash 0123456789ab · trigger: zqx, ink wash"
    assert lora_rows([entry]) == [["ink", "SD 1.x", "0123456789ab", "zqx, ink wash"]]
    assert lora_rows([]) == []
