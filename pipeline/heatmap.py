"""R as an annotated heatmap PNG drawn with Pillow, for the R.png of every recorded run.

A search records one R.png per trial. Drawn with matplotlib that was the largest single cost of
recording (0.46 s of the driver's time per trial, 55 s of 120 trials, measured on the default
pool's exhaustive search under load); Pillow draws the same picture — viridis cells with their
values, row and column labels, title, colour bar — in a few milliseconds. Reports keep matplotlib.
"""

from __future__ import annotations

import functools
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

CELL = 60  # pixels per matrix cell


@functools.cache
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        import matplotlib

        return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts/ttf/DejaVuSans.ttf"), size)
    except (ImportError, OSError):
        return ImageFont.load_default(size)


@functools.cache
def _viridis() -> np.ndarray:
    from matplotlib import colormaps

    return (colormaps["viridis"](np.linspace(0, 1, 256))[:, :3] * 255).round().astype(np.uint8)


@functools.lru_cache(maxsize=4096)
def _glyphs(text: str, size: int, anchor: str = "mm") -> tuple[Image.Image, int, int]:
    """``text`` rendered once as a mask, with its offset from the point it is anchored at: a
    search draws the same cell values ("87.5") and labels thousands of times."""
    font = _font(size)
    left, top, right, bottom = font.getbbox(text, anchor=anchor)
    mask = Image.new("L", (max(1, right - left), max(1, bottom - top)), 0)
    ImageDraw.Draw(mask).text((-left, -top), text, font=font, fill=255, anchor=anchor)
    return mask, left, top


def _text(img: Image.Image, xy: tuple[float, float], text: str, size: int, ink: str, anchor: str) -> None:
    mask, dx, dy = _glyphs(text, size, anchor)
    img.paste(ink, (round(xy[0]) + dx, round(xy[1]) + dy), mask)


@functools.lru_cache(maxsize=1024)
def _rotated(text: str, font, angle: float) -> Image.Image:
    w = int(font.getlength(text)) + 4
    im = Image.new("L", (w, font.size + 6), 0)
    ImageDraw.Draw(im).text((2, 2), text, font=font, fill=255)
    return im.rotate(angle, expand=True, resample=Image.Resampling.BICUBIC)


def heatmap_png(values: np.ndarray, rows: list[str], cols: list[str], title: str) -> bytes:
    """``values`` (in [0, 1], shown in %) as a heatmap with ``rows``/``cols`` labels: PNG bytes
    (written by the caller wherever it goes: a file, or straight into an artifact store)."""
    lut, font = _viridis(), _font(13)
    n_rows, n_cols = values.shape
    left = int(max(font.getlength(r) for r in rows)) + 14
    labels = [_rotated(c, font, 30) for c in cols]
    top, bottom = 34, max(im.height for im in labels) + 8
    bar_x = left + n_cols * CELL + 16
    width, height = bar_x + 16 + 40, top + n_rows * CELL + bottom
    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    _text(img, (left + n_cols * CELL / 2, top / 2), title, 13, "black", "mm")
    for i in range(n_rows):
        y = top + i * CELL
        _text(img, (left - 8, y + CELL / 2), rows[i], 13, "black", "rm")
        for j in range(n_cols):
            v = float(np.clip(values[i, j], 0.0, 1.0))
            x = left + j * CELL
            d.rectangle((x, y, x + CELL - 1, y + CELL - 1), fill=tuple(int(c) for c in lut[round(v * 255)]))
            ink = "white" if v < 0.6 else "black"
            _text(img, (x + CELL / 2, y + CELL / 2), f"{values[i, j] * 100:.1f}", 11, ink, "mm")
    for j, im in enumerate(labels):  # right end of each rotated label under its column
        x = left + j * CELL + CELL // 2 - im.width + 6
        img.paste("black", (max(0, x), top + n_rows * CELL + 4), im)
    bar_h = n_rows * CELL
    ramp = lut[np.linspace(255, 0, bar_h).round().astype(int)]
    img.paste(Image.fromarray(np.repeat(ramp[:, None, :], 14, axis=1)), (bar_x, top))
    for pct in range(0, 101, 20):
        y = top + bar_h - 1 - pct / 100 * (bar_h - 1)
        _text(img, (bar_x + 18, y), str(pct), 11, "black", "lm")
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()
