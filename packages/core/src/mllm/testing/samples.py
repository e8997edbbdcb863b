"""Small real inputs for checks: PNG images and records of each kind."""

from __future__ import annotations

from pathlib import Path

from mllm.records import IMAGE_TOKEN, Conversation, EvalItem, Preference, Record, RecordKind, Turn

COLOURS = {"red": (220, 30, 30), "green": (30, 180, 60), "blue": (40, 60, 220), "yellow": (230, 220, 40)}


def write_image(path: str | Path, colour: str = "red", size: int = 16) -> Path:
    """Write a ``size`` x ``size`` PNG: a ``colour`` square on a white background."""
    from PIL import Image, ImageDraw

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", (size, size), (255, 255, 255))
    margin = size // 4
    ImageDraw.Draw(image).rectangle([margin, margin, size - margin - 1, size - margin - 1], fill=COLOURS[colour])
    image.save(path)
    return path


def example_records(kind: RecordKind, folder: str | Path, count: int = 2) -> list[Record]:
    """``count`` valid records of ``kind``, each with one image written into ``folder``."""
    colours = list(COLOURS)
    records: list[Record] = []
    for index in range(count):
        colour = colours[index % len(colours)]
        other = colours[(index + 1) % len(colours)]
        image = str(write_image(Path(folder) / f"example-{index}.png", colour))
        question = f"{IMAGE_TOKEN}\nWhat colour is the square?"
        if kind == "conversation":
            records.append(Conversation(id=f"example-{index}", images=(image,),
                                        turns=(Turn("user", question), Turn("assistant", colour))))
        elif kind == "preference":
            records.append(Preference(id=f"example-{index}", images=(image,), prompt=(Turn("user", question),),
                                      chosen=colour, rejected=other))
        elif kind == "eval_item":
            records.append(EvalItem(id=f"example-{index}", prompt=question, images=(image,), answer=colour,
                                    choices=tuple(colours)))
        else:
            raise ValueError(f"unknown record kind {kind!r}; kinds are conversation, preference, eval_item")
    return records
