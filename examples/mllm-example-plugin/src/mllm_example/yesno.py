"""``yes-no``: yes/no questions from a JSON Lines file; accuracy and yes-ratio.

One JSON object a line: ``{"id": "q1", "image": "cat.png", "question": "Is it red?", "answer": "yes"}``.
Answers are scored from one forward pass over the closed set (``answer_mode: choice``)
or generated; a generated answer counts as "no" when it contains the word no or not
(POPE's rule), else "yes".
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import ClassVar, Literal, Sequence

from mllm import IMAGE_TOKEN, ComponentConfig, EvalItem
from pydantic import Field


def to_yes_no(text: str) -> str:
    words = re.findall(r"[a-z]+", text.lower())
    return "no" if "no" in words or "not" in words else "yes"


class YesNoConfig(ComponentConfig):
    """Options of ``yes-no``."""

    path: str = Field(description="JSON Lines file: id, image (optional), question, answer (yes/no)")
    image_folder: str | None = Field(None, description="folder the image names are relative to (default: the file's)")
    answer_mode: Literal["generate", "choice"] = Field("choice", description="choice: pick yes/no from one forward pass")
    max_new_tokens: int = Field(4, ge=1)


class YesNo:
    """Accuracy and yes-ratio of yes/no answers."""

    metric_keys: ClassVar[tuple[str, ...]] = ("accuracy", "yes_ratio")

    def __init__(self, config: YesNoConfig) -> None:
        self.config = config
        self.answer_mode = config.answer_mode
        self.max_new_tokens = config.max_new_tokens

    @classmethod
    def data_files(cls, config: YesNoConfig) -> list[Path]:
        return [Path(config.path)]

    @classmethod
    def example_config(cls, tmp_path: Path) -> dict:
        from mllm_example._files import write_rows

        rows = [{"id": f"q{i}", "image": f"{c}.png", "question": "Is the image red?", "answer": a}
                for i, (c, a) in enumerate((("red", "yes"), ("blue", "no")))]
        return {"path": str(write_rows(tmp_path, "yesno.jsonl", rows))}

    def items(self) -> list[EvalItem]:
        path = Path(self.config.path)
        folder = Path(self.config.image_folder) if self.config.image_folder else path.parent
        items = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            row = json.loads(line)
            if row.get("answer") not in ("yes", "no"):
                raise ValueError(f"{path}, row {number}: answer must be yes or no, got {row.get('answer')!r}")
            images = (str(folder / row["image"]),) if row.get("image") else ()
            prompt = f"{IMAGE_TOKEN}\n{row['question']}" if images else row["question"]
            items.append(EvalItem(id=str(row.get("id", number)), prompt=prompt, images=images,
                                  answer=row["answer"], choices=("yes", "no")))
        return items

    def score(self, items: Sequence[EvalItem], answers: dict[str, str]) -> dict[str, float]:
        predicted = [to_yes_no(answers[item.id]) for item in items]
        gold = [item.answer for item in items]
        n = max(len(items), 1)
        return {"accuracy": sum(p == g for p, g in zip(predicted, gold)) / n,
                "yes_ratio": predicted.count("yes") / n}
