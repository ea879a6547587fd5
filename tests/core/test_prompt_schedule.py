"""Prompt editing, alternation, BREAK and comma chunking, as AUTOMATIC1111 users type them."""
from pathlib import Path

import pytest

from webui.engine.prompt_schedule import build_schedule
from webui.engine.prompts import chunk_tokens, parse_emphasis, strip_emphasis
from webui.infotext import format_infotext, parse_infotext, request_updates


def entries(text: str, steps: int = 10, first_pass_steps: int | None = None) -> list[tuple[int, str]]:
    return list(build_schedule(text, steps, first_pass_steps).entries)


@pytest.mark.parametrize("text, expected", [
    ("a cat", [(10, "a cat")]),
    ("a [dog:3]", [(3, "a "), (10, "a dog")]),  # [to:when]
    ("a [dog: 3 ]", [(3, "a "), (10, "a dog")]),
    ("a [cat::4] x", [(4, "a cat x"), (10, "a  x")]),  # [from::when]
    ("a [cat:dog:4] x", [(4, "a cat x"), (10, "a dog x")]),
    ("[cat:dog:.5]", [(5, "cat"), (10, "dog")]),  # written with a point: a fraction of the steps
    ("[cat:dog:0.25]", [(2, "cat"), (10, "dog")]),
    ("[cat:dog:1.0]", [(10, "cat")]),  # the fraction 1: never switches
    ("[cat:dog:1]", [(1, "cat"), (10, "dog")]),  # a whole number: a step
    ("[cat:dog:0]", [(10, "dog")]),
    ("[cat:dog:25]", [(10, "cat")]),  # past the last step
    ("a[b:[c:d:2]:1]e", [(1, "abe"), (2, "ace"), (10, "ade")]),  # nested
    ("[[cat:dog:2]] x", [(2, "[cat] x"), (10, "[dog] x")]),  # an edit inside de-emphasis
    ("[(cat:1.3):dog:5]", [(5, "(cat:1.3)"), (10, "dog")]),  # emphasis inside an edit
    ("(x [a:b:5]:1.2)", [(5, "(x a:1.2)"), (10, "(x b:1.2)")]),  # an edit inside emphasis
])
def test_prompt_editing(text, expected):
    assert entries(text) == expected


@pytest.mark.parametrize("text", ["a [cat]", "[[cat]]", "a (cat:1.2) [dog", "time: 12:30", "[a:b|c]",
                                  "[cat:dog:x]", r"\[cat:dog:2\]", "a [unbalanced", "[a:b:c:3]"])
def test_text_that_is_not_editing_stays_as_typed(text):
    assert entries(text) == [(10, text)]


def test_alternation_switches_every_step():
    assert entries("[cat|dog] x", 4) == [(1, "cat x"), (2, "dog x"), (3, "cat x"), (4, "dog x")]
    assert entries("[a|b|c]", 5) == [(1, "a"), (2, "b"), (3, "c"), (4, "a"), (5, "b")]
    assert entries("[fe|]male", 3) == [(1, "female"), (2, "male"), (3, "female")]
    assert entries("[(a:1.1)|[b:c:2]]", 4) == [(1, "(a:1.1)"), (2, "b"), (3, "(a:1.1)"), (4, "c")]
    assert entries("[same|same]", 4) == [(4, "same")]  # equal neighbours merge


def test_the_prompt_of_each_step():
    schedule = build_schedule("[cat:dog:2]", 4)
    assert [schedule.at(i) for i in range(5)] == ["cat", "cat", "dog", "dog", "dog"]  # 0-based steps
    assert schedule.texts == ["cat", "dog"] and schedule.switches
    assert not build_schedule("[cat:dog:0]", 4).switches


def test_a_hires_pass_goes_on_from_the_first():
    """Whole numbers count the steps of both passes; fractions above 1 reach into the second pass."""
    assert entries("a [b:.5] c", 10, first_pass_steps=10) == [(10, "a b c")]
    assert entries("a [b:1.5] c", 10, first_pass_steps=10) == [(5, "a  c"), (10, "a b c")]
    assert entries("[x:y:15]", 10, first_pass_steps=10) == [(5, "x"), (10, "y")]
    assert entries("[x:y:5]", 10, first_pass_steps=10) == [(10, "y")]


