"""The image browser's index: every image under `outputs/`, searchable, with favourites and a trash.

`GalleryIndex` keeps one row per image in a SQLite file in the data dir (`gallery/index.sqlite`): its path
relative to the outputs folder, the mode read from its top folder (`txt2img-images` → `txt2img`,
`txt2img-grids` → `txt2img-grids`), the day (from a `YYYY-MM-DD` folder, else the file's date), the file's
mtime and size, the picture's size, and from its infotext (`webui.infotext`) the prompt, negative prompt, seed,
model and sampler. The engine calls `record` for each image it saves; `rescan` walks the folder and reconciles
the index with the files (new and changed files are read, vanished ones dropped), keeping favourites.

Search matches prompt words (SQLite FTS5 when this SQLite has it, else `LIKE`), a seed, a model, a mode, a day
range and favourites only; results are newest first and paginated. Deleting moves the file (and an inpaint
image's `-mask.png` beside it) into `gallery/trash/` in the data dir; `restore` moves it back. Nothing is ever
unlinked, and nothing outside the outputs folder (or the trash) is read: names given from outside pass
`webui.security.resolve_inside`, and the walk neither follows links nor reads files that links point to.
Nothing here imports torch or Gradio.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import logging
import os
import re
import shutil
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from PIL import Image

from webui.infotext import parse_infotext, read_png_parameters
from webui.security import resolve_inside

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
MASK_SUFFIX = "-mask.png"  # an inpaint image's mask, saved beside it: moved with it, not listed on its own
MAX_PER_PAGE = 200
THUMB_SIDE = 192  # thumbnails fit in a square this size
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_WORD = re.compile(r"\w+", re.UNICODE)
_COLUMNS = ("path", "mode", "day", "mtime", "bytes", "width", "height", "prompt", "negative", "seed", "model",
            "sampler", "infotext")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY, path TEXT UNIQUE NOT NULL, mode TEXT NOT NULL, day TEXT NOT NULL,
    mtime REAL NOT NULL, bytes INTEGER NOT NULL, width INTEGER, height INTEGER,
    prompt TEXT NOT NULL DEFAULT '', negative TEXT NOT NULL DEFAULT '', seed INTEGER, model TEXT NOT NULL DEFAULT '',
    sampler TEXT NOT NULL DEFAULT '', infotext TEXT NOT NULL DEFAULT '', favourite INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS images_newest ON images (mtime DESC, path DESC);
CREATE INDEX IF NOT EXISTS images_seed ON images (seed);
CREATE TABLE IF NOT EXISTS trash (
    id INTEGER PRIMARY KEY, original TEXT NOT NULL, stored TEXT UNIQUE NOT NULL, deleted REAL NOT NULL,
    mask TEXT, favourite INTEGER NOT NULL DEFAULT 0, prompt TEXT NOT NULL DEFAULT '', infotext TEXT NOT NULL DEFAULT '');
"""
_FTS = """
CREATE VIRTUAL TABLE IF NOT EXISTS images_fts USING fts5(prompt, content='images', content_rowid='id');
CREATE TRIGGER IF NOT EXISTS images_ai AFTER INSERT ON images BEGIN
    INSERT INTO images_fts(rowid, prompt) VALUES (new.id, new.prompt); END;
CREATE TRIGGER IF NOT EXISTS images_ad AFTER DELETE ON images BEGIN
    INSERT INTO images_fts(images_fts, rowid, prompt) VALUES ('delete', old.id, old.prompt); END;
CREATE TRIGGER IF NOT EXISTS images_au AFTER UPDATE OF prompt ON images BEGIN
    INSERT INTO images_fts(images_fts, rowid, prompt) VALUES ('delete', old.id, old.prompt);
    INSERT INTO images_fts(rowid, prompt) VALUES (new.id, new.prompt); END;
"""


@dataclass(frozen=True)
class ImageEntry:
    """One indexed image; `path` is relative to the outputs folder (with `/`)."""

    id: int
    path: str
    mode: str
    day: str
    mtime: float
    bytes: int
    width: int | None
    height: int | None
    prompt: str
    negative: str
    seed: int | None
    model: str
    sampler: str
    infotext: str
    favourite: bool


@dataclass(frozen=True)
class TrashEntry:
    id: int
    original: str  # where it was, relative to the outputs folder
    stored: str  # its file name in the trash folder
    deleted: float
    prompt: str
    infotext: str
    favourite: bool


