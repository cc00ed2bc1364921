"""Read the model's metadata without torch (the API shows the model version)."""

from __future__ import annotations

import json
from pathlib import Path


def version_label(meta: dict) -> str:
    """How jobs and predictions name the model: `name@version`."""
    return f"{meta.get('name', 'model')}@{meta.get('version', '?')}"


def model_version(weights: Path) -> str | None:
    try:
        meta = json.loads(Path(weights).with_suffix(".json").read_text())
    except (OSError, ValueError):
        return None
    return version_label(meta)
