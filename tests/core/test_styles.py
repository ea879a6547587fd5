"""Prompt styles without a model: reading and merging the style files, the {prompt} placeholder, writes that are
atomic and keep a backup, broken files that are never rewritten, and the infotext's `Styles array`."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from webui.infotext import format_infotext, generation_parameters, parse_infotext, request_updates, split_styles
from webui.requests import RequestError, Txt2ImgRequest, check_fields, Limits
from webui.styles import (MAX_NAME_CHARS, PromptStyle, StyleFileError, StyleStore, apply_styles, extract_styles,
                          merge_prompt, read_style_file)

BOM = "\ufeff"


def write(path: Path, text: str, bom: bool = True) -> Path:
    path.write_bytes(((BOM if bom else "") + text).encode("utf-8"))
    return path


def test_a_style_with_the_placeholder_wraps_the_prompt_and_one_without_is_appended() -> None:
    assert merge_prompt("oil painting of {prompt}, warm light", "a cat") == "oil painting of a cat, warm light"
    assert merge_prompt("masterpiece", "a cat ") == "a cat, masterpiece"
    assert merge_prompt("masterpiece", "") == "masterpiece"
    assert merge_prompt("", "a cat") == "a cat"
    assert merge_prompt("{prompt} and {prompt}", "x") == "x and x"
    styles = [PromptStyle("frame", "photo of {prompt}", "blurry"),
              PromptStyle("finish", "film grain", "{prompt}, ugly")]
    # applied in order, each to the result of the one before
    assert apply_styles("a dog", "", styles) == ("photo of a dog, film grain", "blurry, ugly")
    assert apply_styles("a dog", "lowres", styles[::-1]) == ("photo of a dog, film grain", "lowres, ugly, blurry")


def test_extract_takes_applied_styles_back_out_of_a_prompt() -> None:
    styles = [PromptStyle("frame", "photo of {prompt}", "blurry"), PromptStyle("finish", "film grain", ""),
              PromptStyle("empty", "", "")]
    prompt, negative = apply_styles("a dog", "lowres", styles[:2])
    names, typed, typed_negative = extract_styles(prompt, negative, styles)
    assert (sorted(names), typed, typed_negative) == (["finish", "frame"], "a dog", "lowres")
    # the names come back in an order that, applied again, gives the same prompts
    by_name = {s.name: s for s in styles}
    assert apply_styles(typed, typed_negative, [by_name[n] for n in names]) == (prompt, negative)
    assert extract_styles("a dog, sepia", "", styles) == ([], "a dog, sepia", "")


def test_files_are_merged_with_styles_csv_first_and_the_first_file_wins(tmp_path: Path) -> None:
    write(tmp_path / "styles.csv", 'name,prompt,negative_prompt\nink,"ink, {prompt}",blurry\n# old,x,y\n')
    write(tmp_path / "styles-b.csv", "name,prompt,negative_prompt\nink,other ink,\nsepia,sepia tone,\n", bom=False)
    write(tmp_path / "styles-a.csv", "name,text\nneon,neon glow\n")  # AUTOMATIC1111's older columns
    (tmp_path / "other.csv").write_text("name,prompt\nignored,x\n")
    store = StyleStore(tmp_path)
    assert [p.name for p in store.files()] == ["styles.csv", "styles-a.csv", "styles-b.csv"]
    assert store.names() == ["ink", "neon", "sepia"]  # "# old" is a comment row
    assert store.get("ink") == PromptStyle("ink", "ink, {prompt}", "blurry")
    assert store.get("ink").path == tmp_path / "styles.csv"
    assert store.get("neon").prompt == "neon glow"
    assert store.apply("a cat", "", ["ink", "sepia"]) == ("ink, a cat, sepia tone", "blurry")
    # a file changed on disk is read again
    write(tmp_path / "styles-b.csv", "name,prompt,negative_prompt\nsepia,brown,\n")
    os.utime(tmp_path / "styles-b.csv", ns=(1, 1))
    assert store.get("sepia").prompt == "brown"


def test_unknown_style_names_the_field_and_lists_the_known_ones(tmp_path: Path) -> None:
    store = StyleStore(tmp_path)
    with pytest.raises(RequestError) as empty:
        store.resolve(["ink"])
    assert empty.value.field == "styles" and "there is no styles.csv" in empty.value.message
    write(tmp_path / "styles.csv", "name,prompt,negative_prompt\nink,ink,\nsepia,sepia,\n")
    with pytest.raises(RequestError) as unknown:
        store.resolve(["ink", "nope"])
    assert unknown.value.field == "styles"
    assert unknown.value.message == "unknown style 'nope'; the styles are: 'ink', 'sepia'"


def test_save_creates_edits_and_keeps_a_backup_of_the_previous_file(tmp_path: Path) -> None:
    store = StyleStore(tmp_path)
    saved = store.save("  ink  ", "ink wash, {prompt}", "colour")
    assert saved.name == "ink"
    path = tmp_path / "styles.csv"
    first = path.read_bytes()
    assert first.startswith(BOM.encode()) and not (tmp_path / "styles.csv.bak").exists()
    assert read_style_file(path).styles() == [PromptStyle("ink", "ink wash, {prompt}", "colour")]
    store.save("multi", 'line one\n"quoted", with comma', "")
    assert (tmp_path / "styles.csv.bak").read_bytes() == first
    store.save("ink", "new ink", "")  # an edit keeps the style's place
    assert [s.name for s in store.styles()] == ["ink", "multi"]
    assert store.get("ink").prompt == "new ink"
    assert store.get("multi").prompt == 'line one\n"quoted", with comma'
    store.delete("multi")
    assert store.names() == ["ink"]
    assert read_style_file(tmp_path / "styles.csv.bak").styles()[1].name == "multi"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["styles.csv", "styles.csv.bak"]  # no temporary left


def test_save_keeps_comments_and_other_columns(tmp_path: Path) -> None:
    path = write(tmp_path / "styles.csv", "name,prompt,negative_prompt,notes\n# keep me,,,\nink,ink,,mine\n")
    StyleStore(tmp_path).save("sepia", "sepia", "")
    text = path.read_text(encoding="utf-8-sig")
    assert text == "name,prompt,negative_prompt,notes\n# keep me,,,\nink,ink,,mine\nsepia,sepia,,\n"


def test_old_name_text_files_are_edited_in_their_own_columns(tmp_path: Path) -> None:
    path = write(tmp_path / "styles.csv", "name,text\nneon,neon glow\n")
    store = StyleStore(tmp_path)
    store.save("neon", "neon lights", "dark")
    assert path.read_text(encoding="utf-8-sig") == "name,text,negative_prompt\nneon,neon lights,dark\n"
    assert store.get("neon") == PromptStyle("neon", "neon lights", "dark")


@pytest.mark.parametrize("name, message", [
    ("", "is empty"), ("   ", "is empty"), ("a\nb", "one line"), ("#x", "must not start with #"),
    ("x" * (MAX_NAME_CHARS + 1), f"the limit is {MAX_NAME_CHARS}"), (None, "must be text"),
])
def test_bad_names_are_refused_naming_the_field(tmp_path: Path, name, message) -> None:
    with pytest.raises(RequestError) as error:
        StyleStore(tmp_path).save(name, "x", "")
    assert error.value.field == "style name" and message in error.value.message
    assert not (tmp_path / "styles.csv").exists()


def test_too_long_style_texts_are_refused(tmp_path: Path) -> None:
    with pytest.raises(RequestError) as error:
        StyleStore(tmp_path, max_chars=10).save("ink", "x" * 11, "")
    assert error.value.field == "style prompt" and "the limit is 10" in error.value.message


@pytest.mark.parametrize("text, line, message", [
    ('name,prompt,negative_prompt\nink,ink,\nbad,"open quote,\n', 3, "not valid CSV"),
    ("name,prompt,negative_prompt\nink,ink,\nbad,a,b,c\n", 3, "has 4 fields but the header names 3"),
    ("title,words\nink,ink\n", 1, "the first line must name the columns"),
])
def test_a_malformed_file_names_its_line_and_is_never_rewritten(tmp_path: Path, text, line, message) -> None:
    path = write(tmp_path / "styles.csv", text)
    before = path.read_bytes()
    store = StyleStore(tmp_path)
    problem = read_style_file(path).error
    assert problem is not None and problem.line == line and message in str(problem)
    assert store.errors() == [str(problem)] and str(problem).startswith(f"styles.csv line {line}: ")
    for edit in (lambda: store.save("new", "x", ""), lambda: store.delete("ink")):
        with pytest.raises(StyleFileError) as error:
            edit()
        assert f"styles.csv line {line}" in str(error.value) and "nothing was written" in str(error.value)
    assert path.read_bytes() == before and not (tmp_path / "styles.csv.bak").exists()
    if line > 1:  # the rows before the bad one still apply
        assert store.get("ink") == PromptStyle("ink", "ink", "")


def test_a_file_that_is_not_utf8_names_the_line(tmp_path: Path) -> None:
    (tmp_path / "styles.csv").write_bytes(b"name,prompt\nink,ink\nbad,caf\xe9\n")
    assert StyleStore(tmp_path).errors() == ["styles.csv line 3: is not UTF-8 text"]


def test_deleting_a_style_of_another_file_says_where_it_is(tmp_path: Path) -> None:
    write(tmp_path / "styles-extra.csv", "name,prompt\nneon,neon\n")
    store = StyleStore(tmp_path)
    with pytest.raises(RequestError) as error:
        store.delete("neon")
    assert error.value.field == "style name" and "it is in styles-extra.csv" in error.value.message
    with pytest.raises(RequestError, match="there is no style 'nope'"):
        store.delete("nope")


def test_a_failed_write_leaves_the_file_and_no_temporary(tmp_path: Path, monkeypatch) -> None:
    store = StyleStore(tmp_path)
    store.save("ink", "ink", "")
    before = (tmp_path / "styles.csv").read_bytes()

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        store.save("sepia", "sepia", "")
    monkeypatch.undo()
    assert (tmp_path / "styles.csv").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["styles.csv"]


# The request field and the infotext ----------------------------------------------------------------
def test_the_styles_field_takes_a_list_of_names() -> None:
    check_fields(Txt2ImgRequest(styles=("a", "b")), Limits())
    with pytest.raises(RequestError) as error:
        check_fields(Txt2ImgRequest(styles=("a", 3)), Limits())  # type: ignore[arg-type]
    assert error.value.field == "styles"


def test_infotext_keeps_the_prompt_as_typed_and_writes_the_styles_as_a_json_list() -> None:
    request = Txt2ImgRequest(prompt="a cat", styles=("ink", 'say "hi", ok'), seed=1)
    text = format_infotext(request.prompt, "", generation_parameters(request, {}))
    assert text.startswith("a cat\n")
    assert r'Styles array: "[\"ink\", \"say \\\"hi\\\", ok\"]"' in text
    params = parse_infotext(text)
    assert split_styles(params)["Styles array"] == ["ink", 'say "hi", ok']
    assert request_updates(params)["styles"] == ("ink", 'say "hi", ok')
    # a list written without quotes is read too
    unquoted = parse_infotext('a cat\nSteps: 2, Styles array: ["ink", "sepia"], Seed: 4')
    assert unquoted["Seed"] == "4" and request_updates(unquoted)["styles"] == ("ink", "sepia")


def test_an_automatic1111_text_gets_its_known_styles_taken_out_of_the_prompts() -> None:
    known = [PromptStyle("ink", "ink wash of {prompt}", "colour"), PromptStyle("grain", "film grain", "")]
    text = "ink wash of a cat, film grain\nNegative prompt: blurry, colour\nSteps: 20, Seed: 1, Version: v1.10.1"
    updates = request_updates(parse_infotext(text), known_styles=known)
    assert (updates["prompt"], updates["negative_prompt"], sorted(updates["styles"])) == ("a cat", "blurry",
                                                                                            ["grain", "ink"])
    assert apply_styles("a cat", "blurry", [known[0] if n == "ink" else known[1] for n in updates["styles"]]) == \
        ("ink wash of a cat, film grain", "blurry, colour")
    # Easel's own texts hold the prompts as typed: nothing is taken out of them
    easel = "ink wash of a cat\nSteps: 20, Seed: 1, Version: Easel 1.0"
    assert request_updates(parse_infotext(easel), known_styles=known)["prompt"] == "ink wash of a cat"
    assert request_updates(parse_infotext(easel), known_styles=known)["styles"] == ()