@dataclass(frozen=True)
class Query:
    """What to look for; empty fields match everything."""

    words: str = ""
    seed: str | int | None = None
    model: str = ""
    mode: str = ""
    date_from: str = ""
    date_to: str = ""
    favourites: bool = False


@dataclass(frozen=True)
class Page:
    items: list[Any]
    total: int
    page: int
    pages: int


@dataclass(frozen=True)
class ScanReport:
    added: int = 0
    updated: int = 0
    removed: int = 0
    seconds: float = 0.0


def mode_of(rel: str) -> str:
    """The mode a path's top folder names: `txt2img-images/...` → txt2img; `txt2img-grids/...` stays as it is;
    an image directly in outputs/ → "outputs"."""
    top = rel.split("/", 1)[0] if "/" in rel else ""
    if not top:
        return "outputs"
    return top[: -len("-images")] if top.endswith("-images") else top


def day_of(rel: str, mtime: float) -> str:
    """The day folder's name when the image lies in one (`.../2026-12-07/...`), else the file's local date."""
    for part in reversed(rel.split("/")[:-1]):
        if _DAY.match(part):
            return part
    return _dt.date.fromtimestamp(mtime).isoformat()


def check_day(value: str, field_name: str) -> str:
    text = (value or "").strip()
    if not text:
        return ""
    try:
        return _dt.date.fromisoformat(text).isoformat()
    except ValueError:
        raise ValueError(f"{field_name}: must be a date as YYYY-MM-DD, got {text[:40]!r}") from None


def check_seed(value: str | int | None) -> int | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        return int(str(value).strip())
    except ValueError:
        raise ValueError(f"seed: must be a whole number, got {str(value)[:40]!r}") from None


def read_entry(path: Path, rel: str, stat: os.stat_result) -> dict[str, Any]:
    """The row of one image file: its infotext's fields, its size, mode and day (no pixel is decoded)."""
    text, width, height = "", None, None
    try:
        with Image.open(path) as image:
            width, height = image.size
            text = read_png_parameters(image) or ""
    except (OSError, ValueError, SyntaxError) as exc:  # not an image, truncated, or refused by Pillow's limits
        log.info("image browser: %s is not a readable image (%s)", rel, exc)
    params = parse_infotext(text) if text else {}
    seed: int | None
    try:
        seed = int(params["Seed"]) if "Seed" in params else None
    except ValueError:
        seed = None
    return {"path": rel, "mode": mode_of(rel), "day": day_of(rel, stat.st_mtime), "mtime": stat.st_mtime,
            "bytes": stat.st_size, "width": width, "height": height, "prompt": params.get("Prompt", ""),
            "negative": params.get("Negative prompt", ""), "seed": seed, "model": params.get("Model", ""),
            "sampler": params.get("Sampler", ""), "infotext": text}


def walk_images(root: Path) -> Iterator[tuple[str, os.stat_result]]:
    """(relative path, stat) of every image file under `root`; links and hidden files are skipped."""
    stack = [(root, "")]
    while stack:
        folder, prefix = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            rel = f"{prefix}{entry.name}"
            if entry.is_dir(follow_symlinks=False):
                stack.append((Path(entry.path), rel + "/"))
            elif (entry.is_file(follow_symlinks=False) and entry.name.lower().endswith(IMAGE_SUFFIXES)
                  and not entry.name.endswith(MASK_SUFFIX)):
                yield rel, entry.stat(follow_symlinks=False)


