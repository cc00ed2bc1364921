"""Draw docs/img/families.png: for each input family of training/forms.py (and a few of
training/scans.py), examples as sent, the ink mask the normaliser found, and the 28x28
image the model was given.

    .venv/bin/python docs/figures.py   # needs MNIST in DIGITS_DATA_DIR
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from shared.imaging import Prepared, _open, prepare_many, to_channels
from shared.inkmap import ink_map
from shared.mnist import load_split
from shared.settings import get_settings
from training.forms import DIGIT_FAMILIES, NON_DIGIT_KINDS, render_crop, render_empty

CELL, EXAMPLES, LABEL = 56, 4, 110


def _tile(img: Image.Image) -> Image.Image:
    img = img.convert("L")
    scale = CELL / max(img.size)
    img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                     Image.NEAREST)
    tile = Image.new("L", (CELL, CELL), 128)
    tile.paste(img, ((CELL - img.width) // 2, (CELL - img.height) // 2))
    return tile


def _mask(data: bytes) -> Image.Image:
    planes = [p[None].astype(np.float32) / (255 if p.dtype == np.uint8 else 1)
              for p in to_channels(_open(data, 10**8))]
    ink, has_ink, _ = ink_map(planes)
    return Image.fromarray(((ink[0] > 0.5) & has_ink[0]).astype(np.uint8) * 255)


def main() -> None:
    test = load_split(get_settings().data_dir, "test")
    rows = [(f, [render_crop(test.images[7 + 13 * i], f, np.random.default_rng((3, i)))
                 for i in range(EXAMPLES)]) for f in DIGIT_FAMILIES]
    rows += [(k, [render_empty(k, np.random.default_rng((4, i))) for i in range(EXAMPLES)])
             for k in NON_DIGIT_KINDS]
    width = LABEL + EXAMPLES * (3 * CELL + 16)
    sheet = Image.new("L", (width, len(rows) * (CELL + 6) + 20), 255)
    draw = ImageDraw.Draw(sheet)
    draw.text((LABEL, 4), "each: input | ink mask | 28x28 model input", fill=0)
    for r, (name, blobs) in enumerate(rows):
        y = 20 + r * (CELL + 6)
        draw.text((4, y + CELL // 2 - 6), name, fill=0)
        for i, (data, prep) in enumerate(zip(blobs, prepare_many(blobs), strict=True)):
            x = LABEL + i * (3 * CELL + 16)
            pixels = prep.pixels if isinstance(prep, Prepared) else np.zeros((28, 28))
            for j, img in enumerate((Image.open(io.BytesIO(data)), _mask(data),
                                     Image.fromarray((pixels * 255).astype(np.uint8)))):
                sheet.paste(_tile(img), (x + j * CELL, y))
    out = Path(__file__).parent / "img" / "families.png"
    sheet.save(out, optimize=True)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
