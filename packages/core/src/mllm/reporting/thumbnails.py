"""Small embedded copies of benchmark images, so report.html opens anywhere and stays small.

Each image is shrunk to fit ``size`` pixels and stored as whichever of PNG and JPEG is
smaller (flat synthetic images compress best as PNG, photos as JPEG), as a ``data:``
URL. One image shown for several questions is encoded once.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path


class Thumbnails:
    """``data:`` URLs of shrunk images, memoised by path; ``None`` for an unreadable file."""

    def __init__(self, size: int = 72) -> None:
        self.size = size
        self._urls: dict[str, str | None] = {}

    def url(self, path: str | Path) -> str | None:
        key = str(path)
        if key not in self._urls:
            self._urls[key] = self._encode(Path(path))
        return self._urls[key]

    def _encode(self, path: Path) -> str | None:
        from PIL import Image

        try:
            with Image.open(path) as opened:
                image = opened.convert("RGB")
        except (OSError, ValueError):
            return None
        image.thumbnail((self.size, self.size))
        encoded = []
        for kind, options in (("png", {"optimize": True}), ("jpeg", {"quality": 80})):
            buffer = io.BytesIO()
            image.save(buffer, kind.upper(), **options)
            encoded.append((len(buffer.getvalue()), kind, buffer.getvalue()))
        _, kind, data = min(encoded)
        return f"data:image/{kind};base64,{base64.b64encode(data).decode('ascii')}"
