"""Preference datasets: mllm-dpo's JSON and the Hugging Face / TRL preference format.

``mllm-dpo-json`` reads mllm-dpo's preference files (a JSON list, or JSON Lines)::

    {"id": "...", "image": "COCO_train2014_000000123.jpg", "question": "What is ...?",
     "chosen": "...", "rejected": "...", "ref_win_logp": -12.3, "ref_rej_logp": -15.9}

``id`` is optional (default: the row index); ``image`` is relative to ``image_folder``
(optional: text-only rows have none); ``<image>\\n`` is put before the question unless it
already holds the placeholder. ``ref_win_logp`` / ``ref_rej_logp`` (its "with_logp"
files) become :attr:`Preference.reference_logps`, so the ``dpo`` method uses them instead
of computing the reference.

``hf-preference`` reads TRL's preference format from a JSON / JSON Lines file or a
``datasets`` ``save_to_disk`` folder: ``prompt``, ``chosen``, ``rejected`` and ``images``
(or ``image``). Text columns are strings (standard format) or lists of messages
(conversational format, ``{"role", "content"}``, content a string or a list of
``{"type": "text", "text"}`` / ``{"type": "image"}`` parts; an image part becomes the
``<image>`` placeholder, a system message is put before the first user turn). Images are
paths (relative to ``image_folder``, default the data's folder) or decoded images (written
once as PNG). Optional ``ref_chosen_logps`` / ``ref_rejected_logps`` (TRL's precomputed
names) become the reference log-probs.

Bad rows (a missing or unreadable image, an empty chosen or rejected answer, chosen equal
to rejected, malformed rows) follow the bad-row policy (``on_bad_row``,
``max_bad_fraction``).

```yaml
data: {name: mllm-dpo-json, path: /data/dpo_5k_with_logp.json, image_folder: /data/coco/train2014}
data: {name: hf-preference, path: /data/rlaif-v-subset, split: train}
```
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar, Iterator

from mllm import IMAGE_TOKEN, DataReport, Preference, Turn
from pydantic import Field

from mllm_data._rows import FileDatasetConfig, check_length, image_list, iter_selected, read_rows, resolve_images
from mllm_data.hf import HFDataset, load_hf


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name!r} must be text, got {type(value).__name__}")
    if not value.strip():
        raise ValueError(f"{name!r} is empty")
    return value


def _check_pair(chosen: str, rejected: str) -> None:
    if chosen.strip() == rejected.strip():
        raise ValueError("chosen and rejected are the same answer; a pair needs two different answers")


def _reference(row: dict[str, Any], chosen_key: str, rejected_key: str) -> tuple[float, float] | None:
    if row.get(chosen_key) is None and row.get(rejected_key) is None:
        return None
    values = []
    for key in (chosen_key, rejected_key):
        value = row.get(key)
        if isinstance(value, list) and len(value) == 1:
            value = value[0]
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(float(value)):
            raise ValueError(f"{key!r} must be a finite number (a log-prob), got {value!r}")
        values.append(float(value))
    return values[0], values[1]


def _with_placeholders(text: str, images: int) -> str:
    if images and IMAGE_TOKEN not in text:
        return f"{IMAGE_TOKEN}\n" * images + text
    return text


# -- mllm-dpo ---------------------------------------------------------------------------------------


class MllmDpoJsonConfig(FileDatasetConfig):
    """Options of the ``mllm-dpo-json`` dataset."""

    path: str = Field(description="mllm-dpo preference file: a JSON list or JSON Lines of {image, question, chosen, "
                                  "rejected[, ref_win_logp, ref_rej_logp]}")
    image_folder: str | None = Field(None, description="folder the rows' image names are relative to "
                                                       "(default: the file's folder)")
    use_reference_logps: bool = Field(True, description="use ref_win_logp / ref_rej_logp when a row has them")


class MllmDpoJson:
    """The ``mllm-dpo-json`` dataset (see the module docstring)."""

    record_kind: ClassVar[str] = "preference"

    def __init__(self, config: MllmDpoJsonConfig) -> None:
        self.config = config

    @classmethod
    def data_files(cls, config: MllmDpoJsonConfig) -> list[Path]:
        return [Path(config.path).expanduser()]

    def records(self, report: DataReport) -> Iterator[Preference]:
        config = self.config
        path = Path(config.path).expanduser()
        folder = Path(config.image_folder).expanduser() if config.image_folder else path.parent
        rows = read_rows(path)
        for index, label, row in iter_selected(rows, config.limit, config.seed):
            record = None
            with report.row(file=path, row=label):
                if isinstance(row, Exception):
                    raise row
                if not isinstance(row, dict):
                    raise TypeError(f"a row must be a JSON object, got {type(row).__name__}")
                question = _text(row.get("question"), "question")
                chosen, rejected = _text(row.get("chosen"), "chosen"), _text(row.get("rejected"), "rejected")
                _check_pair(chosen, rejected)
                check_length([question, chosen, rejected], config.max_chars)
                images = resolve_images(image_list(row.get("image")), folder, config.check_images,
                                        image_paths=config.image_paths, report=report)
                reference = _reference(row, "ref_win_logp", "ref_rej_logp") if config.use_reference_logps else None
                metadata = {k: v for k, v in row.items()
                            if k not in ("id", "image", "question", "chosen", "rejected", "ref_win_logp", "ref_rej_logp")}
                record = Preference(id=str(row.get("id", index)),
                                    prompt=(Turn("user", _with_placeholders(question, len(images))),),
                                    chosen=chosen, rejected=rejected, images=images, reference_logps=reference,
                                    metadata=metadata, check_files=False)
            if record is not None:
                yield record


# -- Hugging Face / TRL -----------------------------------------------------------------------------


class HFPreferenceConfig(FileDatasetConfig):
    """Options of the ``hf-preference`` dataset."""

    path: str = Field(description="a JSON / JSON Lines file, or a datasets save_to_disk folder (or cached dataset "
                                  "name), with prompt, chosen, rejected and images columns")
    split: str | None = Field(None, description="split of a DatasetDict or cached dataset")
    image_folder: str | None = Field(None, description="string image paths are relative to it "
                                                       "(default: the file's folder, or path)")
    image_cache: str | None = Field(None, description="where decoded images are written as PNG "
                                                      "(default $MLLM_CACHE/hf-images/<hash>/)")
    use_reference_logps: bool = Field(True, description="use ref_chosen_logps / ref_rejected_logps when present")


def _message_text(content: Any) -> tuple[str, int]:
    """Text of a message content (a string or a list of parts) and its image count."""
    if isinstance(content, str):
        return content, content.count(IMAGE_TOKEN)
    if not isinstance(content, list):
        raise TypeError(f"message content must be text or a list of parts, got {type(content).__name__}")
    texts, images = [], 0
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "image":
            texts.append(IMAGE_TOKEN)
            images += 1
        elif kind == "text":
            texts.append(str(part.get("text", "")))
        else:
            raise ValueError(f"message part {part!r} is neither {{type: text}} nor {{type: image}}")
    return "\n".join(t for t in texts if t), images


def prompt_turns(prompt: Any, images: int) -> tuple[Turn, ...]:
    """TRL's ``prompt`` (a string or a list of messages) as turns ending with a user turn."""
    if isinstance(prompt, str):
        return (Turn("user", _with_placeholders(_text(prompt, "prompt"), images)),)
    if not isinstance(prompt, list) or not prompt:
        raise TypeError("'prompt' must be text or a non-empty list of messages")
    system, turns = [], []
    for index, message in enumerate(prompt):
        if not isinstance(message, dict) or "role" not in message:
            raise TypeError(f"prompt[{index}] is not a {{role, content}} message")
        text, _ = _message_text(message.get("content", ""))
        role = message["role"]
        if role == "system":
            system.append(text)
        elif role in ("user", "assistant"):
            if system and role == "user" and not turns:
                text = "\n".join(system + [text])
                system = []
            turns.append(Turn(role, text))
        else:
            raise ValueError(f"prompt[{index}]: unknown role {role!r}")
    if turns and sum(t.content.count(IMAGE_TOKEN) for t in turns) == 0 and images:
        turns[0] = Turn(turns[0].role, _with_placeholders(turns[0].content, images))
    return tuple(turns)


