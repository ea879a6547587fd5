"""Image browser: how fast the index reads a folder of PNGs, and how fast a search over it answers.

Writes N small PNGs with infotext (varied prompts, seeds, models, modes and days) into a temporary outputs
folder, indexes them from scratch (`GalleryIndex.rescan`), then times searches: prompt words, a seed, a model, a
mode and date range, favourites, and a late page. Targets: index ≥ 500 images/s; each search over 10,000 images
≤ 200 ms (the worst of the repeats is what counts).

    python benchmarks/image_browser.py [--images 10000] [--repeats 5]
"""
from __future__ import annotations

import argparse
import os
import platform
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from PIL import Image  # noqa: E402

from webui.gallery_index import GalleryIndex, Query  # noqa: E402
from webui.infotext import format_infotext, png_info  # noqa: E402

WORDS = ("red circle blue square green triangle yellow star a cat on the mat sunset over mountains portrait of an old "
         "man city at night forest river oil painting watercolour photo detailed soft light").split()
MODELS = ("tiny-sd1", "easel-shapes", "sdxl-base", "flux-dev", "realistic-v5")
FOLDERS = ("txt2img-images", "img2img-images", "extras-images", "inpaint-images", "txt2img-grids")


def write_images(outputs: Path, count: int) -> None:
    rng = random.Random(0)
    pixels = Image.new("RGB", (8, 8), (200, 30, 30))
    for number in range(count):
        day = f"2026-{1 + number * 12 // count:02d}-{1 + number % 28:02d}"
        folder = outputs / FOLDERS[number % len(FOLDERS)] / day
        folder.mkdir(parents=True, exist_ok=True)
        prompt = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 24)))
        text = format_infotext(prompt, "blurry, low quality", {
            "Steps": 20, "Sampler": "Euler a", "CFG scale": 7, "Seed": number, "Size": "512x512",
            "Model": rng.choice(MODELS), "Version": "Easel 0"})
        pixels.save(folder / f"{number:05d}-{number}.png", pnginfo=png_info(text))


def timed_ms(fn) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}")
    with tempfile.TemporaryDirectory(prefix="easel-bench-browser-") as tmp:
        outputs = Path(tmp) / "outputs"
        start = time.perf_counter()
        write_images(outputs, args.images)
        print(f"wrote {args.images} PNGs in {time.perf_counter() - start:.1f} s")
        index = GalleryIndex(outputs, Path(tmp) / "gallery")
        report = index.rescan()
        rate = report.added / report.seconds
        print(f"index from scratch: {report.added} images in {report.seconds:.2f} s = {rate:.0f} images/s "
              f"(target >= 500) FTS5={index.fts}")
        again = index.rescan()
        print(f"rescan with nothing changed: {again.seconds * 1000:.0f} ms")
        for path in list(outputs.rglob("*.png"))[::50]:
            index.set_favourite(path.relative_to(outputs).as_posix())
        queries = {
            "words 'red circle'": Query(words="red circle"),
            "words 'oil painting of an old man'": Query(words="oil painting of an old man"),
            "seed 4242": Query(seed="4242"),
            "model 'flux'": Query(model="flux"),
            "mode txt2img + days": Query(mode="txt2img", date_from="2026-03-01", date_to="2026-06-30"),
            "favourites": Query(favourites=True),
            "words + model + mode": Query(words="sunset", model="sdxl", mode="img2img"),
            "everything, page 1": Query(),
        }
        worst_all = 0.0
        for label, query in queries.items():
            times = [timed_ms(lambda: index.search(query, page=1, per_page=24)) for _ in range(args.repeats)]
            late = timed_ms(lambda: index.search(query, page=10_000, per_page=24))  # clamps to the last page
            worst = max(*times, late)
            worst_all = max(worst_all, worst)
            print(f"search {label:32s} total {index.search(query).total:6d}: median {statistics.median(times):6.1f}"
                  f" ms, worst {worst:6.1f} ms (last page included)")
        print(f"worst search over {args.images} images: {worst_all:.1f} ms (target <= 200)")
        index.fts = False  # as on an SQLite built without FTS5
        times = [timed_ms(lambda: index.search(Query(words="red circle"))) for _ in range(args.repeats)]
        print(f"without FTS5 (LIKE), words 'red circle': median {statistics.median(times):.1f} ms, "
              f"worst {max(times):.1f} ms")
        index.close()
        thumbnails(Path(tmp))


def thumbnails(tmp: Path) -> None:
    """A page of 24 thumbnails of 1024x1024 PNGs (noise: the slowest to decode), made and then read back."""
    import numpy as np

    outputs = tmp / "thumb-outputs"
    folder = outputs / "txt2img-images" / "2026-12-07"
    folder.mkdir(parents=True)
    noise = Image.fromarray((np.random.default_rng(0).random((1024, 1024, 3)) * 255).astype("uint8"))
    for number in range(24):
        noise.save(folder / f"{number:05d}-{number}.png")
    index = GalleryIndex(outputs, tmp / "thumb-gallery")
    index.rescan()
    entries = index.search(per_page=24).items
    first = timed_ms(lambda: [index.thumbnail(e) for e in entries])
    again = timed_ms(lambda: [index.thumbnail(e) for e in entries])
    print(f"a page of 24 thumbnails of 1024x1024 PNGs: first view {first:.0f} ms, again (cached) {again:.0f} ms")
    index.close()


if __name__ == "__main__":
    main()
