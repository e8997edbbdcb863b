"""Small example files the components' ``example_config`` writes (PIL only)."""

from __future__ import annotations

import json
from pathlib import Path

COLOURS = {"red": (220, 30, 30), "blue": (40, 60, 220)}


def write_rows(folder: Path, name: str, rows: list[dict]) -> Path:
    for colour, rgb in COLOURS.items():
        from PIL import Image

        Image.new("RGB", (16, 16), rgb).save(folder / f"{colour}.png")
    path = folder / name
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path
