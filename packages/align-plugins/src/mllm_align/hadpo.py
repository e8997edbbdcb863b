"""HA-DPO (hallucination-aware DPO): its data files and its method.

Dataset ``hadpo`` reads HA-DPO's released files as they are:

- ``desc_data.json``: ``{"<vg image id>": {"chosen": [descriptions...], "rejected":
  [descriptions...]}, ...}``. As HA-DPO's training script does (its ``offline`` sampling,
  seed 42), one chosen and one rejected description are drawn per image, with a prompt
  drawn from its four description prompts (:data:`DESC_PROMPTS`), and the description
  pairs are used twice (``desc_repeat: 2``: HA-DPO's ``pope + desc * 2``).
- ``pope_data.json``: a list of ``{"image_id", "question", "answer", "chosen", "reject",
  "correct"}``; rows with ``correct: true`` are left out (the model already answered
  them right), the others become one pair each.
- Images come from a Visual Genome folder: through its ``image_data.json``
  (``url`` -> ``VG_100K/<id>.jpg`` or ``VG_100K_2/<id>.jpg``) when present, else
  ``<folder>/<id>.jpg`` or either sub-folder.

Bad rows (a missing image, empty or missing answers, chosen equal to rejected) follow the
bad-row policy (``on_bad_row``, ``max_bad_fraction``). Description records keep every
candidate in ``metadata`` (``chosen_options``, ``rejected_options``).

Method ``hadpo`` is the ``dpo`` method (same loss, same speed-ups; a subclass, not a
copy) with HA-DPO's recipe as defaults (LoRA r=128, alpha=256, beta=0.1) and one
addition: with ``resample_each_epoch`` a description pair (and its prompt) is drawn
again for every epoch after the first (seeded by ``seed``, the epoch and the record),
and the reference log-probs of every epoch's draw are precomputed in ``prepare``.

```yaml
- id: hadpo
  kind: train
  method: {name: hadpo}                     # lora r=128 alpha=256, beta 0.1
  data: {name: hadpo, desc_data: .../desc_data.json, pope_data: .../pope_data.json, vg_images: .../VG}
  train: {epochs: 1, lr: 2.0e-6, batch_size: 4, grad_accum: 4}
```
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

from mllm import IMAGE_TOKEN, DataReport, DatasetConfig, Preference, TrainContext, Turn
from pydantic import Field, model_validator

from mllm_align.dpo import DPO, DPOConfig

#: HA-DPO's description prompts (one is drawn per image).
DESC_PROMPTS = (
    "Describe this image in detail.",
    "Take a look at this image and describe what you notice.",
    "Please provide a detailed description of the picture.",
    "Could you describe the contents of this image for me?",
)


# -- data -----------------------------------------------------------------------------------------


class HADPODataConfig(DatasetConfig):
    """Options of the ``hadpo`` dataset."""

    desc_data: str | None = Field(None, description="HA-DPO's desc_data.json ({vg image id: {chosen, rejected}})")
    pope_data: str | None = Field(None, description="HA-DPO's pope_data.json (list of {image_id, question, answer, "
                                                    "chosen, reject, correct})")
    vg_images: str = Field(description="Visual Genome folder (with image_data.json, or VG_100K / VG_100K_2, or "
                                       "<id>.jpg files)")
    seed: int = Field(42, description="seed of the description pair and prompt drawn per image (HA-DPO's: 42)")
    desc_repeat: int = Field(2, ge=1, description="times each description pair is used per epoch (HA-DPO's: 2)")
    check_images: bool = Field(True, description="an image that does not exist is a bad row")

    @model_validator(mode="after")
    def _some_file(self) -> HADPODataConfig:
        if self.desc_data is None and self.pope_data is None:
            raise ValueError("give desc_data, pope_data or both")
        return self


class VGImages:
    """Visual Genome image paths by image id."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder).expanduser()
        self.by_id: dict[int, Path] = {}
        index = self.folder / "image_data.json"
        if index.is_file():
            for entry in json.loads(index.read_text()):
                parts = str(entry.get("url", "")).split("/")
                if "image_id" in entry and len(parts) >= 2:
                    self.by_id[int(entry["image_id"])] = self.folder / parts[-2] / parts[-1]

    def path(self, image_id: Any, check: bool) -> Path:
        try:
            key = int(image_id)
        except (TypeError, ValueError):
            raise ValueError(f"image id {image_id!r} is not a Visual Genome id (an integer)") from None
        candidates = [self.by_id[key]] if key in self.by_id else [
            self.folder / f"{key}.jpg", self.folder / "VG_100K" / f"{key}.jpg", self.folder / "VG_100K_2" / f"{key}.jpg"]
        if not check:
            return candidates[0]
        for candidate in candidates:
            if candidate.is_file():
                return candidate
        raise FileNotFoundError(f"Visual Genome image {key} not found (looked for {', '.join(map(str, candidates))})")


