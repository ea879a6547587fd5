"""Prompt editing and alternation: turn one typed prompt into the prompt each sampling step uses.

Syntax (AUTOMATIC1111's):
  - `[from:to:when]` draws `from` until step `when`, then `to`; `[to:when]` adds `to` after `when`;
    `[from::when]` removes `from` after `when`. `when` written with a decimal point (`0.5`, `.25`, `1.0`) is a
    fraction of the steps; a whole number (`10`) is a step number. `from` and `to` may hold further brackets.
  - `[a|b|c]` alternates: step 1 draws `a`, step 2 `b`, step 3 `c`, step 4 `a` again, and so on.
  - Anything else in square brackets (`[word]`) is left as typed, for the emphasis parser (`[word]` weakens it).
    Unbalanced brackets, and brackets mixing `:` and `|` at their top level, are plain text too.

`build_schedule(text, steps)` gives a `PromptSchedule`: (last step, prompt) entries, steps counted from 1, so
`[a:b:5]` with 20 steps is `((5, "a"), (20, "b"))`. For a hires fix pass, `first_pass_steps` counts on from the
first pass as AUTOMATIC1111 does: whole numbers are steps of the two passes together, fractions above 1 reach
into the second pass (`1.5` = half-way through it), and an edit made during the first pass is already made.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterator

_NUMBER = re.compile(r"\s*(\d+\.?\d*|\.\d+)\s*")


@dataclass(frozen=True)
class _Edit:
    before: tuple  # nodes drawn up to `when`
    after: tuple  # nodes drawn after it
    when: str  # the number as typed


@dataclass(frozen=True)
class _Alternate:
    options: tuple[tuple, ...]  # one node sequence per option


# A node is a str (text as typed), an _Edit or an _Alternate; a sequence of nodes is a tuple.


MAX_BRACKET_DEPTH = 32  # square brackets nested deeper than this are refused (the parser recurses per level)


def _brackets(text: str, start: int = 0) -> Iterator[tuple[int, str]]:
    """(index, "[" or "]") of each square bracket from `start` on that no backslash escapes."""
    i = start
    while i < len(text):
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c in "[]":
            yield i, c
        i += 1


def bracket_depth(text: str) -> int:
    """How deep square brackets nest in `text` (escaped ones do not count)."""
    depth = deepest = 0
    for _, c in _brackets(text):
        if c == "[":
            depth += 1
            deepest = max(deepest, depth)
        elif depth:
            depth -= 1
    return deepest


def _closing(text: str, start: int) -> int:
    """The index of the `]` matching the `[` at `start`, or -1 when it is never closed."""
    depth = 0
    for i, c in _brackets(text, start):
        depth += 1 if c == "[" else -1
        if depth == 0:
            return i
    return -1


def _split_top(inner: str) -> tuple[list[str], list[str]]:
    """`inner` split at its top-level `:` (outside nested brackets and parentheses) and, separately, at `|`."""
    colon_parts, bar_parts = [], []
    depth, i, colon_start, bar_start = 0, 0, 0, 0
    while i < len(inner):
        c = inner[i]
        if c == "\\":
            i += 2
            continue
        if c in "[(":
            depth += 1
        elif c in "])":
            depth = max(0, depth - 1)
        elif depth == 0 and c == ":":
            colon_parts.append(inner[colon_start:i])
            colon_start = i + 1
        elif depth == 0 and c == "|":
            bar_parts.append(inner[bar_start:i])
            bar_start = i + 1
        i += 1
    colon_parts.append(inner[colon_start:])
    bar_parts.append(inner[bar_start:])
    return colon_parts, bar_parts


def _bracket(inner: str) -> _Edit | _Alternate | None:
    """What `[inner]` means: a prompt edit, an alternation, or None (emphasis / plain text)."""
    colon_parts, bar_parts = _split_top(inner)
    if len(bar_parts) > 1:
        if len(colon_parts) > 1:
            return None
        return _Alternate(tuple(_parse(part) for part in bar_parts))
    if len(colon_parts) not in (2, 3) or not _NUMBER.fullmatch(colon_parts[-1]):
        return None
    when = colon_parts[-1].strip()
    if len(colon_parts) == 2:
        return _Edit((), _parse(colon_parts[0]), when)
    return _Edit(_parse(colon_parts[0]), _parse(colon_parts[1]), when)


def _parse(text: str) -> tuple:
    """Parse prompt text into nodes; everything that is not an edit or an alternation stays text as typed."""
    nodes: list = []
    plain: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\":
            plain.append(text[i:i + 2])
            i += 2
            continue
        if c == "[":
            end = _closing(text, i)
            node = _bracket(text[i + 1:end]) if end > 0 else None
            if node is not None:
                if plain:
                    nodes.append("".join(plain))
                    plain = []
                nodes.append(node)
                i = end + 1
                continue
            if end > 0:  # emphasis: keep the brackets, parse inside them
                inner = _parse(text[i + 1:end])
                if any(not isinstance(n, str) for n in inner):
                    if plain:
                        nodes.append("".join(plain))
                        plain = []
                    nodes.extend(("[", *inner, "]"))
                else:
                    plain.append(text[i:end + 1])
                i = end + 1
                continue
        plain.append(c)
        i += 1
    if plain:
        nodes.append("".join(plain))
    return tuple(nodes)


def _when_step(when: str, steps: int, first_pass_steps: int | None) -> int:
    """The step after which an edit takes effect, in this pass's steps (may be <= 0: from the start)."""
    value = float(when)
    if "." in when:
        offset = 1.0 if first_pass_steps is not None else 0.0
        return min(steps, int((value - offset) * steps))
    return min(steps, int(value - (first_pass_steps or 0)))


