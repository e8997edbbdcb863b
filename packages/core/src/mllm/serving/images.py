"""Images of chat requests: data URLs, files under ``--image-root``, and their limits.

The answer engine reads images from files (and names them by path in its caches), so a
data URL's bytes are written to a private temporary folder under the SHA-256 of the
bytes: the same image sent twice is one file, encoded once. Each file is reference
counted by the requests using it and removed when the last one is answered.

A local path is read only when the server was started with ``--image-root DIR`` and
the path, with symbolic links resolved, lies inside DIR; otherwise any client could
make the server read (and describe) any file it can read. ``http(s)://`` URLs are never
fetched: the server makes no outbound requests.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import os
import re
import shutil
import tempfile
import threading
from pathlib import Path

from mllm.serving.schema import ApiError

_DATA_URL = re.compile(r"^data:(?P<mime>image/[A-Za-z0-9.+-]+)?(?P<params>(;[^,;]*)*?);base64,(?P<data>.*)$", re.DOTALL)


class ImageStore:
    """Turns ``image_url`` values into image files the model reads; see the module docstring.

    Args:
        image_root: the only folder local paths may point into (``None``: no local paths).
        max_image_bytes: largest image file (decoded bytes) accepted.
        max_image_pixels: largest width x height accepted (PIL reads no more than the header to check).
    """

    def __init__(self, *, image_root: Path | None, max_image_bytes: int, max_image_pixels: int) -> None:
        self.image_root = Path(image_root).resolve() if image_root is not None else None
        self.max_image_bytes = max_image_bytes
        self.max_image_pixels = max_image_pixels
        self.folder = Path(tempfile.mkdtemp(prefix="mllm-serve-images-"))
        self._lock = threading.Lock()
        self._users: dict[Path, int] = {}

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    # -- resolving ------------------------------------------------------------------------

    def resolve(self, url: str, param: str) -> tuple[Path, bool]:
        """``(path, owned)``: the file to read, and whether it is a temporary copy to :meth:`release`."""
        if url.startswith("data:"):
            return self._from_data_url(url, param), True
        if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", url) and not url.startswith("file://"):
            raise ApiError(400, f"{param}: image URLs are not fetched (mllm serve makes no outbound requests); "
                                "send the image as a data URL (data:image/png;base64,...)", param=param,
                           code="invalid_image_url")
        return self._from_path(url[len("file://"):] if url.startswith("file://") else url, param), False

    def _from_data_url(self, url: str, param: str) -> Path:
        match = _DATA_URL.match(url)
        if match is None:
            raise ApiError(400, f"{param}: not a base64 data URL; expected data:image/<type>;base64,<data>",
                           param=param, code="invalid_image_url")
        encoded = match.group("data")
        # base64 is 4/3 of the bytes: refuse an oversized image before decoding it
        if len(encoded) * 3 // 4 > self.max_image_bytes + 3:
            raise self._too_big(param, len(encoded) * 3 // 4)
        try:
            data = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise ApiError(400, f"{param}: the data URL's base64 data is malformed", param=param,
                           code="invalid_image_url") from None
        if len(data) > self.max_image_bytes:
            raise self._too_big(param, len(data))
        suffix = self._check_image(io.BytesIO(data), param)
        path = self.folder / f"{hashlib.sha256(data).hexdigest()}{suffix}"
        with self._lock:
            if path not in self._users:
                tmp = path.with_name(f".{path.name}.{threading.get_ident()}")
                tmp.write_bytes(data)
                os.replace(tmp, path)
            self._users[path] = self._users.get(path, 0) + 1
        return path

    def _from_path(self, raw: str, param: str) -> Path:
        if self.image_root is None:
            raise ApiError(400, f"{param}: local image paths are off; start mllm serve with --image-root DIR to "
                                "allow files under DIR, or send the image as a data URL", param=param,
                           code="image_path_not_allowed")
        candidate = Path(raw)
        path = (candidate if candidate.is_absolute() else self.image_root / candidate).resolve()
        if not path.is_relative_to(self.image_root):
            raise ApiError(400, f"{param}: {raw!r} is outside the image root; only files under --image-root are "
                                "read", param=param, code="image_path_not_allowed")
        if not path.is_file():
            raise ApiError(400, f"{param}: no image file {raw!r} under the image root", param=param,
                           code="image_not_found")
        size = path.stat().st_size
        if size > self.max_image_bytes:
            raise self._too_big(param, size)
        with open(path, "rb") as handle:
            self._check_image(handle, param)
        return path

    def _check_image(self, handle: io.IOBase, param: str) -> str:
        """The file suffix of a readable image within the pixel limit (an :class:`ApiError` otherwise)."""
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(handle) as image:  # reads the header only
                width, height = image.size
                kind = (image.format or "img").lower()
        except Image.DecompressionBombError:
            raise ApiError(400, f"{param}: image has more pixels than this server takes (--max-image-pixels "
                                f"{self.max_image_pixels})", param=param, code="image_too_large") from None
        except (UnidentifiedImageError, OSError, ValueError):
            raise ApiError(400, f"{param}: not an image PIL can read", param=param, code="invalid_image") from None
        if width * height > self.max_image_pixels:
            raise ApiError(400, f"{param}: image is {width}x{height} pixels; this server takes at most "
                                f"{self.max_image_pixels} pixels per image (--max-image-pixels)", param=param,
                           code="image_too_large")
        return f".{kind}"

    def _too_big(self, param: str, size: int) -> ApiError:
        return ApiError(400, f"{param}: image is {size} bytes; this server takes at most {self.max_image_bytes} "
                             "bytes per image (--max-image-bytes)", param=param, code="image_too_large")

    # -- releasing ------------------------------------------------------------------------

    def release(self, paths: list[Path]) -> None:
        """A request is done with its temporary images; the last user removes each file."""
        with self._lock:
            for path in paths:
                left = self._users.get(path, 0) - 1
                if left > 0:
                    self._users[path] = left
                else:
                    self._users.pop(path, None)
                    path.unlink(missing_ok=True)
