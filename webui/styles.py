"""Prompt styles: named prompt and negative-prompt texts kept in `styles.csv`, as AUTOMATIC1111 keeps them.

A style file has the columns `name,prompt,negative_prompt` (AUTOMATIC1111's; its older `name,text` files are read
too). The data dir's `styles.csv` comes first, then every other `styles*.csv` there in name order; when two files
name the same style, the first file wins, so a style saved or edited here (always in `styles.csv`) is the one that
applies. Rows whose name starts with `#` are comments.

Applying a style: a style text holding `{prompt}` has the placeholder replaced by the prompt; any other text is
appended after ", ". Several styles apply in the order given, each to the result of the one before; the negative
prompt the same way with the styles' negative texts.

Writes (save, edit, delete) go to `styles.csv` only: the new file is written beside it and moved over it in one
step (`os.replace`), after the previous file was kept as `styles.csv.bak`. A file that cannot be read (a stray
quote, a row with more fields than the header names, bytes that are not UTF-8) is never rewritten: the error names
the file and the line, and the file stays as it is until it is fixed by hand. The files are read again whenever
one of them changes on disk.
"""
from __future__ import annotations

import csv
import io
import logging
import os
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

from webui.requests import RequestError

log = logging.getLogger(__name__)

STYLES_FILE = "styles.csv"
STYLES_PATTERN = "styles*.csv"
COLUMNS = ("name", "prompt", "negative_prompt")
PLACEHOLDER = "{prompt}"
MAX_NAME_CHARS = 100
MAX_FILE_BYTES = 16 * 1024 * 1024
MAX_STYLES_PER_REQUEST = 64


@dataclass(frozen=True)
class PromptStyle:
    """One style: its name, its prompt and negative texts, and the file it was read from."""

    name: str
    prompt: str = ""
    negative_prompt: str = ""
    path: Path | None = field(default=None, compare=False)


class StyleFileError(ValueError):
    """A style file cannot be read or written; the message names the file (and the line, where there is one)."""

    def __init__(self, path: Path, message: str, line: int | None = None) -> None:
        where = f"{path.name} line {line}" if line else path.name
        super().__init__(f"{where}: {message}")
        self.message = message
        self.path = path
        self.line = line


# Applying and recognising styles --------------------------------------------------------------------
def merge_prompt(style_text: str, prompt: str) -> str:
    """`prompt` with one style's text: the text with `{prompt}` replaced, or appended after ", "."""
    if PLACEHOLDER in style_text:
        return style_text.replace(PLACEHOLDER, prompt)
    return ", ".join(part for part in (prompt.strip(), style_text.strip()) if part)


def apply_styles(prompt: str, negative_prompt: str, styles: Sequence[PromptStyle]) -> tuple[str, str]:
    """(prompt, negative prompt) with `styles` applied in order."""
    for style in styles:
        prompt = merge_prompt(style.prompt, prompt)
        negative_prompt = merge_prompt(style.negative_prompt, negative_prompt)
    return prompt, negative_prompt


def _unmerge(style_text: str, prompt: str) -> str | None:
    """The prompt before `style_text` was merged into it, or None when it was not."""
    text, prompt = style_text.strip(), prompt.strip()
    if PLACEHOLDER in text:
        left, _, right = text.partition(PLACEHOLDER)
        if prompt.startswith(left) and prompt.endswith(right) and len(prompt) >= len(left) + len(right):
            return prompt[len(left):len(prompt) - len(right)]
        return None
    if not text:
        return prompt
    if prompt == text:
        return ""
    if prompt.endswith(", " + text):
        return prompt[:-len(text) - 2]
    return None


def extract_styles(prompt: str, negative_prompt: str, styles: Iterable[PromptStyle]) -> tuple[list[str], str, str]:
    """(style names, prompt, negative prompt) with the known styles' texts taken back out of a prompt that had them
    applied (what an AUTOMATIC1111 infotext holds). The last style applied is found first; the names come back in
    the order they were applied. Styles with no text at all are never found."""
    candidates = [s for s in styles if s.prompt.strip() or s.negative_prompt.strip()]
    found: list[str] = []
    while True:
        for style in candidates:
            positive = _unmerge(style.prompt, prompt)
            negative = _unmerge(style.negative_prompt, negative_prompt) if positive is not None else None
            if positive is not None and negative is not None:
                found.append(style.name)
                candidates.remove(style)
                prompt, negative_prompt = positive, negative
                break
        else:
            return list(reversed(found)), prompt, negative_prompt


# Checking what a user typed -------------------------------------------------------------------------
def check_name(name: object) -> str:
    """A style name as it is stored (surrounding spaces removed); RequestError on `style name` otherwise."""
    if not isinstance(name, str):
        raise RequestError("style name", f"must be text, got {type(name).__name__}")
    name = name.strip()
    if not name:
        raise RequestError("style name", "is empty; type a name for the style")
    if len(name) > MAX_NAME_CHARS:
        raise RequestError("style name", f"is {len(name)} characters long; the limit is {MAX_NAME_CHARS}")
    if any(ch in name for ch in "\r\n\x00"):
        raise RequestError("style name", "must be one line (no line breaks)")
    if name.startswith("#"):
        raise RequestError("style name", "must not start with # (such rows are comments in styles.csv)")
    return name


