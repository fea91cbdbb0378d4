"""Chat messages and images as the user gives them: roles, `<image>` placeholders, image files.

No torch here: `lmmtrain chat` checks its arguments with these before the model loads,
so a wrong path or a placeholder count that does not match answers at once.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

from lmmdata.records import IMAGE
from lmmdata.template import ROLE


class ChatError(ValueError):
    """Messages and images do not fit together, or the checkpoint cannot chat."""


def with_placeholders(text: str, n_images: int) -> str:
    """A user turn with one `<image>` per attached image: as it is when it has placeholders, else images first,
    each as `<image>` + newline (how a list-of-parts message with image parts first renders)."""
    return text if IMAGE in text or not n_images else (IMAGE + "\n") * n_images + text


def check_image(path: str) -> None:
    """`path` is an image file PIL can read (header only: cheap)."""
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    if not p.is_file():
        raise ChatError(f"image {path}: no such file")
    try:
        with Image.open(p) as im:
            im.size  # noqa: B018  (the header is parsed)
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise ChatError(f"image {path} cannot be read: {e}") from None


def check_turn(text: str, n_images: int) -> None:
    """A user turn either has no `<image>` placeholder (images go first) or one per attached image."""
    n = text.count(IMAGE)
    if n and n != n_images:
        raise ChatError(f"{n} {IMAGE} placeholder(s) in {text[:60]!r} but {n_images} image(s) attached to it")


def check_script(prompts: Sequence[str], images: Sequence[str]) -> None:
    """Scripted chat (`-i`/`-p`): every image readable and every turn's placeholders matching its images,
    checked before the model loads. Prompts may hold the loop's commands (`/image PATH`, `/reset`, `/quit`)."""
    pending = len(images)
    for path in images:
        check_image(path)
    for text in prompts:
        command = text.strip()
        if command in ("/quit", "/exit"):
            return
        if command == "/reset":
            pending = 0
        elif text.startswith("/image "):
            check_image(text.split(None, 1)[1].strip())
            pending += 1
        else:
            check_turn(text, pending)
            pending = 0


def as_pil(image):
    """An RGB PIL image from a PIL image, encoded bytes or a file path."""
    from PIL import Image

    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, (bytes, bytearray)):
        return Image.open(io.BytesIO(image)).convert("RGB")
    check_image(str(image))
    try:
        return Image.open(image).convert("RGB")
    except OSError as e:
        raise ChatError(f"image {image} cannot be read: {e}") from None


def normalise(messages: Sequence[dict], n_images: int) -> list[dict]:
    """Messages as {role, content} with roles system/user/assistant and one placeholder per image.

    When no message has a placeholder, the images go before the text of the last user turn (`with_placeholders`).
    """
    out = []
    for i, m in enumerate(messages):
        role = ROLE.get(m.get("role", m.get("from", "")))
        if role is None:
            raise ChatError(f"message {i}: unknown role {m.get('role', m.get('from'))!r} (system, user, assistant)")
        out.append({"role": role, "content": str(m.get("content", m.get("value", "")))})
    if not out or out[-1]["role"] != "user":
        raise ChatError("the last message must be from the user")
    placeholders = sum(m["content"].count(IMAGE) for m in out)
    if placeholders == 0 and n_images:
        out[-1]["content"] = with_placeholders(out[-1]["content"], n_images)
    elif placeholders != n_images:
        raise ChatError(f"{placeholders} {IMAGE} placeholder(s) in the messages but {n_images} image(s) given")
    return out
