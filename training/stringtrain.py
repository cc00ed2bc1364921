"""`digits train-strings`: the string network (shared/stringnet.py), trained with CTC.

Training strings are made as the generated test set is (training/strings.py: apart,
touching and overlapping neighbours) but from MNIST *training* digits, each digit
scaled by 0.85-1.15, with marks the reader must learn to pass over: a full stop or a
comma, a dash or an equals sign after the digits, an underline; slashes, full stops,
commas, dashes or spaces between groups of digits (dates, thousands) and a currency sign
before them (`training.strings.mark`). Every string goes
through exactly the reader's path (PNG bytes -> `shared.fields.field_strip`). Real
cheque amount fields can be mixed in (`real_folds`: ORAND-CAR-A fields whose
number % 5 is in them, never the folds it is tested on).
"""

from __future__ import annotations

import copy
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from shared.fields import drop_specks, field_ink, field_strip
from shared.stringnet import BLANK, CHANNELS, HIDDEN, STRIDE, StringNet, load, save
from training.pools import spawned_pool
from training.strings import CURRENCIES, SEPARATORS, _png, joined, neighbour_kinds, render
from training.train import ema_update

LENGTHS = {1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 4, 7: 3, 8: 2}  # relative odds of each length
GROUPED, PRICED = 0.15, 0.1  # odds of marks between groups of digits, of a currency sign


