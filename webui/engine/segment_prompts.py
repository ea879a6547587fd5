"""Prompts for segmentation as editing: one template per editing-pipeline family, and the query clean-up each needs.

A template has `{query}` (what to segment, once) and `{colour}` (the highlight colour's name), replaced as they
are (`webui.requests.fill_segment_template`, never `str.format`). The built-in model was trained on "highlight
{ref} in {h}" with magenta or cyan, its referents always starting with "the" (see `webui.builtin.data`), so its
template is exactly that form and queries are given the article they were trained with. Every other family gets the Ming models' referring-segmentation instruction with the colour named. This
module imports no torch, so the UI can show the templates through the app's helpers.
"""
from __future__ import annotations

import re

from webui.builtin.data import HIGHLIGHTS as EASEL_HIGHLIGHT_COLOURS
from webui.requests import DEFAULT_SEGMENT_TEMPLATE, fill_segment_template

EASEL_TEMPLATE = "highlight {query} in {colour}"
TEMPLATES: dict[str, str] = {
    "EaselPipeline": EASEL_TEMPLATE,
    "default": DEFAULT_SEGMENT_TEMPLATE,
}
EASEL_HIGHLIGHTS: tuple[str, ...] = tuple(EASEL_HIGHLIGHT_COLOURS)  # the colours the built-in model was trained on
_ARTICLES = ("the", "a", "an")


def template_for(pipe_class: str) -> str:
    """The default template of a pipeline class (the Ming form for every family without its own)."""
    return TEMPLATES.get(pipe_class, TEMPLATES["default"])


def easel_query(query: str) -> str:
    """A query in the form the built-in model's referents take: lowercase, starting with "the", no final stop.

    "Red circle." → "the red circle"; "a star on the left" → "the star on the left".
    """
    words = re.sub(r"[.!?]+$", "", query.strip()).strip().lower().split()
    if not words:
        return ""
    if words[0] in _ARTICLES:
        words = words[1:]
    return " ".join(["the", *words])


def build_prompt(pipe_class: str, template: str | None, query: str, colour: str) -> str:
    """The edit instruction for one query: the given template (or the family's) filled in."""
    text = template or template_for(pipe_class)
    if pipe_class == "EaselPipeline":
        query = easel_query(query)
    return fill_segment_template(text, query, colour)
