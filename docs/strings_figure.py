"""Draw docs/img/strings.png: fields as sent, the box of each digit the string model read
and the text it gave, for generated strings (apart, touching, overlapping neighbours)
and real cheque amount fields it never trained on (ORAND-CAR-A fold 4).

    .venv/bin/python docs/strings_figure.py   # needs MNIST and DIGITS_REAL_DATA_DIR
"""

from __future__ import annotations

import io
import os
from pathlib import Path

from PIL import Image, ImageDraw

from shared.settings import get_settings
from shared.stringnet import path_beside
from training.labelled import field_fold, load
from training.strings import generated_strings
from worker.strings import StringModel

ROOT = Path(__file__).resolve().parent.parent
HEIGHT, WIDTH, LABEL = 60, 330, 150


def _row(blob: bytes, reading, truth: str, caption: str) -> Image.Image:
    img = Image.open(io.BytesIO(blob)).convert("RGB")
    draw = ImageDraw.Draw(img)
    for d in reading.digits:
        colour = (26, 127, 55) if d.confidence >= 0.9 else (207, 34, 46)
        draw.rectangle([d.box[0], d.box[1], d.box[2] - 1, d.box[3] - 1], outline=colour)
    scale = min(HEIGHT / img.height, WIDTH / img.width)
    img = img.resize((round(img.width * scale), round(img.height * scale)), Image.NEAREST)
    row = Image.new("RGB", (WIDTH + 2 * LABEL, HEIGHT + 6), "white")
    row.paste(img, (LABEL, 3))
    text = ImageDraw.Draw(row)
    text.text((4, HEIGHT // 2 - 6), caption, fill="black")
    ok = reading.text == truth
    text.text((LABEL + WIDTH + 8, HEIGHT // 2 - 12), f"read  {reading.text or '-'}",
              fill=(26, 127, 55) if ok else (207, 34, 46))
    text.text((LABEL + WIDTH + 8, HEIGHT // 2 + 2), f"truth {truth}", fill="black")
    return row


def main() -> None:
    settings = get_settings()
    model = StringModel(path_beside(settings.model_path), "cpu")
    rows = []
    made = generated_strings(settings.data_dir, seed=2024, mix={5: 60})
    for kind in ("apart", "touching", "overlapping"):
        picks = [i for i, k in enumerate(made.kinds) if k == kind][:2]
        readings = model.read([made.blobs[i] for i in picks])
        rows += [_row(made.blobs[i], r, made.labels[i], f"generated, {kind}")
                 for i, r in zip(picks, readings, strict=True)]
    real = load(Path(os.environ.get("DIGITS_REAL_DATA_DIR", ROOT.parent / "shared/data/real"))
                / "orand-car-a-strings.zip")
    picks = [i for i, f in enumerate(real.files) if field_fold(f) == 4][:8]
    readings = model.read([real.blobs[i] for i in picks])
    rows += [_row(real.blobs[i], r, real.labels[i], f"cheque {real.files[i]}")
             for i, r in zip(picks, readings, strict=True)]
    sheet = Image.new("RGB", (rows[0].width, sum(r.height for r in rows)), "white")
    y = 0
    for r in rows:
        sheet.paste(r, (0, y))
        y += r.height
    out = ROOT / "docs" / "img" / "strings.png"
    sheet.save(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