def test_emphasis_still_parses_what_the_schedule_leaves():
    assert parse_emphasis(build_schedule("a [[cat:dog:2]]", 4).at(3)) == [("a ", 1.0),
                                                                         ("dog", pytest.approx(1 / 1.1))]
    assert strip_emphasis("a BREAK (b:1.2)") == "a b"


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from tests.tiny_models import tiny_clip_tokenizer

    return tiny_clip_tokenizer(Path(tmp_path_factory.mktemp("tok")))


def ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_break_starts_a_new_chunk(tokenizer):
    a, b = ids(tokenizer, "a"), ids(tokenizer, "b")
    assert len(a) == 1 and len(b) == 1
    assert [c[0] for c in chunk_tokens(tokenizer, "a b")] == [a + b]
    assert [c[0] for c in chunk_tokens(tokenizer, "a BREAK b")] == [a, b]
    assert [c[0] for c in chunk_tokens(tokenizer, "a BREAK BREAK b")] == [a, [], b]
    assert [c[0] for c in chunk_tokens(tokenizer, "a BREAK")] == [a]
    assert len(chunk_tokens(tokenizer, "a break b")) == 1  # only the capitalised word breaks
    weights = chunk_tokens(tokenizer, "(a BREAK b:1.5)")
    assert [c[1] for c in weights] == [[1.5], [1.5]]


def test_long_prompts_are_cut_after_a_comma_near_the_chunk_end(tokenizer):
    a, b, comma = ids(tokenizer, "a")[0], ids(tokenizer, "b")[0], ids(tokenizer, ",")[0]
    # 70 words, a comma, then 10 more: the 75-token chunk would end 4 words after the comma, so it ends at it.
    chunks = [c[0] for c in chunk_tokens(tokenizer, "a " * 70 + ", " + "b " * 10)]
    assert chunks == [[a] * 70 + [comma], [b] * 10]
    # The comma 34 tokens before the end: too far back, the chunk is cut at 75 tokens.
    chunks = [c[0] for c in chunk_tokens(tokenizer, "a " * 40 + ", " + "b " * 44)]
    assert chunks == [[a] * 40 + [comma] + [b] * 34, [b] * 10]
    # No comma: cut at 75.
    assert [len(c[0]) for c in chunk_tokens(tokenizer, "a " * 80)] == [75, 5]
    assert [len(c[0]) for c in chunk_tokens(tokenizer, "")] == [0]


def test_infotext_keeps_the_syntax_as_typed():
    prompt = "a [cat:dog:0.5] in a [forest|city], (detailed:1.2) BREAK [blurry]\nsecond line [x::3]"
    negative = "[ugly:bad:4], [a|b]"
    text = format_infotext(prompt, negative, {"Steps": 20, "Sampler": "Euler a", "CFG scale": 7, "Seed": 1,
                                              "Size": "512x512"})
    params = parse_infotext(text)
    assert params["Prompt"] == prompt and params["Negative prompt"] == negative
    pasted = ("masterpiece, [red:blue:10] car, [[sky]], [day|night]\nNegative prompt: [ugly::0.3]\n"
              "Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 42, Size: 512x512, "
              "Model hash: abcdef1234, Model: any, Version: v1.10.1")
    updates = request_updates(parse_infotext(pasted))
    assert updates["prompt"] == "masterpiece, [red:blue:10] car, [[sky]], [day|night]"
    assert updates["negative_prompt"] == "[ugly::0.3]"


def test_brackets_nested_too_deep_are_refused_naming_the_field() -> None:
    from webui.engine.prompt_schedule import MAX_BRACKET_DEPTH, bracket_depth
    from webui.requests import Limits, RequestError, Txt2ImgRequest, validate_request

    deep = "[" * 3000 + "a:b:1" + "]" * 3000  # within the prompt length limit; would exhaust the parser's stack
    assert bracket_depth(deep) == 3000 and bracket_depth("\\[" * 50) == 0
    for field in ("prompt", "negative_prompt"):
        with pytest.raises(RequestError, match=f"nested 3000 deep; the limit is {MAX_BRACKET_DEPTH}") as caught:
            validate_request(Txt2ImgRequest(**{field: deep}, width=64, height=64), Limits())
        assert caught.value.field == field
    with pytest.raises(ValueError, match="nested 3000 deep"):
        build_schedule(deep, 20)
    nested = "[" * MAX_BRACKET_DEPTH + "x" + "]" * MAX_BRACKET_DEPTH  # at the limit: parsed as emphasis
    validate_request(Txt2ImgRequest(prompt=nested, width=64, height=64), Limits())
    assert build_schedule(nested, 4).entries == ((4, nested),)