def completion_text(value: Any, name: str) -> str:
    """TRL's ``chosen`` / ``rejected``: a string, or messages whose last assistant message is the answer."""
    if isinstance(value, list):
        answers = [m for m in value if isinstance(m, dict) and m.get("role") == "assistant"]
        if not answers:
            raise ValueError(f"{name!r} holds no assistant message")
        value, _ = _message_text(answers[-1].get("content", ""))
    return _text(value, name)


class HFPreference(HFDataset):
    """The ``hf-preference`` dataset (see the module docstring)."""

    record_kind: ClassVar[str] = "preference"

    def __init__(self, config: HFPreferenceConfig) -> None:  # noqa: D107 - datasets only for folders
        self.config = config

    @classmethod
    def data_files(cls, config: HFPreferenceConfig) -> list[Path]:
        path = Path(config.path).expanduser()
        return [path] if path.exists() else []

    def _rows(self) -> Iterator[tuple[int, str, Any]]:
        path = Path(self.config.path).expanduser()
        if path.is_file():
            if self.config.image_folder is None:
                self.config = self.config.model_copy(update={"image_folder": str(path.parent)})
            yield from iter_selected(read_rows(path), self.config.limit, self.config.seed)
            return
        data = load_hf(self.config)
        from mllm_data._rows import select_rows

        for index in select_rows(len(data), self.config.limit, self.config.seed):
            yield index, f"row {index}", data[index]

    def records(self, report: DataReport) -> Iterator[Preference]:
        config = self.config
        label_file = Path(config.path).expanduser()
        for index, label, row in self._rows():
            record = None
            with report.row(file=label_file, row=label):
                if isinstance(row, Exception):
                    raise row
                if not isinstance(row, dict):
                    raise TypeError(f"a row must be an object, got {type(row).__name__}")
                for key in ("prompt", "chosen", "rejected"):
                    if key not in row:
                        raise KeyError(f"{key!r} (the row has keys {', '.join(sorted(row))})")
                cell = row.get("images", row.get("image"))
                images = self._image_paths(cell, index, report)
                turns = prompt_turns(row["prompt"], len(images))
                chosen = completion_text(row["chosen"], "chosen")
                rejected = completion_text(row["rejected"], "rejected")
                _check_pair(chosen, rejected)
                check_length([t.content for t in turns] + [chosen, rejected], config.max_chars)
                reference = (_reference(row, "ref_chosen_logps", "ref_rejected_logps")
                             if config.use_reference_logps else None)
                record = Preference(id=str(row.get("id", index)), prompt=turns, chosen=chosen, rejected=rejected,
                                    images=images, reference_logps=reference, check_files=False)
            if record is not None:
                yield record