def _answer(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name!r} is missing or empty")
    return value


def _options(entry: Any, name: str) -> list[str]:
    values = entry.get(name) if isinstance(entry, dict) else None
    if not isinstance(values, list) or not values:
        raise ValueError(f"{name!r} must be a non-empty list of descriptions")
    return [_answer(v, f"{name}[{i}]") for i, v in enumerate(values)]


def desc_prompt(text: str) -> tuple[Turn, ...]:
    return (Turn("user", f"{IMAGE_TOKEN}\n{text}"),)


class HADPOData:
    """The ``hadpo`` dataset (see the module docstring)."""

    record_kind: ClassVar[str] = "preference"

    def __init__(self, config: HADPODataConfig) -> None:
        self.config = config

    @classmethod
    def data_files(cls, config: HADPODataConfig) -> list[Path]:
        files = [Path(p).expanduser() for p in (config.desc_data, config.pope_data) if p]
        index = Path(config.vg_images).expanduser() / "image_data.json"
        return files + ([index] if index.is_file() else [])

    def records(self, report: DataReport) -> Iterator[Preference]:
        images = VGImages(Path(self.config.vg_images))
        if self.config.pope_data:
            yield from self._pope(Path(self.config.pope_data).expanduser(), images, report)
        if self.config.desc_data:
            desc = list(self._desc(Path(self.config.desc_data).expanduser(), images, report))
            for repeat in range(self.config.desc_repeat):
                for record in desc:
                    yield record if repeat == 0 else Preference(
                        id=f"{record.id}#{repeat}", prompt=record.prompt, chosen=record.chosen,
                        rejected=record.rejected, images=record.images, metadata=record.metadata, check_files=False)

    def _pope(self, path: Path, images: VGImages, report: DataReport) -> Iterator[Preference]:
        rows = json.loads(path.read_text())
        if not isinstance(rows, list):
            raise ValueError(f"{path}: pope_data.json is a list of rows, got a {type(rows).__name__}")
        for index, row in enumerate(rows):
            if isinstance(row, dict) and row.get("correct") is True:
                continue  # answered right already: HA-DPO leaves it out
            record = None
            with report.row(file=path, row=f"row {index}"):
                if not isinstance(row, dict):
                    raise TypeError(f"a row must be an object, got {type(row).__name__}")
                question = _answer(row.get("question"), "question")
                chosen, rejected = _answer(row.get("chosen"), "chosen"), _answer(row.get("reject"), "reject")
                if chosen.strip() == rejected.strip():
                    raise ValueError("chosen and reject are the same answer")
                image = images.path(row.get("image_id"), self.config.check_images)
                record = Preference(id=f"pope-{index}", prompt=(Turn("user", f"{IMAGE_TOKEN}\n{question}"),),
                                    chosen=chosen, rejected=rejected, images=(str(image),),
                                    metadata={"image_id": row.get("image_id"), "answer": row.get("answer"),
                                              "hadpo": "pope"}, check_files=False)
            if record is not None:
                yield record

    def _desc(self, path: Path, images: VGImages, report: DataReport) -> Iterator[Preference]:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ValueError(f"{path}: desc_data.json maps Visual Genome image ids to {{chosen, rejected}}, "
                             f"got a {type(data).__name__}")
        rng = random.Random(self.config.seed)
        for image_id, entry in data.items():
            record = None
            with report.row(file=path, row=f"image {image_id}"):
                chosen_options, rejected_options = _options(entry, "chosen"), _options(entry, "rejected")
                # HA-DPO's offline sampling: one chosen, one rejected, then the prompt, in this order
                chosen, rejected = rng.choice(chosen_options), rng.choice(rejected_options)
                prompt = rng.choice(DESC_PROMPTS)
                if chosen.strip() == rejected.strip():
                    raise ValueError("the drawn chosen and rejected descriptions are the same text")
                image = images.path(image_id, self.config.check_images)
                record = Preference(id=f"desc-{image_id}", prompt=desc_prompt(prompt), chosen=chosen,
                                    rejected=rejected, images=(str(image),),
                                    metadata={"image_id": image_id, "hadpo": "desc",
                                              "chosen_options": chosen_options, "rejected_options": rejected_options},
                                    check_files=False)
            if record is not None:
                yield record