def _boundaries(nodes: tuple, steps: int, first_pass_steps: int | None, out: set[int]) -> None:
    for node in nodes:
        if isinstance(node, _Edit):
            at = _when_step(node.when, steps, first_pass_steps)
            if at >= 1:
                out.add(at)
            _boundaries(node.before, steps, first_pass_steps, out)
            _boundaries(node.after, steps, first_pass_steps, out)
        elif isinstance(node, _Alternate):
            out.update(range(1, steps + 1))
            for option in node.options:
                _boundaries(option, steps, first_pass_steps, out)


def _text_at(nodes: tuple, step: int, steps: int, first_pass_steps: int | None) -> str:
    """The prompt drawn at `step` (counted from 1)."""
    parts = []
    for node in nodes:
        if isinstance(node, str):
            parts.append(node)
        elif isinstance(node, _Edit):
            drawn = node.before if step <= _when_step(node.when, steps, first_pass_steps) else node.after
            parts.append(_text_at(drawn, step, steps, first_pass_steps))
        else:
            option = node.options[(step - 1) % len(node.options)]
            parts.append(_text_at(option, step, steps, first_pass_steps))
    return "".join(parts)


@dataclass(frozen=True)
class PromptSchedule:
    """(last step, prompt) entries in step order; the last entry's step is the pass's step count."""

    entries: tuple[tuple[int, str], ...]

    def at(self, index: int) -> str:
        """The prompt for the step with 0-based `index` (past the end: the last prompt)."""
        for last, text in self.entries:
            if index + 1 <= last:
                return text
        return self.entries[-1][1]

    @property
    def texts(self) -> list[str]:
        """The distinct prompts, in the order they are first drawn."""
        return list(dict.fromkeys(text for _, text in self.entries))

    @property
    def switches(self) -> bool:
        return len(self.entries) > 1


def build_schedule(text: str, steps: int, first_pass_steps: int | None = None) -> PromptSchedule:
    """The prompt of each of `steps` steps, as (last step, prompt) entries; equal neighbours are merged."""
    steps = max(1, int(steps))
    if bracket_depth(text) > MAX_BRACKET_DEPTH:
        raise ValueError(f"prompt: square brackets are nested {bracket_depth(text)} deep; the limit is "
                         f"{MAX_BRACKET_DEPTH}")
    nodes = _parse(text)
    if all(isinstance(n, str) for n in nodes):
        return PromptSchedule(((steps, text),))
    bounds: set[int] = {steps}
    _boundaries(nodes, steps, first_pass_steps, bounds)
    entries: list[tuple[int, str]] = []
    for last in sorted(b for b in bounds if 1 <= b <= steps):
        drawn = _text_at(nodes, last, steps, first_pass_steps)
        if entries and entries[-1][1] == drawn:
            entries[-1] = (last, drawn)
        else:
            entries.append((last, drawn))
    return PromptSchedule(tuple(entries))