def _marks(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Non-digits beside the digits: dark ink on white, as `render` returns."""
    ink = 255 - image
    h = ink.shape[0]
    rows = np.flatnonzero(ink.max(axis=1) > 127)
    top, base = int(rows[0]), int(rows[-1])
    tail = rng.random()
    if tail < 0.35:  # ".", ",", "-" or "=" after the digits
        extra = np.zeros((h, 14), np.uint8)
        kind = int(rng.integers(0, 4))
        if kind == 0:
            extra[base - 2 : base + 1, 3:6] = 255
        elif kind == 1:
            for i in range(5):
                extra[min(h - 1, base - 2 + i), 4 - i // 2 : 6 - i // 2] = 255
        else:
            mid = (top + base) // 2
            extra[mid : mid + 2, 2:12] = 255
            if kind == 3:
                extra[mid - 4 : mid - 2, 2:12] = 255
        ink = np.concatenate([ink, extra], axis=1)
    if rng.random() < 0.15:  # an underline, sometimes touching the digits
        y = min(h - 1, base + int(rng.integers(0, 3)))
        ink[y, :] = 255
    return 255 - ink


def _line(digits: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """The digits as one string, or as groups with marks between them (a date, an amount
    with thousands) and a currency sign before them."""
    grouped = len(digits) >= 2 and rng.random() < GROUPED
    currency = str(rng.choice(CURRENCIES)) if rng.random() < PRICED else None
    if not grouped and currency is None:
        return render(digits, neighbour_kinds(len(digits) - 1, rng), rng)
    cuts = sorted(rng.choice(np.arange(1, len(digits)), size=min(
        len(digits) - 1, int(rng.integers(1, 3))), replace=False).tolist()) if grouped else []
    groups = [digits[a:b] for a, b in zip([0, *cuts], [*cuts, len(digits)], strict=True)]
    same = str(rng.choice(SEPARATORS))
    separators = [same if rng.random() < 0.7 else str(rng.choice(SEPARATORS)) for _ in cuts]
    return joined([render(g, neighbour_kinds(len(g) - 1, rng), rng) for g in groups],
                  separators, currency, rng)


CHUNK = 1_000  # strings made per task; each chunk has its own generator, seeded (seed, k)


def _jobs(count: int, seed: int, *options) -> list[tuple]:
    """(strings, seed, chunk number, *options) for each chunk of `count` strings."""
    return [(min(CHUNK, count - start), seed, start // CHUNK, *options)
            for start in range(0, count, CHUNK)]


def _a_length(rng: np.random.Generator) -> int:
    """How many digits a training string has (LENGTHS' odds)."""
    odds = np.array(list(LENGTHS.values()), float)
    return int(rng.choice(np.array(list(LENGTHS)), p=odds / odds.sum()))


_train = None  # MNIST's training split, read once by each pool process


def _load_train(data_dir: str) -> None:
    global _train
    from shared.mnist import load_split

    _train = load_split(data_dir, "train")


def _sheared(img: Image.Image, s: float, paper: int = 0) -> Image.Image:
    """`img` leaning about its middle row, x -> x + s (y - h/2), the uncovered corners
    filled with `paper`."""
    return img.transform(img.size, Image.AFFINE, (1, s, -s * img.height / 2, 0, 1, 0),
                         Image.BILINEAR, fillcolor=paper)


def _slanted(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The whole string leaning as handwriting leans (dark ink on white), by up to 0.3
    either way, widened so that nothing leans out of the image."""
    s = rng.uniform(-0.3, 0.3)
    pad = int(abs(s) * image.shape[0] / 2) + 1
    return np.asarray(_sheared(Image.fromarray(np.pad(image, ((0, 0), (pad, pad)),
                                                      constant_values=255)), s, 255))


def _synthetic_chunk(job) -> tuple[list[np.ndarray], list[str]]:
    count, seed, k, slant, small_end = job
    train = _train
    rng = np.random.default_rng((seed, k))
    strips, texts = [], []
    while len(strips) < count:
        length = _a_length(rng)
        idx = rng.integers(0, len(train.labels), size=length)
        # Amounts end in digits written smaller ("40.000"): the last one to three digits of
        # a `small_end` share of the strings 0.55-0.8 times as tall as the others.
        small, shrink = 0, 1.0
        if small_end and length >= 3 and rng.random() < small_end:
            small, shrink = int(rng.integers(1, 4)), rng.uniform(0.55, 0.8)
        digits = []
        for j, i in enumerate(idx):
            factor = rng.uniform(0.85, 1.15) * (shrink if j >= length - small else 1.0)
            size = max(8, round(28 * factor))
            digits.append(np.asarray(Image.fromarray(train.images[i]).resize((size, size),
                                                                            Image.BILINEAR)))
        image = _marks(_line(digits, rng), rng)
        if slant and rng.random() < slant:
            image = _slanted(image, rng)
        strip = field_strip(_png(image), 10**8)
        if strip is not None:
            strips.append(strip.pixels)
            texts.append("".join(str(int(train.labels[i])) for i in idx))
    return strips, texts


def synthetic(data_dir, count: int, seed: int, workers: int | None = None,
              slant: float = 0.0, small_end: float = 0.0
              ) -> tuple[list[np.ndarray], list[str]]:
    """`count` training strings as strips, with their digits, made in chunks on every
    core (the same strings for a seed, whatever the number of cores); a `slant` share of
    them leaning, a `small_end` share ending in smaller digits."""
    return _made(_synthetic_chunk, _jobs(count, seed, slant, small_end), _load_train,
                 (str(data_dir),), workers)


def _made(chunk, jobs: list, initializer, initargs: tuple, workers: int | None
          ) -> tuple[list[np.ndarray], list[str]]:
    """The strips and texts of every job's `chunk`, made on every core, in job order."""
    strips, texts = [], []
    with spawned_pool(workers or os.cpu_count() or 1, initializer=initializer,
                      initargs=initargs) as pool:
        for s, t in pool.map(chunk, jobs):
            strips += s
            texts += t
    return strips, texts


def cut_digits(real_dir, folds: tuple[int, ...]) -> tuple[list[np.ndarray], list[int]]:
    """The ORAND-CAR-A cheque digits of `folds` (the same folds as the fields: the same
    ink) as their ink, cropped to it: bright on black (uint8), as MNIST's are."""
    crops, labels = [], []
    for blob, label in _in_folds(real_dir, "orand-car-a-digits.zip", folds):
        ink = field_ink(blob, 10**8)[0]
        if ink is None:
            continue
        # Paper texture the ink map kept faint would be a hard-edged patch once cut out.
        ink = drop_specks(np.where(ink > 0.35, ink, 0.0))
        on = ink > 0.2
        if not on.any():
            continue
        rows, cols = np.flatnonzero(on.any(axis=1)), np.flatnonzero(on.any(axis=0))
        crop = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        crops.append((np.clip(crop, 0, 1) * 255).astype(np.uint8))
        labels.append(int(label))
    return crops, labels


_cuts: tuple[list[np.ndarray], list[int]] = ([], [])  # the cheque digits, in each process


def _keep_cuts(crops: list[np.ndarray], labels: list[int]) -> None:
    global _cuts
    _cuts = (crops, labels)


def _recombined_chunk(job) -> tuple[list[np.ndarray], list[str]]:
    """New strings of real cheque digits: the training folds' digits, each cut from its
    own field, set side by side in random order as `render` sets MNIST's."""
    count, seed, k = job
    crops, labels = _cuts
    rng = np.random.default_rng((seed, 7, k))
    strips, texts = [], []
    while len(strips) < count:
        idx = rng.integers(0, len(crops), size=_a_length(rng))
        digits = []
        for i in idx:
            crop = crops[i]
            size = 28 * rng.uniform(0.85, 1.15)
            width = max(2, round(crop.shape[1] * size / crop.shape[0]))
            digits.append(np.asarray(Image.fromarray(crop).resize((width, round(size)),
                                                                   Image.BILINEAR)))
        image = _marks(_line(digits, rng), rng)
        strip = field_strip(_png(image), 10**8)
        if strip is not None:
            strips.append(strip.pixels)
            texts.append("".join(str(labels[i]) for i in idx))
    return strips, texts


def recombined(real_dir, folds: tuple[int, ...], count: int, seed: int,
               workers: int | None = None) -> tuple[list[np.ndarray], list[str]]:
    """`count` strings made of the cheque digits of `folds` in new orders (none when the
    digits are not there), on every core."""
    crops, labels = cut_digits(real_dir, folds)
    if not crops or not count:
        return [], []
    return _made(_recombined_chunk, _jobs(count, seed), _keep_cuts, (crops, labels), workers)


def real_fields(real_dir, folds: tuple[int, ...]) -> tuple[list[np.ndarray], list[str]]:
    """The ORAND-CAR-A amount fields of `folds` as strips, with their digits."""
    strips, texts = [], []
    for blob, text in _in_folds(real_dir, "orand-car-a-strings.zip", folds):
        strip = field_strip(blob, 10**8)
        if strip is not None:
            strips.append(strip.pixels)
            texts.append(text)
    return strips, texts


def _in_folds(real_dir, name: str, folds: tuple[int, ...]) -> list[tuple[bytes, str]]:
    """(image, label) of the members of the real set `name` whose field is in `folds`;
    none when the set is not there."""
    from training.labelled import field_fold, load

    path = Path(real_dir) / name
    if not folds or not path.is_file():
        return []
    data = load(path)
    return [(blob, label) for file, blob, label in zip(data.files, data.blobs, data.labels,
                                                       strict=True)
            if field_fold(file) in folds]


def augment(strip: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A real field's strip as if written a little differently: wider or narrower, more
    or less slanted, a pixel or two higher or lower, a thicker or thinner pen. The same
    height, a width that stays a multiple of the stride, ink bright on 0."""
    from scipy import ndimage

    h, w = strip.shape
    img = Image.fromarray(np.clip(strip * 255, 0, 255).astype(np.uint8))
    img = _sheared(img, rng.uniform(-0.25, 0.25))
    width = max(STRIDE, round(w * rng.uniform(0.8, 1.2) / STRIDE) * STRIDE)
    out = np.asarray(img.resize((width, h), Image.BILINEAR), np.float32) / 255
    pen = rng.random()
    if pen < 0.2:
        out = ndimage.grey_dilation(out, size=(2, 2))
    elif pen < 0.3:
        out = ndimage.grey_erosion(out, size=(1, 2))
    shift = int(rng.integers(-2, 3))
    if shift:
        out = np.roll(out, shift, axis=0)
        if shift > 0:
            out[:shift] = 0
        else:
            out[shift:] = 0
    return np.ascontiguousarray(out)


def _batches(widths: np.ndarray, size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Indices in batches of similar width (little padding), the batches shuffled."""
    order = np.argsort(widths + rng.uniform(0, 8, len(widths)))
    batches = [order[i : i + size] for i in range(0, len(order), size)]
    rng.shuffle(batches)
    return batches


def _tensor(strips: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(s.shape[1] for s in strips)
    x = np.zeros((len(strips), 1, strips[0].shape[0], width), np.float32)
    for i, s in enumerate(strips):
        x[i, 0, :, : s.shape[1]] = s
    return torch.from_numpy(x), torch.tensor([s.shape[1] // STRIDE for s in strips])


def train(data_dir, out: Path, count: int = 120_000, epochs: int = 3, real_dir=None,
          real_folds: tuple[int, ...] = (), real_repeat: int = 24, seed: int = 0,
          threads: int = 2, log=print, augment_real: bool = True,
          channels: tuple[int, ...] = CHANNELS, hidden: int = HIDDEN,
          init: Path | None = None, max_lr: float = 3e-3, slant: float = 0.0,
          small_end: float = 0.0, ema: float = 0.0, recombine: int = 0) -> dict:
    """Train a string network (from `init`'s weights when given: a second stage) and save
    it to `out` with its metadata; with `ema`, the moving average of its weights at that
    decay (as the digit model's training keeps) instead of the last ones. `recombine`
    more strings are made of the real folds' cheque digits in new orders."""
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    started = time.perf_counter()
    strips, texts = synthetic(data_dir, count, seed, slant=slant, small_end=small_end)
    if real_dir and recombine:
        more, more_texts = recombined(real_dir, real_folds, recombine, seed)
        strips += more
        texts += more_texts
    fresh = len(strips)  # strings made anew; the real fields after them are repeated
    real_strips, real_texts = real_fields(real_dir, real_folds) if real_dir else ([], [])
    strips += real_strips * real_repeat
    texts += real_texts * real_repeat
    log(f"{len(strips)} strips ({len(real_strips)} real fields x {real_repeat}) made in "
        f"{time.perf_counter() - started:.0f} s")
    model, before = (load(init) if init else (StringNet(channels, hidden), None))
    average = copy.deepcopy(model) if ema else None
    batch = 64
    steps = epochs * -(-len(strips) // batch)
    opt = torch.optim.AdamW(model.parameters(), lr=max_lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=max_lr, total_steps=steps)
    ctc = torch.nn.CTCLoss(blank=BLANK, zero_infinity=True)
    widths = np.array([s.shape[1] for s in strips])
    rng = np.random.default_rng(seed)
    history = []
    step = 0
    for epoch in range(epochs):
        model.train()
        total, seen = 0.0, 0
        for idx in _batches(widths, batch, rng):
            # Each copy of a real field is drawn anew each time: learnt by heart otherwise.
            x, frames = _tensor([augment(strips[i], rng) if augment_real and i >= fresh
                                 else strips[i] for i in idx])
            targets = torch.tensor([int(c) for i in idx for c in texts[i]])
            lengths = torch.tensor([len(texts[i]) for i in idx])
            loss = ctc(model(x), targets, frames, lengths)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            if average is not None:
                ema_update(average, model, step, ema)
            step += 1
            total += float(loss.detach()) * len(idx)
            seen += len(idx)
        history.append(round(total / seen, 4))
        log(f"epoch {epoch + 1}/{epochs}: CTC loss {history[-1]:.4f} "
            f"({time.perf_counter() - started:.0f} s)")
    meta = {"name": "digits-strings", "trained_on": {
                "synthetic_strings": count, "synthetic_from": "MNIST training digits",
                "marks": "after the digits (35 %), underlines (15 %), between groups of "
                         f"digits ({GROUPED:.0%}: {' '.join(SEPARATORS)!r}), a currency sign "
                         f"before them ({PRICED:.0%}: {' '.join(CURRENCIES)})",
                "slanted": slant, "small_end": small_end,
                "recombined_cheque_digit_strings": fresh - count,
                "real_fields": len(real_strips), "real_folds": list(real_folds),
                "real_repeat": real_repeat,
                "real_augmented": "width 0.8-1.2x, slant +-0.25, +-2 px, pen thicker "
                                  "or thinner, drawn anew for each copy each epoch"
                                  if augment_real and real_strips else None},
            "epochs": epochs, "seed": seed, "max_lr": max_lr, "loss_history": history,
            "ema_decay": ema or None,
            "started_from": before and {"version": before.get("version"),
                                        "trained_on": before.get("trained_on"),
                                        "epochs": before.get("epochs")},
            "training_seconds": round(time.perf_counter() - started, 1)}
    return save((average if average is not None else model).eval(), meta, out)


def weights_path(out: Path) -> Path:
    """--out names the weights file, or a folder to write digits-strings.safetensors in
    (a folder given as the file failed only when saving, after the whole run)."""
    return out / "digits-strings.safetensors" if out.is_dir() else out


def main() -> None:  # pragma: no cover - a long run, started by hand
    import argparse

    p = argparse.ArgumentParser()
    p.add_argument("--out", type=Path, default=Path("models/digits-strings.safetensors"),
                   help="the weights file, or a folder to write digits-strings.safetensors in")
    # The defaults are the shipped model's recipe (docs/strings.md, "Training").
    p.add_argument("--count", type=int, default=120_000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--real-folds", default="0,1,2")
    p.add_argument("--real-repeat", type=int, default=24)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--channels", default=",".join(map(str, CHANNELS)),
                   help="the four convolutions' widths")
    p.add_argument("--hidden", type=int, default=HIDDEN, help="the 1-D convolutions' width")
    p.add_argument("--init", type=Path, default=None,
                   help="start from these string weights (a second stage) instead of anew")
    p.add_argument("--max-lr", type=float, default=3e-3, help="the one-cycle schedule's peak")
    p.add_argument("--slant", type=float, default=0.0,
                   help="share of the strings leaning by up to 0.3 either way")
    p.add_argument("--small-end", type=float, default=0.0,
                   help="share of the strings whose last 1-3 digits are written smaller")
    p.add_argument("--ema", type=float, default=0.0,
                   help="keep the moving average of the weights at this decay (e.g. 0.999)")
    p.add_argument("--recombine", type=int, default=0,
                   help="strings made of the real folds' cheque digits in new orders")
    p.add_argument("--no-augment", action="store_true",
                   help="real fields as they are (learnt by heart: 100 %% trained, 71 %% new)")
    args = p.parse_args()
    if args.init and (args.channels != p.get_default("channels")
                      or args.hidden != p.get_default("hidden")):
        p.error("--init keeps the shape of its weights: --channels and --hidden do not apply")
    folds = tuple(int(f) for f in args.real_folds.split(",") if f)
    meta = train(os.environ.get("DIGITS_DATA_DIR", "data/mnist"), weights_path(args.out),
                 args.count,
                 args.epochs, os.environ.get("DIGITS_REAL_DATA_DIR"), folds, args.real_repeat,
                 seed=args.seed,
                 augment_real=not args.no_augment,
                 channels=tuple(int(c) for c in args.channels.split(",")), hidden=args.hidden,
                 init=args.init, max_lr=args.max_lr, slant=args.slant,
                 small_end=args.small_end, ema=args.ema, recombine=args.recombine)
    print(json.dumps(meta))


if __name__ == "__main__":
    main()
