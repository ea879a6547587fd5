"""Grids of images with their axis labels, drawn with PIL.

`draw_grid` lays cells out row by row (`columns` per row), with an optional margin between cells and, when labels
are given, a band of column labels above and of row labels to the left. Labels wrap to the cell width; cells of
another size than the first are resized to it, and a missing cell (an interrupted plot) stays blank.
"""
from __future__ import annotations

from PIL import Image, ImageDraw, ImageFont

BACKGROUND = (255, 255, 255)
TEXT = (0, 0, 0)


def font(cell_width: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    size = max(10, min(48, cell_width // 12))
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # a Pillow without scalable default font
        return ImageFont.load_default()


def wrap(text: str, width: int, face: ImageFont.ImageFont | ImageFont.FreeTypeFont) -> list[str]:
    """`text` broken into lines no wider than `width` where it has spaces to break at."""
    lines: list[str] = []
    for paragraph in str(text).splitlines() or [""]:
        line = ""
        for word in paragraph.split(" "):
            candidate = f"{line} {word}" if line else word
            if line and face.getlength(candidate) > width:
                lines.append(line)
                line = word
            else:
                line = candidate
        lines.append(line)
    return lines


def _line_height(face: ImageFont.ImageFont | ImageFont.FreeTypeFont) -> int:
    box = face.getbbox("Ag")
    return int(box[3] - box[1]) + 4


def draw_grid(images: list[Image.Image | None], columns: int, column_labels: list[str] | None = None,
              row_labels: list[str] | None = None, margin: int = 0) -> Image.Image:
    """The cells in rows of `columns`, labelled when labels are given (one per column, one per row)."""
    if columns < 1 or not images:
        raise ValueError("a grid needs at least one image and one column")
    first = next((img for img in images if img is not None), None)
    cell_w, cell_h = first.size if first is not None else (64, 64)
    rows = (len(images) + columns - 1) // columns
    face = font(cell_w)
    line_h = _line_height(face)
    pad = max(4, line_h // 2)
    col_lines = [wrap(label, cell_w - 2, face) for label in column_labels] if column_labels else []
    row_width = min(max(cell_w, 128), 512)
    row_lines = [wrap(label, row_width - 2 * pad, face) for label in row_labels] if row_labels else []
    top = (max(len(lines) for lines in col_lines) * line_h + 2 * pad) if any(column_labels or []) else 0
    left = (max(max((face.getlength(line) for line in lines), default=0) for lines in row_lines) + 2 * pad) \
        if any(row_labels or []) else 0
    left = int(left)
    width = left + columns * cell_w + (columns - 1) * margin
    height = top + rows * cell_h + (rows - 1) * margin
    grid = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(grid)
    for index, image in enumerate(images):
        row, column = divmod(index, columns)
        x, y = left + column * (cell_w + margin), top + row * (cell_h + margin)
        if image is not None:
            cell = image.convert("RGB")
            grid.paste(cell if cell.size == (cell_w, cell_h) else cell.resize((cell_w, cell_h)), (x, y))
    for column, lines in enumerate(col_lines):
        x0 = left + column * (cell_w + margin)
        y = top - pad - len(lines) * line_h
        for line in lines:
            draw.text((x0 + (cell_w - face.getlength(line)) / 2, y), line, fill=TEXT, font=face)
            y += line_h
    for row, lines in enumerate(row_lines[:rows]):
        y = top + row * (cell_h + margin) + (cell_h - len(lines) * line_h) / 2
        for line in lines:
            draw.text((left - pad - face.getlength(line), y), line, fill=TEXT, font=face)
            y += line_h
    return grid
