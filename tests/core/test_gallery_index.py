"""The image browser's index over real PNG files: build, incremental record, rescan after outside changes, search
by words / seed / model, filters, pagination, favourites, delete → trash → restore (files moved, never unlinked),
and names that would leave the outputs folder refused."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

from webui.engine.outputs import mode_folder, save_image
from webui.gallery_index import GalleryIndex, Query, mode_of
from webui.infotext import format_infotext


def infotext(prompt: str, seed: int, model: str = "tiny-sd1", negative: str = "") -> str:
    return format_infotext(prompt, negative, {"Steps": 2, "Sampler": "Euler a", "CFG scale": 7, "Seed": seed,
                                              "Size": "16x16", "Model": model})


def write(outputs: Path, rel: str, prompt: str, seed: int, model: str = "tiny-sd1", mtime: float | None = None) -> Path:
    path = outputs / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    from webui.infotext import png_info

    Image.new("RGB", (16, 12), (seed % 255, 10, 20)).save(path, pnginfo=png_info(infotext(prompt, seed, model)))
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


@pytest.fixture
def world(tmp_path: Path) -> tuple[Path, GalleryIndex]:
    outputs = tmp_path / "data" / "outputs"
    base = 1_700_000_000.0
    write(outputs, "txt2img-images/2026-12-01/00000-1.png", "a red circle on blue", 1, mtime=base)
    write(outputs, "txt2img-images/2026-12-02/00000-2.png", "a blue square", 2, "other-model", mtime=base + 10)
    write(outputs, "img2img-images/2026-12-03/00000-3.png", "red triangle, sunset", 3, mtime=base + 20)
    write(outputs, "extras-images/2026-12-03/00000--1.png", "", -1, mtime=base + 30)
    write(outputs, "txt2img-grids/2026-12-04/grid-0000.png", "a red circle on blue", 1, mtime=base + 40)
    index = GalleryIndex(outputs, tmp_path / "data" / "gallery")
    yield outputs, index
    index.close()


def paths(page) -> list[str]:
    return [item.path for item in page.items]


def test_build_reads_every_mode_newest_first_with_infotext_fields(world) -> None:
    outputs, index = world
    report = index.rescan()
    assert report.added == 5 and report.removed == 0
    assert (index.home / "index.sqlite").is_file()
    page = index.search()
    assert paths(page) == ["txt2img-grids/2026-12-04/grid-0000.png", "extras-images/2026-12-03/00000--1.png",
                           "img2img-images/2026-12-03/00000-3.png", "txt2img-images/2026-12-02/00000-2.png",
                           "txt2img-images/2026-12-01/00000-1.png"]
    first = index.get("img2img-images/2026-12-03/00000-3.png")
    assert (first.mode, first.day, first.seed, first.model, first.sampler) == ("img2img", "2026-12-03", 3,
                                                                               "tiny-sd1", "Euler a")
    assert first.prompt == "red triangle, sunset" and (first.width, first.height) == (16, 12)
    assert "Seed: 3" in first.infotext and first.bytes == (outputs / first.path).stat().st_size
    assert index.modes() == ["extras", "img2img", "txt2img", "txt2img-grids"]
    assert mode_of("00001.png") == "outputs"


def test_search_by_words_seed_model_and_filters(world) -> None:
    _, index = world
    index.rescan()
    assert sorted(paths(index.search(Query(words="red")))) == [
        "img2img-images/2026-12-03/00000-3.png", "txt2img-grids/2026-12-04/grid-0000.png",
        "txt2img-images/2026-12-01/00000-1.png"]
    assert paths(index.search(Query(words="RED circle"))) == ["txt2img-grids/2026-12-04/grid-0000.png",
                                                              "txt2img-images/2026-12-01/00000-1.png"]
    assert paths(index.search(Query(words="circle", mode="txt2img"))) == ["txt2img-images/2026-12-01/00000-1.png"]
    assert paths(index.search(Query(words="squ"))) == ["txt2img-images/2026-12-02/00000-2.png"]  # word prefixes
    assert index.search(Query(words="green")).total == 0
    assert paths(index.search(Query(seed="2"))) == ["txt2img-images/2026-12-02/00000-2.png"]
    assert paths(index.search(Query(seed=-1))) == ["extras-images/2026-12-03/00000--1.png"]
    assert paths(index.search(Query(model="OTHER"))) == ["txt2img-images/2026-12-02/00000-2.png"]
    assert paths(index.search(Query(date_from="2026-12-02", date_to="2026-12-03", mode="txt2img"))) == [
        "txt2img-images/2026-12-02/00000-2.png"]
    assert index.search(Query(date_from="2026-12-03")).total == 3
    assert index.search(Query(words='" OR 1=1 --')).total == 0  # quotes and operators are words, never syntax
    with pytest.raises(ValueError, match="^seed: must be a whole number"):
        index.search(Query(seed="abc"))
    with pytest.raises(ValueError, match="^date_from: must be a date as YYYY-MM-DD"):
        index.search(Query(date_from="yesterday"))
    with pytest.raises(ValueError, match="^date_to: 2026-12-01 is before date_from 2026-12-02"):
        index.search(Query(date_from="2026-12-02", date_to="2026-12-01"))


def test_search_without_fts_uses_like(world) -> None:
    _, index = world
    index.rescan()
    index.fts = False
    assert index.search(Query(words="red circle")).total == 2
    assert index.search(Query(words="100%")).total == 0


def test_pagination(world) -> None:
    _, index = world
    index.rescan()
    pages = [index.search(page=n, per_page=2) for n in (1, 2, 3)]
    assert [p.total for p in pages] == [5, 5, 5] and [p.pages for p in pages] == [3, 3, 3]
    assert [len(p.items) for p in pages] == [2, 2, 1]
    assert len({path for p in pages for path in paths(p)}) == 5
    assert index.search(page=9, per_page=2).page == 3  # past the end: the last page
    with pytest.raises(ValueError, match="^per_page: must be 1 to 200"):
        index.search(per_page=0)
    with pytest.raises(ValueError, match="^page: must be 1 or more"):
        index.search(page=0)


def test_incremental_record_and_rescan_after_outside_changes(world) -> None:
    outputs, index = world
    index.rescan()
    index.set_favourite("txt2img-images/2026-12-01/00000-1.png")
    # Easel saves an image: the engine's listener records it at once
    saved = save_image(Image.new("RGB", (8, 8)), mode_folder(outputs, "txt2img"), 77, infotext("a new moon", 77))
    index.record(saved)
    assert paths(index.search(Query(seed=77))) == [saved.relative_to(outputs).as_posix()]
    assert index.rescan().added == 0  # already known
    # outside Easel: one file removed, one rewritten, one added; a link pointing out is never read
    (outputs / "txt2img-images/2026-12-02/00000-2.png").unlink()
    write(outputs, "txt2img-images/2026-12-01/00000-1.png", "a green circle", 1, mtime=1_800_000_000)
    write(outputs, "copied/elsewhere.png", "copied in by hand", 5)
    secret = outputs.parent / "secret.png"
    write(outputs.parent, "secret.png", "secret", 9)
    (outputs / "txt2img-images" / "link.png").symlink_to(secret)
    report = index.rescan()
    assert (report.added, report.updated, report.removed) == (1, 1, 1)
    assert index.search(Query(seed=2)).total == 0 and index.search(Query(seed=9)).total == 0
    changed = index.get("txt2img-images/2026-12-01/00000-1.png")
    assert changed.prompt == "a green circle" and changed.favourite  # the favourite survives the rescan
    assert index.get("copied/elsewhere.png").mode == "copied"
    assert index.search(Query(words="green")).total == 1 and index.search(Query(words="circle blue")).total == 1


def test_favourites_persist_across_reopening(world, tmp_path: Path) -> None:
    outputs, index = world
    index.rescan()
    entry = index.set_favourite("img2img-images/2026-12-03/00000-3.png")
    assert entry.favourite
    index.close()
    again = GalleryIndex(outputs, index.home)
    again.rescan()
    assert paths(again.search(Query(favourites=True))) == ["img2img-images/2026-12-03/00000-3.png"]
    assert not again.set_favourite("img2img-images/2026-12-03/00000-3.png", False).favourite
    assert again.search(Query(favourites=True)).total == 0
    again.close()


def test_delete_moves_to_trash_and_restore_moves_back(world) -> None:
    outputs, index = world
    index.rescan()
    rel = "txt2img-images/2026-12-01/00000-1.png"
    source = outputs / rel
    content = source.read_bytes()
    inode = source.stat().st_ino
    (outputs / "txt2img-images/2026-12-01/00000-1-mask.png").write_bytes(b"mask")
    index.set_favourite(rel)
    gone = index.delete(rel)
    assert not source.exists() and not (outputs / "txt2img-images/2026-12-01/00000-1-mask.png").exists()
    stored = index.trash_file(gone.id)
    assert stored.parent == index.trash_dir.resolve() and stored.read_bytes() == content
    assert stored.stat().st_ino == inode  # moved, not copied and unlinked
    assert index.trash_dir.is_relative_to(index.home) and index.home.parent == outputs.parent  # in the data dir
    assert index.search(Query(seed=1)).total == 1  # only the grid is left
    assert index.rescan().added == 0  # a rescan does not bring it back
    assert [t.original for t in index.trash().items] == [rel]
    back = index.restore(gone.id)
    assert back.path == rel and back.favourite and source.read_bytes() == content
    assert (outputs / "txt2img-images/2026-12-01/00000-1-mask.png").read_bytes() == b"mask"
    assert index.trash().total == 0 and list(index.trash_dir.iterdir()) == []
    with pytest.raises(ValueError, match="^trash: no deleted image"):
        index.restore(gone.id)
    # restoring when the name was taken meanwhile never overwrites
    again = index.delete(rel)
    write(outputs, rel, "a newcomer", 11)
    restored = index.restore(again.id)
    assert restored.path == "txt2img-images/2026-12-01/00000-1-restored-1.png"
    index.rescan()  # the newcomer was written outside Easel
    assert index.get(rel).seed == 11 and (outputs / restored.path).read_bytes() == content


@pytest.mark.parametrize("name", ["../config.json", "/etc/passwd", "txt2img-images/../../config.json",
                                  "a\x00b.png", "..\\..\\config.json", ""])
def test_hostile_names_are_refused(world, name: str) -> None:
    outputs, index = world
    index.rescan()
    (outputs.parent / "config.json").write_text("{}")
    for action in (index.get, index.delete, index.set_favourite, index.file):
        with pytest.raises(ValueError, match="^image: "):
            action(name)
    assert (outputs.parent / "config.json").read_text() == "{}"


def test_a_link_pointing_out_is_neither_indexed_nor_served(world) -> None:
    outputs, index = world
    secret = outputs.parent / "secret.png"
    write(outputs.parent, "secret.png", "secret", 9)
    (outputs / "leak.png").symlink_to(secret)
    index.record(outputs / "leak.png")  # even when told it was saved there
    index.rescan()
    assert index.search(Query(words="secret")).total == 0
    with pytest.raises(ValueError, match="^image: "):
        index.delete("leak.png")
    assert secret.is_file() and (outputs / "leak.png").is_symlink()


def test_thumbnails_are_made_once_and_remade_for_a_changed_file(world) -> None:
    outputs, index = world
    big = outputs / "txt2img-images/2026-12-05/00000-8.png"
    big.parent.mkdir(parents=True)
    Image.new("RGB", (800, 400), (0, 200, 0)).save(big)
    index.rescan()
    thumb = index.thumbnail("txt2img-images/2026-12-05/00000-8.png")
    assert thumb.size == (192, 96) and thumb.getpixel((5, 5))[1] > 150
    cached = list((index.home / "thumbs").rglob("*.webp"))
    assert len(cached) == 1
    Image.new("RGB", (8, 8), (255, 0, 0)).save(cached[0])  # the cache is what a second call reads
    assert index.thumbnail("txt2img-images/2026-12-05/00000-8.png").size == (8, 8)
    Image.new("RGB", (400, 800), (0, 0, 200)).save(big)
    os.utime(big, (1_900_000_000, 1_900_000_000))
    index.rescan()
    assert index.thumbnail("txt2img-images/2026-12-05/00000-8.png").size == (96, 192)
    assert len(list((index.home / "thumbs").rglob("*.webp"))) == 1  # the old one was dropped
    gone = index.delete("txt2img-images/2026-12-05/00000-8.png")
    assert index.trash_thumbnail(gone.id).size == (96, 192)
    assert len(list((index.home / "thumbs").rglob("*.webp"))) == 1  # the trash's own
    index.restore(gone.id)
    assert list((index.home / "thumbs").rglob("*.webp")) == []