# -- method ---------------------------------------------------------------------------------------


class HADPOConfig(DPOConfig):
    """The ``dpo`` options with HA-DPO's recipe as defaults."""

    lora: bool = Field(True, description="HA-DPO trains LoRA adapters on LLaVA-1.5")
    lora_r: int = Field(128, ge=1, description="LoRA rank (HA-DPO: 128)")
    lora_alpha: int = Field(256, ge=1, description="LoRA alpha (HA-DPO: 256)")
    beta: float = Field(0.1, gt=0, description="DPO beta (HA-DPO: 0.1)")
    resample_each_epoch: bool = Field(True, description="draw a new description pair and prompt per image for "
                                                        "every epoch after the first")
    seed: int = Field(42, description="seed of the per-epoch draws")


class HADPO(DPO):
    """HA-DPO: the ``dpo`` loss and speed-ups, description pairs drawn again each epoch."""

    def __init__(self, config: HADPOConfig | None = None) -> None:
        super().__init__(config or HADPOConfig())
        self.epoch = 0
        self.epochs = 1

    def resolve(self, record: Preference, epoch: int | None = None) -> Preference:
        """The pair a description record stands for in ``epoch`` (default: the current one)."""
        epoch = self.epoch if epoch is None else epoch
        metadata = record.metadata or {}
        if epoch == 0 or not self.config.resample_each_epoch or "chosen_options" not in metadata:
            return record
        rng = random.Random(f"{self.config.seed}:{epoch}:{record.id}")
        chosen = rng.choice(metadata["chosen_options"])
        rejected_options = [r for r in metadata["rejected_options"] if r.strip() != chosen.strip()]
        rejected = rng.choice(rejected_options or metadata["rejected_options"])
        return Preference(id=record.id, prompt=desc_prompt(rng.choice(DESC_PROMPTS)), chosen=chosen,
                          rejected=rejected, images=record.images, metadata=metadata, check_files=False)

    def reference_records(self, records: Sequence[Preference]) -> list[Preference]:
        return [self.resolve(r, epoch) for epoch in range(self.epochs) for r in records]

    def prepare(self, context: TrainContext) -> None:
        """Precompute the reference log-probs of every epoch's draw."""
        records, train = context.records, context.train
        if records:
            if train.max_steps and train.max_steps > 0:
                samples = train.max_steps * train.batch_size * train.grad_accum
                self.epochs = max(1, math.ceil(samples / len(records)))
            else:
                self.epochs = max(1, math.ceil(train.epochs))
        super().prepare(context)

    def callbacks(self) -> list[Any]:
        """Tracks the epoch so that ``collate`` draws that epoch's pairs."""
        from transformers import TrainerCallback

        method = self

        class EpochCallback(TrainerCallback):
            def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                method.epoch = int(math.floor((state.epoch or 0.0) + 1e-6))

        return [EpochCallback()]
