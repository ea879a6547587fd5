"""Prompt syntax: emphasis weights and LoRA tags as AUTOMATIC1111 parses them."""
import pytest

from webui.engine.prompts import LoraTag, extract_loras, parse_emphasis, strip_emphasis


@pytest.mark.parametrize("text, expected", [
    ("a cat", [("a cat", 1.0)]),
    ("a (cat)", [("a ", 1.0), ("cat", 1.1)]),
    ("a ((cat))", [("a ", 1.0), ("cat", pytest.approx(1.21))]),
    ("a [cat]", [("a ", 1.0), ("cat", pytest.approx(1 / 1.1))]),
    ("a (cat:1.5) dog", [("a ", 1.0), ("cat", 1.5), (" dog", 1.0)]),
    ("(a (cat:0.5):2)", [("a ", 2.0), ("cat", 1.0)]),
    (r"a \(cat\)", [("a (cat)", 1.0)]),
    ("a (unclosed", [("a ", 1.0), ("unclosed", 1.1)]),
    ("time: 12:30", [("time: 12:30", 1.0)]),
])
def test_emphasis(text, expected):
    assert parse_emphasis(text) == expected


def test_strip_emphasis():
    assert strip_emphasis("a (red:1.3) [circle]") == "a red circle"


def test_lora_tags():
    prompt, tags = extract_loras("a cat <lora:film grain:0.8>, <lora:detail> <LORA:neg:-1.5>")
    assert tags == [LoraTag("film grain", 0.8), LoraTag("detail", 1.0), LoraTag("neg", -1.5)]
    assert "<" not in prompt and prompt.startswith("a cat")
