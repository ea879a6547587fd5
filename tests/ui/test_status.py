"""The progress line a generation tab shows: queue position, steps, batches, and how the job ended."""
from __future__ import annotations

from types import SimpleNamespace

from webui.ui.generation import status_html, status_text


def job(state: str, **kw) -> SimpleNamespace:
    base = dict(state=state, step=0, total_steps=0, batch_index=0, batch_total=1, progress=0.0, created=100.0,
                started=101.0, finished=None, result=None, error=None)
    base.update(kw)
    return SimpleNamespace(**base)


def test_queued_running_and_finished_lines() -> None:
    assert status_text(job("queued"), 3) == "Waiting in queue: position 3"
    assert status_text(job("running"), 0) == "Loading the model…"
    assert status_text(job("running", step=5, total_steps=20, progress=0.25), 0) == "Step 5/20 · 25%"
    assert (status_text(job("running", step=2, total_steps=4, batch_index=1, batch_total=3, progress=0.5), 0)
            == "Step 2/4 · batch 2/3 · 50%")
    pass_ = dict(batch_index=2, batch_total=3, stage="Detail pass 1: repainting 2 regions")  # the detail fixer's
    assert (status_text(job("running", step=3, total_steps=4, progress=0.92, **pass_), 0)
            == "Step 3/4 · batch 3/3 · Detail pass 1: repainting 2 regions · 92%")
    assert status_text(job("running", stage="Detail pass 1: finding 'face'"), 0) == "Detail pass 1: finding 'face'"
    done = job("done", finished=103.5, result=SimpleNamespace(images=[1, 2]))
    assert status_text(done, 0) == "Done: 2 images in 2.5 s"
    stopped = job("interrupted", step=7, total_steps=150, finished=102.0, result=SimpleNamespace(images=[1]))
    assert status_text(stopped, 0) == "Interrupted at step 7/150 (1 image kept)"
    assert status_text(job("failed", error="steps: must be at most 150"), 0) == "Failed: steps: must be at most 150"


def test_html_has_the_bar_and_escapes_text() -> None:
    html = status_html(job("running", step=1, total_steps=4, progress=0.25))
    assert 'style="width:25.0%"' in html and 'class="easel-progress running"' in html
    assert "&lt;b&gt;" in status_html(job("failed", error="<b>bad</b>"))
    assert "Ready" in status_html(None)


def test_a_note_under_the_result_names_the_words_the_model_did_not_understand() -> None:
    from webui.infotext import format_infotext
    from webui.ui.generation import understanding_note

    first = format_infotext("a dog <b>", "", {"Steps": 20, "Words not understood": "dog b"})
    second = format_infotext("a dog and a cat", "", {"Steps": 20, "Words not understood": "dog cat"})
    note = understanding_note([first, second])
    assert "did not understand: dog, b, cat" in note and 'role="note"' in note
    assert understanding_note([format_infotext("a red circle", "", {"Steps": 20})]) == ""
    assert understanding_note([]) == ""
