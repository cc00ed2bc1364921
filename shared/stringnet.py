"""The string network: a small CNN over a field 32 pixels high, read column by column
with CTC (blank + the ten digits), so touching and overlapping digits need no cuts.

Convolutions (16, 32, 64, 96 channels, two 2x2 max-pools and one 2x1) turn a (1, 32, W)
strip into W/4 columns of 384 features; two 1-D convolutions along the string give each
column the context of its neighbours (about a digit either side), and a linear layer
gives 11 log-probabilities per column. About 409k parameters: trained on two CPU cores in
under an hour (a network of 160k read 3 points fewer strings right, docs/strings.md).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from shared import artifact

HEIGHT = 32  # strips are this many pixels high
STRIDE = 4  # input columns per output column
BLANK = 10  # the CTC blank is class 10; digits are 0-9


def _conv(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]


# The shipped network's shape (docs/strings.md): the four convolutions' widths and the
# 1-D convolutions' width. Training's defaults are these; a saved model names its own.
CHANNELS = (16, 32, 64, 96)
HIDDEN = 128


class StringNet(nn.Module):
    """(N, 1, 32, W) in [0, 1], ink bright -> (W / 4, N, 11) log-probabilities."""

    def __init__(self, channels: tuple[int, ...] = CHANNELS, hidden: int = HIDDEN) -> None:
        super().__init__()
        c1, c2, c3, c4 = channels
        self.features = nn.Sequential(
            *_conv(1, c1), nn.MaxPool2d(2),
            *_conv(c1, c2), nn.MaxPool2d(2),
            *_conv(c2, c3), *_conv(c3, c4), nn.MaxPool2d((2, 1)),
        )
        rows = HEIGHT // 8
        self.sequence = nn.Sequential(
            nn.Conv1d(c4 * rows, hidden, 5, padding=2), nn.BatchNorm1d(hidden), nn.ReLU(),
            nn.Conv1d(hidden, hidden, 5, padding=2), nn.BatchNorm1d(hidden), nn.ReLU(),
            nn.Conv1d(hidden, 11, 1),
        )
        self.config = {"channels": list(channels), "hidden": hidden}

    def forward(self, x: torch.Tensor, widths: torch.Tensor | None = None) -> torch.Tensor:
        """With `widths` (each strip's own width, a multiple of 4), the columns past a strip
        are zeroed after every layer, so that a strip reads the same whatever it is
        batched with (padding otherwise leaks in through the layers' biases)."""
        f = x
        for layer in self.features:
            f = layer(f)
            if widths is not None and isinstance(layer, nn.ReLU):
                f = f * _columns(widths * f.shape[-1] // x.shape[-1], f.shape[-1])[:, None, None]
        n, c, h, w = f.shape  # (N, C, 4, W/4)
        seq = f.reshape(n, c * h, w)
        for layer in self.sequence:
            if widths is not None and isinstance(layer, nn.Conv1d):
                seq = seq * _columns(widths // STRIDE, w)[:, None]
            seq = layer(seq)
        return seq.permute(2, 0, 1).log_softmax(-1)  # (W/4, N, 11)


def _columns(widths: torch.Tensor, total: int) -> torch.Tensor:
    """(N, total) 1.0 for the columns within each width, else 0.0."""
    return (torch.arange(total, device=widths.device)[None, :] < widths[:, None]).float()


def save(model: StringNet, meta: dict, weights: Path) -> dict:
    """Weights as safetensors and metadata JSON beside them, with the weights' sha256, as
    the digit model's artifact (shared/artifact.py) is kept."""
    weights = Path(weights)
    weights.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
              str(weights))
    meta = {"version": datetime.now(UTC).strftime("%Y%m%d.%H%M%S"), **meta,
            "architecture": {"class": "StringNet", **model.config},
            "parameters": sum(p.numel() for p in model.parameters()),
            "input": {"height": HEIGHT, "stride": STRIDE, "polarity": "ink bright on black",
                      "preprocessing": "shared/fields.py: ink map, lines and specks removed, "
                                       "cropped, 28 rows of ink in 32"},
            "torch_version": torch.__version__, "weights_file": weights.name,
            "weights_sha256": artifact.sha256_file(weights)}
    artifact.write_metadata(weights, meta)
    return meta


def load(weights: Path | str, map_location: str = "cpu") -> tuple[StringNet, dict]:
    """The network in eval mode and its metadata, once the checksum matches."""
    weights = Path(weights)
    meta = artifact.verify(weights)
    arch = dict(meta["architecture"])
    if arch.pop("class", None) != "StringNet":
        raise artifact.ArtifactError(f"model {weights} is not a StringNet artifact")
    model = StringNet(tuple(arch["channels"]), arch["hidden"])
    try:
        model.load_state_dict(load_file(str(weights), device=map_location), strict=True)
    except (RuntimeError, SafetensorError) as exc:
        raise artifact.ArtifactError(f"string model {weights} does not match its metadata: "
                                     f"{exc}") from exc
    return model.to(map_location).eval(), meta


def path_beside(digit_model: Path | str) -> Path:
    """The string model ships beside the digit model: models/digits-strings.safetensors."""
    return Path(digit_model).with_name("digits-strings.safetensors")
