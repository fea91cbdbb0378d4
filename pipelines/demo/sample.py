"""Build the demo's LLaVA-format sample from photos that ship inside scikit-image and scikit-learn.

Writes `images/*.jpg` and `llava_en.json` under an output folder: one caption
record per photo (LLaVA-Pretrain style), question/answer records (some
multi-turn), and multi-image comparisons. No network is needed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

# name -> (caption, [(question, answer), ...])
PHOTOS: dict[str, tuple[str, list[tuple[str, str]]]] = {
    "astronaut": ("An astronaut in a white spacesuit smiling in front of an American flag.",
                  [("Who is in the picture?", "An astronaut wearing a white spacesuit."),
                   ("What flag is behind the person?", "The flag of the United States.")]),
    "chelsea": ("A ginger tabby cat looking to the side against a plain background.",
                [("What animal is this?", "It is a cat with orange and white fur."),
                 ("Is the cat looking at the camera?", "No, the cat is looking to the side.")]),
    "coffee": ("A cup of coffee on a saucer with a spoon, seen from above.",
               [("What drink is shown?", "A cup of coffee."), ("What is next to the cup?", "A small spoon on the saucer.")]),
    "rocket": ("A rocket standing on its launch pad under a clear blue sky.",
               [("What is on the launch pad?", "A rocket ready for launch."), ("What is the weather like?", "Clear, with a blue sky.")]),
    "camera": ("A black and white photo of a man operating a camera on a tripod.",
               [("What is the man doing?", "He is looking through a camera mounted on a tripod."),
                ("Is the photo in color?", "No, it is black and white.")]),
    "coins": ("Many old coins arranged in rows on a dark background.",
              [("What objects are shown?", "Coins, arranged in several rows."), ("Are the coins all the same size?", "No, they differ slightly in size.")]),
    "hubble_deep_field": ("A deep space image full of distant galaxies of many colors.",
                          [("What does this image show?", "Thousands of distant galaxies seen by a space telescope."),
                           ("Is this taken on Earth?", "No, it is a view of deep space.")]),
    "moon": ("A grey close-up of the surface of the moon with craters.",
             [("What surface is this?", "The surface of the moon."), ("What marks the surface?", "Many round craters.")]),
    "page": ("A scanned page of printed text with uneven lighting.",
             [("What kind of document is this?", "A page of printed text that was scanned.")]),
    "text": ("White handwritten and printed words on a dark background.",
             [("Is there writing in the image?", "Yes, there are several words written on it.")]),
    "retina": ("A photo of the back of a human eye showing red blood vessels.",
               [("What body part is shown?", "The retina at the back of an eye."), ("What color dominates?", "Orange and red.")]),
    "horse": ("A black silhouette of a running horse on a white background.",
              [("What animal is shown?", "A horse, drawn as a black silhouette."), ("Is the horse standing still?", "No, it is running.")]),
    "motorcycle_left": ("A red motorcycle parked indoors next to shelves and boxes.",
                        [("What vehicle is this?", "A motorcycle."), ("Where is it parked?", "Inside a room or garage.")]),
    "brick": ("A grey brick wall with regular rows of bricks.",
              [("What is the wall made of?", "Bricks laid in regular rows.")]),
    "grass": ("A close-up of green grass blades.",
              [("What plant is shown?", "Grass."), ("How close is the view?", "Very close; single blades are visible.")]),
    "gravel": ("Small grey stones of gravel covering the ground.",
               [("What covers the ground?", "Gravel made of many small stones.")]),
    "immunohistochemistry": ("A microscope image of tissue stained brown and blue.",
            [("What kind of image is this?", "A stained tissue sample seen under a microscope.")]),
    "cell": ("A grey microscope image of a single cell.",
             [("What is shown?", "A cell seen through a microscope.")]),
    "logo": ("The scikit-image logo with a snake drawn in colored blocks.",
             [("Is this a photo or a logo?", "It is a logo.")]),
    "china": ("An old Chinese temple with a curved roof surrounded by trees.",
              [("What building is this?", "A traditional Chinese temple."), ("What surrounds the building?", "Green trees.")]),
    "flower": ("A pink flower in full bloom seen up close.",
               [("What is in the picture?", "A flower with pink petals."), ("Is the flower open?", "Yes, it is in full bloom.")]),
}
COMPARE = [
    ("chelsea", "horse", "Which of the two images shows a cat?", "The first image shows a cat; the second shows a horse."),
    ("coffee", "moon", "Are both of these images taken in space?", "No. The first shows a cup of coffee; only the second shows the moon."),
    ("rocket", "astronaut", "What do these two images have in common?", "Both are about space flight: a rocket and an astronaut."),
    ("china", "flower", "Which image has a building in it?", "The first image, which shows a Chinese temple."),
    ("coins", "gravel", "Describe the difference between the two images.", "The first shows coins in rows; the second shows loose gravel stones."),
]
ASK_CAPTION = ["Describe the image briefly.", "What is in this picture?", "Give a short caption for this image.",
               "Summarize the visual content of the image."]


def load_photo(name: str) -> Image.Image:
    if name in ("china", "flower"):
        from sklearn.datasets import load_sample_image

        return Image.fromarray(load_sample_image(f"{name}.jpg"))
    from skimage import data

    arr = data.stereo_motorcycle()[0] if name == "motorcycle_left" else getattr(data, name)()
    if arr.dtype != np.uint8:
        arr = (arr.astype(np.float64) / max(1, arr.max()) * 255).astype(np.uint8)
    return Image.fromarray(arr).convert("RGB")


def build(out: Path, max_side: int = 384) -> Path:
    """Write the images and `llava_en.json`; returns the JSON path."""
    img_dir = out / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    records = []
    for i, (name, (caption, qa)) in enumerate(PHOTOS.items()):
        im = load_photo(name)
        im.thumbnail((max_side, max_side))
        im.save(img_dir / f"{name}.jpg", quality=90)
        rel = f"images/{name}.jpg"
        records.append({"id": f"cap-{name}", "image": rel, "conversations": [
            {"from": "human", "value": f"<image>\n{ASK_CAPTION[i % len(ASK_CAPTION)]}" if i % 2 else f"{ASK_CAPTION[i % len(ASK_CAPTION)]}\n<image>"},
            {"from": "gpt", "value": caption}]})
        turns = []
        for j, (q, a) in enumerate(qa):
            turns += [{"from": "human", "value": f"<image>\n{q}" if j == 0 else q}, {"from": "gpt", "value": a}]
        records.append({"id": f"qa-{name}", "image": rel, "conversations": turns})
    for a, b, q, ans in COMPARE:
        records.append({"id": f"cmp-{a}-{b}", "image": [f"images/{a}.jpg", f"images/{b}.jpg"], "conversations": [
            {"from": "human", "value": f"Image 1: <image>\nImage 2: <image>\n{q}"}, {"from": "gpt", "value": ans}]})
    path = out / "llava_en.json"
    path.write_text(json.dumps(records, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return path


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("out", type=Path)
    print(build(ap.parse_args().out))
