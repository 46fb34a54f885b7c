"""Colour emoji images with their Unicode names as captions ("hamster face", "broken heart").

Rendered offline with Pillow from Debian's ``fonts-noto-color-emoji`` (SIL Open Font License; installed by
``setup.sh``), one image per single-code-point emoji that the font draws (about 1,400), captions from the
standard library's ``unicodedata.name``. Images are rendered once at the font's native size 109, cropped
to their content, pasted centred on a square white canvas, resized to ``size`` and cached as ``.npz`` in the
handgrad data dir.
"""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path

import numpy

FONT_PATHS = (
    "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf",
    "/usr/share/fonts/noto/NotoColorEmoji.ttf",
)
RANGES = ((0x2300, 0x27C0), (0x2B00, 0x2C00), (0x1F000, 0x1FB00))


def _font_path() -> str:
    env = os.environ.get("HANDGRAD_EMOJI_FONT")
    for p in ((env,) if env else ()) + FONT_PATHS:
        if p and Path(p).exists():
            return p
    raise FileNotFoundError(
        "the emoji captions data set needs NotoColorEmoji.ttf: run 'bash setup.sh' or "
        "'apt-get install fonts-noto-color-emoji', or set HANDGRAD_EMOJI_FONT to the font file"
    )


def render_emoji(size: int = 32) -> tuple[numpy.ndarray, list[str], list[str]]:
    """``(images uint8 (N, size, size, 3), captions, characters)`` for every emoji the font draws."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(_font_path(), 109)
    images, captions, chars = [], [], []
    for lo, hi in RANGES:
        for cp in range(lo, hi):
            ch = chr(cp)
            name = unicodedata.name(ch, "")
            if not name or unicodedata.category(ch) not in ("So", "Sm"):
                continue
            canvas = Image.new("RGBA", (160, 160), (0, 0, 0, 0))
            ImageDraw.Draw(canvas).text((10, 10), ch, font=font, embedded_color=True)
            box = canvas.getbbox()
            if box is None:
                continue
            glyph = canvas.crop(box)
            side = max(glyph.size)
            square = Image.new("RGBA", (side, side), (255, 255, 255, 255))
            square.alpha_composite(glyph, ((side - glyph.size[0]) // 2, (side - glyph.size[1]) // 2))
            rgb = square.convert("RGB").resize((size, size), Image.LANCZOS)
            images.append(numpy.asarray(rgb, dtype=numpy.uint8))
            captions.append(name.lower())
            chars.append(ch)
    return numpy.stack(images), captions, chars


def load_emoji(size: int = 32, refresh: bool = False) -> tuple[numpy.ndarray, list[str], list[str]]:
    """Cached :func:`render_emoji`."""
    cache = Path(os.environ.get("HANDGRAD_DATA", Path.home() / ".cache" / "handgrad")) / f"emoji_{size}.npz"
    if cache.exists() and not refresh:
        with numpy.load(cache) as z:
            return z["images"], list(z["captions"]), list(z["chars"])
    images, captions, chars = render_emoji(size)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(cache.stem + ".tmp.npz")
    numpy.savez_compressed(tmp, images=images, captions=numpy.array(captions), chars=numpy.array(chars))
    os.replace(tmp, cache)
    return images, captions, chars
