"""Images for shards: safe path resolution, full decode check, optional downscale.

`load_image(root, rel, size)` returns the bytes stored in a shard row. Without
`size` they are the file's own bytes (byte-identical round trip). With `size`,
an image whose short side is larger than `size` is resized (Lanczos) so the
short side is exactly `size` and re-encoded by `encode_resized`: JPEG quality 95
for images without transparency, PNG otherwise. Smaller images are stored as
they are: upscaling would add bytes and no information, and the trainer's image
processor resizes anyway.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

from PIL import Image

from .records import BadRecord
from .staging import MAX_PATH_BYTES, path_problem

Image.MAX_IMAGE_PIXELS = 20_000 * 20_000  # PIL's own bomb guard; our budget below is checked first
MAX_PIXELS = 64_000_000  # default budget per image (8000 x 8000): decoding costs up to ~4 bytes per pixel


def resolve_path(root: Path, rel: str) -> Path:
    """`rel` under `root`; a path that escapes the root (.., absolute, symlink) is refused, and so is any string
    no filesystem takes as a path (NUL bytes, lone surrogates, over PATH_MAX, a loop of symlinks)."""
    problem = path_problem(rel, MAX_PATH_BYTES)
    if problem:
        raise BadRecord("bad_image_path", f"image path {rel[:80]!r} {problem}")
    root = root.resolve()
    try:
        path = (root / rel).resolve()
    except (OSError, RuntimeError, ValueError) as e:  # symlink loops, ENAMETOOLONG in a component
        raise BadRecord("bad_image_path", f"image path {rel[:80]!r} cannot be resolved: {e}") from None
    if not path.is_relative_to(root):
        raise BadRecord("image_outside_root", f"image {rel!r} resolves outside --image-root {root}")
    return path


def load_image(root: Path, rel: str, size: int | None = None, max_pixels: int = MAX_PIXELS) -> bytes:
    """Verified image bytes for one placeholder (see module doc for the resize rule).

    The pixel count is read from the header and checked against `max_pixels` before anything is decoded,
    so memory per decode stays under ~4 x max_pixels bytes whatever the file claims."""
    path = resolve_path(root, rel)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise BadRecord("missing_image", f"image {rel!r} not found under the image root") from None
    except (IsADirectoryError, PermissionError, OSError) as e:
        raise BadRecord("missing_image", f"image {rel!r} cannot be read: {e.strerror or e}") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                w, h = im.size
                if w * h > max_pixels:
                    raise BadRecord("image_too_large", f"image {rel!r} is {w} x {h} = {w * h / 1e6:.0f} MP, over the "
                                                       f"{max_pixels / 1e6:.0f} MP budget (--max-image-pixels)")
                im.load()  # full decode: truncated files fail here, not in the trainer
                if size is None or min(im.size) <= size:
                    return data
                return encode_resized(im, size)
    except BadRecord:
        raise
    except Exception as e:  # PIL raises many types for bad files
        raise BadRecord("corrupt_image", f"image {rel!r} cannot be decoded: {type(e).__name__}: {e}") from None


def encode_resized(im: Image.Image, size: int) -> bytes:
    """Resize so the short side is `size` and encode (JPEG q95, PNG when there is transparency)."""
    w, h = im.size
    scale = size / min(w, h)
    new = (max(1, round(w * scale)), max(1, round(h * scale)))
    alpha = im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)
    im = im.convert("RGBA" if alpha else "RGB").resize(new, Image.LANCZOS)
    buf = io.BytesIO()
    if alpha:
        im.save(buf, format="PNG", optimize=False)
    else:
        im.save(buf, format="JPEG", quality=95)
    return buf.getvalue()

