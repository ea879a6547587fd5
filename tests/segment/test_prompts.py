"""Segmentation prompt templates are filled by replacing `{query}` and `{colour}` as they are, never through
`str.format`: format specs, attribute lookups and unknown fields are refused naming `template`."""
from __future__ import annotations

import pytest

from webui.engine.segment_prompts import build_prompt
from webui.requests import DEFAULT_SEGMENT_TEMPLATE, RequestError, fill_segment_template


def test_templates_are_filled_literally() -> None:
    assert fill_segment_template("paint {query} {colour}", "the {colour} box", "cyan") == "paint the {colour} box cyan"
    assert fill_segment_template("{{literal}} {query}}}", "q", "lime") == "{literal} q}"
    assert build_prompt("EaselPipeline", "", "Red circle.", "magenta") == "highlight the red circle in magenta"
    assert build_prompt("FluxKontextPipeline", "", "a dog", "lime") == \
        DEFAULT_SEGMENT_TEMPLATE.replace("{query}", "a dog").replace("{colour}", "lime")


@pytest.mark.parametrize("template, words", [
    ("{query:>300000000}{query}{nope}", "not {query:>300000000}"),
    ("{query} {query.__class__.__init__}", "not {query.__class__.__init__}"),
    ("{query} {0}", "not {0}"), ("{query} {}", "not {}"), ("paint it {colour}", "must contain {query} once"),
    ("{query} {query}", "must contain {query} once"), ("{query} }", "unmatched brace"),
    ("{query} {" + "x" * 100 + "}", "not {" + "x" * 40 + "...}"),
])
def test_other_fields_are_refused_naming_the_template(template, words) -> None:
    with pytest.raises(RequestError) as caught:
        fill_segment_template(template, "the cat", "magenta")
    assert caught.value.field == "template" and words in caught.value.message