def check_text(value: object, field_name: str, max_chars: int) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise RequestError(field_name, f"must be text, got {type(value).__name__}")
    if "\x00" in value:
        raise RequestError(field_name, "must not contain NUL characters")
    if len(value) > max_chars:
        raise RequestError(field_name, f"is {len(value)} characters long; the limit is {max_chars}")
    return value


# Reading and writing one file -----------------------------------------------------------------------
@dataclass
class StyleFile:
    """One file as read: its header, its rows (comments included, every column kept) and the first problem."""

    path: Path
    header: list[str]
    rows: list[dict[str, str]]
    error: StyleFileError | None = None

    @property
    def prompt_column(self) -> str:
        return "prompt" if "prompt" in self.header or "text" not in self.header else "text"

    def styles(self) -> list[PromptStyle]:
        column = self.prompt_column
        return [PromptStyle(row["name"].strip(), row.get(column) or "", row.get("negative_prompt") or "", self.path)
                for row in self.rows if row.get("name", "").strip() and not row["name"].strip().startswith("#")]


def read_style_file(path: Path) -> StyleFile:
    """Read a style file. Problems do not raise: the rows before the first bad one are kept and `error` says which
    line is bad (a row with more fields than the header names is skipped, and reported)."""
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            return StyleFile(path, list(COLUMNS), [], StyleFileError(
                path, f"is larger than {MAX_FILE_BYTES // (1024 * 1024)} MB; is it really a style file?"))
        data = path.read_bytes()
    except OSError as exc:
        return StyleFile(path, list(COLUMNS), [], StyleFileError(path, f"cannot be read ({exc.strerror or exc})"))
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        return StyleFile(path, list(COLUMNS), [], StyleFileError(path, "is not UTF-8 text", line))
    reader = csv.reader(io.StringIO(text, newline=""), skipinitialspace=True, strict=True)
    header: list[str] = []
    rows: list[dict[str, str]] = []
    error: StyleFileError | None = None
    try:
        for record in reader:
            if not header:
                if not record or not any(cell.strip() for cell in record):
                    continue
                header = [cell.strip() for cell in record]
                if "name" not in header:
                    error = StyleFileError(path, "the first line must name the columns: name,prompt,negative_prompt "
                                                 f"(found {','.join(header)[:80]})", reader.line_num)
                    return StyleFile(path, list(COLUMNS), [], error)
                continue
            if not any(cell.strip() for cell in record):
                continue
            if len(record) > len(header):
                error = error or StyleFileError(
                    path, f"has {len(record)} fields but the header names {len(header)} ({','.join(header)}); a "
                          "text holding a comma must be in double quotes", reader.line_num)
                continue
            rows.append({column: (record[i] if i < len(record) else "") for i, column in enumerate(header)})
    except csv.Error as exc:
        error = error or StyleFileError(path, f"is not valid CSV ({exc})", reader.line_num)
    return StyleFile(path, header or list(COLUMNS), rows, error)


def write_style_file(path: Path, header: list[str], rows: list[dict[str, str]]) -> None:
    """Write `rows` to `path` atomically, keeping the previous file as `<name>.bak`: the new text goes to a
    temporary file in the same folder, is flushed to disk, and replaces `path` in one step."""
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=header, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    data = buffer.getvalue().encode("utf-8-sig")  # as AUTOMATIC1111 writes it
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        _replace_with(path.with_name(path.name + ".bak"), path.read_bytes())
    _replace_with(path, data)


def _replace_with(path: Path, data: bytes) -> None:
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