class GalleryIndex:
    """The index of `outputs_dir`, kept in `home/index.sqlite`, with the trash in `home/trash/`."""

    def __init__(self, outputs_dir: Path, home: Path) -> None:
        self.outputs_dir = Path(outputs_dir)
        self.home = Path(home)
        self.trash_dir = self.home / "trash"
        self.db_path = self.home / "index.sqlite"
        self._lock = threading.RLock()
        self._db: sqlite3.Connection | None = None
        self.fts = False
        self.last_scan = 0.0

    # Connection --------------------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            self.home.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.db_path, check_same_thread=False, isolation_level=None)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
            try:
                db.executescript(_FTS)
                self.fts = True
            except sqlite3.OperationalError:  # this SQLite was built without FTS5: LIKE it is
                self.fts = False
            self._db = db
        return self._db

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    # Keeping it right ----------------------------------------------------------------------------
    def _upsert(self, db: sqlite3.Connection, row: dict[str, Any]) -> None:
        names = ", ".join(_COLUMNS)
        marks = ", ".join("?" for _ in _COLUMNS)
        changes = ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS if c != "path")
        db.execute(f"INSERT INTO images ({names}) VALUES ({marks}) ON CONFLICT(path) DO UPDATE SET {changes}",
                   [row[c] for c in _COLUMNS])

    def record(self, path: Path) -> None:
        """Index one image just written under the outputs folder (the engine calls this for each saved file);
        a path outside the folder is ignored."""
        root = self.outputs_dir.resolve()
        target = Path(path).resolve()
        if root not in target.parents or not target.is_file():
            return
        rel = target.relative_to(root).as_posix()
        if rel.endswith(MASK_SUFFIX) or not rel.lower().endswith(IMAGE_SUFFIXES):
            return
        row = read_entry(target, rel, target.stat())
        with self._lock:
            self._upsert(self._conn(), row)

    def rescan(self) -> ScanReport:
        """Reconcile the index with the folder: read new and changed files (by mtime and size), drop rows of
        files that are gone. Favourites of files still there are kept."""
        start = time.perf_counter()
        on_disk = dict(walk_images(self.outputs_dir)) if self.outputs_dir.is_dir() else {}
        with self._lock:
            db = self._conn()
            known = {r["path"]: (r["mtime"], r["bytes"]) for r in db.execute("SELECT path, mtime, bytes FROM images")}
            gone = [p for p in known if p not in on_disk]
            fresh = [(rel, st) for rel, st in on_disk.items()
                     if known.get(rel) != (st.st_mtime, st.st_size)]
        rows = [read_entry(self.outputs_dir / rel, rel, st) for rel, st in fresh]  # read outside the lock
        with self._lock:
            db = self._conn()
            db.execute("BEGIN")
            try:
                db.executemany("DELETE FROM images WHERE path = ?", [(p,) for p in gone])
                for row in rows:
                    self._upsert(db, row)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            self.last_scan = time.time()
        for rel in [*gone, *(rel for rel, _ in fresh if rel in known)]:
            self._forget_thumbnail(rel, *known[rel])
        added = sum(1 for rel, _ in fresh if rel not in known)
        return ScanReport(added, len(fresh) - added, len(gone), time.perf_counter() - start)

    # Reading -----------------------------------------------------------------------------------------
    @staticmethod
    def query(**filters: Any) -> Query:
        """A `Query` (for callers that do not import this module: the UI)."""
        return Query(**filters)

    def count(self) -> int:
        with self._lock:
            return int(self._conn().execute("SELECT COUNT(*) FROM images").fetchone()[0])

    def modes(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._conn().execute("SELECT DISTINCT mode FROM images ORDER BY mode")]

    def _where(self, query: Query) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        args: list[Any] = []
        words = _WORD.findall(query.words or "")
        if len(query.words or "") > 1000:
            raise ValueError("search: at most 1000 characters")
        if words:
            if self.fts:
                clauses.append("images.id IN (SELECT rowid FROM images_fts WHERE images_fts MATCH ?)")
                args.append(" ".join('"' + w.replace('"', '""') + '"*' for w in words))
            else:
                for word in words:
                    clauses.append("images.prompt LIKE ? ESCAPE '\\'")
                    args.append("%" + word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%")
        seed = check_seed(query.seed)
        if seed is not None:
            clauses.append("images.seed = ?")
            args.append(seed)
        if (query.model or "").strip():
            clauses.append("images.model LIKE ? ESCAPE '\\' COLLATE NOCASE")
            text = query.model.strip().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            args.append(f"%{text}%")
        if (query.mode or "").strip():
            clauses.append("images.mode = ?")
            args.append(query.mode.strip())
        first, last = check_day(query.date_from, "date_from"), check_day(query.date_to, "date_to")
        if first and last and first > last:
            raise ValueError(f"date_to: {last} is before date_from {first}")
        if first:
            clauses.append("images.day >= ?")
            args.append(first)
        if last:
            clauses.append("images.day <= ?")
            args.append(last)
        if query.favourites:
            clauses.append("images.favourite = 1")
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", args

    def search(self, query: Query = Query(), page: int = 1, per_page: int = 24) -> Page:
        """One page of the images `query` matches, newest first."""
        if not isinstance(per_page, int) or not 1 <= per_page <= MAX_PER_PAGE:
            raise ValueError(f"per_page: must be 1 to {MAX_PER_PAGE}, got {per_page!r}")
        if not isinstance(page, int) or page < 1:
            raise ValueError(f"page: must be 1 or more, got {page!r}")
        where, args = self._where(query)
        with self._lock:
            db = self._conn()
            total = int(db.execute(f"SELECT COUNT(*) FROM images{where}", args).fetchone()[0])
            pages = max(1, -(-total // per_page))
            page = min(page, pages)
            rows = db.execute(f"SELECT * FROM images{where} ORDER BY mtime DESC, path DESC LIMIT ? OFFSET ?",
                              [*args, per_page, (page - 1) * per_page]).fetchall()
        return Page([self._entry(r) for r in rows], total, page, pages)

    @staticmethod
    def _entry(row: sqlite3.Row) -> ImageEntry:
        values = dict(row)
        values["favourite"] = bool(values["favourite"])
        return ImageEntry(**values)

    def get(self, rel: str) -> ImageEntry:
        """The indexed image at `rel`; ValueError when it is not in the index."""
        rel = self._relative(rel)
        with self._lock:
            row = self._conn().execute("SELECT * FROM images WHERE path = ?", (rel,)).fetchone()
        if row is None:
            raise ValueError(f"image: {rel!r} is not in the image browser's index (rescan, or it was deleted)")
        return self._entry(row)

    def file(self, rel: str) -> Path:
        """The file of an indexed image, inside the outputs folder (a link pointing out is refused)."""
        entry = self.get(rel)
        path = resolve_inside(self.outputs_dir, entry.path, "image")
        if not path.is_file():
            raise ValueError(f"image: {entry.path!r} is no longer in outputs/ (rescan)")
        return path

    def _relative(self, name: str) -> str:
        """A user-given name as the index stores it, refused when it would leave the outputs folder."""
        path = resolve_inside(self.outputs_dir, name, "image", follow_symlinks=False)
        return path.relative_to(Path(os.path.abspath(self.outputs_dir))).as_posix()

    # Thumbnails ---------------------------------------------------------------------------------------
    def thumbnail(self, entry: ImageEntry | str) -> Image.Image:
        """A small copy of an indexed image, made once and then read from `thumbs/` (a changed file gets a new
        one); an unreadable image gets a grey square."""
        if isinstance(entry, str):
            entry = self.get(entry)
        return self._thumb(self.file(entry.path), f"{entry.path}|{entry.mtime}|{entry.bytes}")

    def trash_thumbnail(self, trash_id: int) -> Image.Image:
        path = self.trash_file(trash_id)
        return self._thumb(path, f"trash|{path.name}")

    def _thumb_path(self, key: str) -> Path:
        name = hashlib.sha1(key.encode("utf-8", "surrogatepass")).hexdigest()
        return self.home / "thumbs" / name[:2] / f"{name}.webp"

    def _forget_thumbnail(self, rel: str, mtime: float, size: int) -> None:
        """Drop the cached thumbnail of a file that changed or left (a cache file of our own, never an image)."""
        self._thumb_path(f"{rel}|{mtime}|{size}").unlink(missing_ok=True)

    def _thumb(self, source: Path, key: str) -> Image.Image:
        cached = self._thumb_path(key)
        try:
            with Image.open(cached) as image:
                image.load()
                return image.copy()
        except (OSError, ValueError):
            pass
        try:
            with Image.open(source) as image:
                image.draft("RGB", (THUMB_SIDE, THUMB_SIDE))
                image.thumbnail((THUMB_SIDE, THUMB_SIDE), Image.Resampling.BILINEAR, reducing_gap=2.0)
                small = image.convert("RGB")
        except (OSError, ValueError, SyntaxError):
            return Image.new("RGB", (THUMB_SIDE, THUMB_SIDE), (90, 90, 90))
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            temporary = cached.with_name(f".{uuid.uuid4().hex}.webp")
            small.save(temporary, format="WEBP", quality=82)
            os.replace(temporary, cached)
        except OSError as exc:  # a full disk costs speed, never the page
            log.info("image browser: could not cache a thumbnail (%s)", exc)
        return small

    # Favourites -------------------------------------------------------------------------------------------
    def set_favourite(self, rel: str, favourite: bool = True) -> ImageEntry:
        entry = self.get(rel)
        with self._lock:
            self._conn().execute("UPDATE images SET favourite = ? WHERE path = ?", (int(bool(favourite)), entry.path))
        return self.get(entry.path)

    # Trash ---------------------------------------------------------------------------------------------
    def delete(self, rel: str) -> TrashEntry:
        """Move an indexed image (and its `-mask.png`) into the trash folder; the index forgets it, the trash
        remembers where it was."""
        entry = self.get(rel)
        source = resolve_inside(self.outputs_dir, entry.path, "image")
        if not source.is_file() or source.is_symlink():
            raise ValueError(f"image: {entry.path!r} is no longer in outputs/ (rescan)")
        self.trash_dir.mkdir(parents=True, exist_ok=True)
        stored = f"{uuid.uuid4().hex[:12]}-{source.name}"
        mask_source = source.with_name(source.stem + MASK_SUFFIX)
        mask = f"{stored[:-len(source.suffix)]}{MASK_SUFFIX}" if mask_source.is_file() else None
        with self._lock:
            shutil.move(source, self.trash_dir / stored)
            if mask:
                shutil.move(mask_source, self.trash_dir / mask)
            db = self._conn()
            db.execute("BEGIN")
            cursor = db.execute("INSERT INTO trash (original, stored, deleted, mask, favourite, prompt, infotext) "
                                "VALUES (?, ?, ?, ?, ?, ?, ?)", (entry.path, stored, time.time(), mask,
                                                                 int(entry.favourite), entry.prompt, entry.infotext))
            db.execute("DELETE FROM images WHERE path = ?", (entry.path,))
            db.execute("COMMIT")
            trash_id = int(cursor.lastrowid or 0)
        self._forget_thumbnail(entry.path, entry.mtime, entry.bytes)
        return self.trashed(trash_id)

    def trashed(self, trash_id: int) -> TrashEntry:
        with self._lock:
            row = self._conn().execute("SELECT id, original, stored, deleted, prompt, infotext, favourite FROM trash "
                                       "WHERE id = ?", (int(trash_id),)).fetchone()
        if row is None:
            raise ValueError(f"trash: no deleted image {trash_id!r} (it was restored already?)")
        values = dict(row)
        values["favourite"] = bool(values["favourite"])
        return TrashEntry(**values)

    def trash(self, page: int = 1, per_page: int = 24) -> Page:
        """The deleted images, last deleted first."""
        if not isinstance(page, int) or page < 1:
            raise ValueError(f"page: must be 1 or more, got {page!r}")
        if not isinstance(per_page, int) or not 1 <= per_page <= MAX_PER_PAGE:
            raise ValueError(f"per_page: must be 1 to {MAX_PER_PAGE}, got {per_page!r}")
        with self._lock:
            db = self._conn()
            total = int(db.execute("SELECT COUNT(*) FROM trash").fetchone()[0])
            pages = max(1, -(-total // per_page))
            page = min(page, pages)
            ids = [r[0] for r in db.execute("SELECT id FROM trash ORDER BY deleted DESC, id DESC LIMIT ? OFFSET ?",
                                            (per_page, (page - 1) * per_page))]
        return Page([self.trashed(i) for i in ids], total, page, pages)

    def trash_file(self, trash_id: int) -> Path:
        entry = self.trashed(trash_id)
        return resolve_inside(self.trash_dir, entry.stored, "trash")

    def restore(self, trash_id: int) -> ImageEntry:
        """Move a deleted image back to where it was (beside it, as `name-restored-N`, when that name was taken
        since), index it again with its favourite flag."""
        entry = self.trashed(trash_id)
        stored = resolve_inside(self.trash_dir, entry.stored, "trash")
        if not stored.is_file():
            raise ValueError(f"trash: the file of {entry.original!r} is missing from the trash folder")
        target = resolve_inside(self.outputs_dir, entry.original, "image")
        number = 0
        while target.exists() or target.with_name(target.stem + MASK_SUFFIX).exists():
            number += 1
            original = Path(entry.original)
            target = resolve_inside(self.outputs_dir, original.with_name(
                f"{original.stem}-restored-{number}{original.suffix}").as_posix(), "image")
        target.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            mask = self._conn().execute("SELECT mask FROM trash WHERE id = ?", (entry.id,)).fetchone()[0]
            shutil.move(stored, target)
            if mask and (self.trash_dir / mask).is_file():
                shutil.move(resolve_inside(self.trash_dir, mask, "trash"), target.with_name(target.stem + MASK_SUFFIX))
            self._conn().execute("DELETE FROM trash WHERE id = ?", (entry.id,))
            self._thumb_path(f"trash|{entry.stored}").unlink(missing_ok=True)
            self.record(target)
            rel = target.relative_to(self.outputs_dir.resolve()).as_posix()
            if entry.favourite:
                self._conn().execute("UPDATE images SET favourite = 1 WHERE path = ?", (rel,))
        return self.get(rel)