# The styles of a data dir ----------------------------------------------------------------------------
class StyleStore:
    """The styles of one folder (`styles.csv` and the other `styles*.csv` files), read again when they change."""

    def __init__(self, folder: Path, max_chars: int | Callable[[], int] = 8000) -> None:
        self.folder = Path(folder)
        self._max_chars = max_chars  # longest text a style may hold (a callable: the settings' current limit)
        self._lock = threading.RLock()
        self._signature: tuple = ()
        self._files: list[StyleFile] = []
        self._styles: dict[str, PromptStyle] = {}

    @property
    def max_chars(self) -> int:
        return self._max_chars() if callable(self._max_chars) else self._max_chars

    @property
    def path(self) -> Path:
        """The file saves and deletes write: `styles.csv` in the folder."""
        return self.folder / STYLES_FILE

    def files(self) -> list[Path]:
        """The style files, in the order they are read: `styles.csv`, then the others by name."""
        others = sorted(p for p in self.folder.glob(STYLES_PATTERN) if p.name != STYLES_FILE and p.is_file())
        return ([self.path] if self.path.is_file() else []) + others

    def _current(self) -> dict[str, PromptStyle]:
        with self._lock:
            paths = self.files()
            signature = tuple((p, *_stamp(p)) for p in paths)
            if signature != self._signature:
                self._files = [read_style_file(p) for p in paths]
                styles: dict[str, PromptStyle] = {}
                for style_file in self._files:
                    if style_file.error is not None:
                        log.warning("styles: %s", style_file.error)
                    for style in style_file.styles():
                        styles.setdefault(style.name, style)  # the first file naming a style wins
                self._styles, self._signature = styles, signature
            return self._styles

    def styles(self) -> list[PromptStyle]:
        return list(self._current().values())

    def names(self) -> list[str]:
        return list(self._current())

    def get(self, name: str) -> PromptStyle | None:
        return self._current().get(name)

    def errors(self) -> list[str]:
        """What could not be read, one line per file (file name and line)."""
        with self._lock:
            self._current()
            return [str(f.error) for f in self._files if f.error is not None]

    def resolve(self, names: Sequence[str], field_name: str = "styles") -> list[PromptStyle]:
        """The styles `names` names, in order; RequestError on `field_name` for a name no style file has."""
        if len(names) > MAX_STYLES_PER_REQUEST:
            raise RequestError(field_name, f"{len(names)} styles; the limit is {MAX_STYLES_PER_REQUEST}")
        known = self._current()
        unknown = [name for name in names if name not in known]
        if unknown:
            listed = ", ".join(repr(n) for n in known) if known else "none (there is no styles.csv in the data dir)"
            problems = "; ".join(self.errors())
            raise RequestError(field_name, f"unknown style {', '.join(repr(n) for n in unknown)}; the styles are: "
                                           f"{listed}" + (f" (could not read: {problems})" if problems else ""))
        return [known[name] for name in names]

    def apply(self, prompt: str, negative_prompt: str, names: Sequence[str]) -> tuple[str, str]:
        """(prompt, negative prompt) with the named styles applied; RequestError on `styles` for an unknown name."""
        return apply_styles(prompt, negative_prompt, self.resolve(names)) if names else (prompt, negative_prompt)

    def extract(self, prompt: str, negative_prompt: str) -> tuple[list[str], str, str]:
        """The known styles found applied in a prompt (see `extract_styles`)."""
        return extract_styles(prompt, negative_prompt, self.styles())

    # Writing ---------------------------------------------------------------------------------------
    def _own_file(self) -> StyleFile:
        """`styles.csv` as it is on disk now (empty when it does not exist); StyleFileError when it cannot be
        read, so a broken file is never rewritten."""
        if not self.path.exists():
            return StyleFile(self.path, list(COLUMNS), [])
        style_file = read_style_file(self.path)
        if style_file.error is not None:
            raise StyleFileError(self.path, f"{style_file.error.message}; fix it by hand first, nothing was "
                                            "written", style_file.error.line)
        return style_file

    def save(self, name: str, prompt: str, negative_prompt: str) -> PromptStyle:
        """Add the style to `styles.csv`, or change it there if it has that name; the style as stored."""
        name = check_name(name)
        prompt = check_text(prompt, "style prompt", self.max_chars)
        negative_prompt = check_text(negative_prompt, "style negative prompt", self.max_chars)
        with self._lock:
            own = self._own_file()
            header = list(own.header)
            column = own.prompt_column
            for needed in (column, "negative_prompt"):
                if needed not in header:
                    header.append(needed)
            values = {"name": name, column: prompt, "negative_prompt": negative_prompt}
            row = next((r for r in own.rows if r.get("name", "").strip() == name), None)
            if row is None:
                own.rows.append({**{c: "" for c in header}, **values})
            else:
                row.update(values)
            write_style_file(self.path, header, own.rows)
            self._signature = ()
        log.info("styles: saved %r to %s", name, self.path.name)
        return PromptStyle(name, prompt, negative_prompt, self.path)

    def delete(self, name: str) -> None:
        """Remove the style from `styles.csv`; RequestError on `style name` when that file does not have it."""
        name = check_name(name)
        with self._lock:
            own = self._own_file()
            kept = [r for r in own.rows if r.get("name", "").strip() != name]
            if len(kept) == len(own.rows):
                other = self.get(name)
                where = (f"it is in {other.path.name}; Easel writes only {STYLES_FILE}, remove it there by hand"
                         if other is not None and other.path is not None else f"there is no style {name!r}")
                raise RequestError("style name", f"cannot delete {name!r}: {where}")
            write_style_file(self.path, own.header, kept)
            self._signature = ()
        log.info("styles: deleted %r from %s", name, self.path.name)


def _stamp(path: Path) -> tuple[int, int]:
    try:
        stat = path.stat()
    except OSError:
        return (0, -1)
    return (stat.st_mtime_ns, stat.st_size)
