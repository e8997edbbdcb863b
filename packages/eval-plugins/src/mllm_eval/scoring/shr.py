"""SHR, HA-DPO's sentence-level hallucination ratio, as HA-DPO computes it.

Protocol ``hadpo`` (opendatalab/HA-DPO @ abdc44b3, ``ha_dpo/shr_eval/shr_utils.py``,
``gpt_utils.py`` and ``json_eval.py``), the only one:

* a description is split on ``"."`` only; each piece is stripped, and a piece equal to
  or contained in an earlier kept sentence is dropped (a repeat), as are empty pieces;
* the judge sees the image's Visual Genome regions as ``[x1, y1, x2, y2]: phrase`` with
  the box *normalised by the image size* and each coordinate rounded to 2 decimals
  (``float('%.2f' % v)``), the factual notes one a line, and the numbered sentences;
* a reply is read from the first line holding ``"Judgement:"``: every later non-empty
  line loses its first word (the number), and the text before its first ``":"``,
  lowercased, is the verdict. When the number of verdicts differs from the number of
  sentences, the image's sentences get no verdict (they still count in the per-image
  figures, not in the ratios, exactly as HA-DPO);
* metrics, each rounded to 3 decimals: ``sents_per_image``, ``words_per_image`` (words =
  a sentence with its ``"."`` split on single spaces), ``hal_sents_per_image``,
  ``hal_words_per_image``, ``hal_sents_ratio`` and ``hal_words_ratio`` (over sentences
  whose verdict is hallucination, correct or cannot judge), ``gram-N-repetition`` (the
  share of distinct N-grams, N = 1..4, after removing ``. : ? ,`` and newlines, averaged
  over every image) and ``mean_hal_ratio`` (``hal_sents_ratio`` averaged over judge runs;
  one run here). ``shr`` is ``mean_hal_ratio`` in percent, the figure HA-DPO publishes.

Where HA-DPO would fail, this module does not: a reply without ``"Judgement:"`` is an
image without verdicts (HA-DPO asks until the reply holds ``"Judgement"`` and then raises
IndexError when the colon is missing), a ratio over no sentences is 0.0 and a
description shorter than N words has an N-gram repetition of 0.0 (HA-DPO divides by zero).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

PROTOCOLS = ("hadpo",)
VERDICTS = ("hallucination", "correct", "cannot judge")
JUDGEMENT_MARK = "Judgement:"

# HA-DPO's GPT_JUDGE_PROMPT, blank first line and trailing spaces included (the judge sees exactly this)
JUDGE_PROMPT = (
    "\n"
    "Please help me judge if the comment of this image is hallucination or correct. \n"
    "I will give you a list of region description of a image. The format is [x1, y1, x2, y2]: region description, "
    "where [x1, y1, x2, y2] is the bounding box of the region. Highly overlapping bounding boxes may refer to the "
    "same object. This is the ground truth information of the image. Besides, I give you some factual information "
    "about the content of the image (which is 100% accurate). Your judgement should base on this information. "
    "However, this information only descibe the objects in the region of image, so it cannot descibe the subjective "
    "part of the image, e.g., atmosphere, style, emotion. In that case, you can return \"Cannot judge\".\n"
    "Also, I will give you a list of comments of the image for you to judge if it is hallucination. Please give a "
    "judgement one by one along with the reason.\n"
    "\n"
    "Your output should be:\n"
    "Judgement:\n"
    "1. hallucination or correct or cannot judge: <reason>\n"
    "2. ...\n"
    "\n"
    "Here are the region descriptions of the image:\n"
    "{regions}\n"
    "\n"
    "Factual Information:\n"
    "{factual}\n"
    "\n"
    "Here is the comment for you to judge (hallucination, correct, or cannot judge): \n"
    "{comments}\n"
)


def split_sentences(text: str) -> list[str]:
    """HA-DPO's sentences of a description: split on ``"."``, stripped, repeats and
    substrings of earlier sentences dropped (without the final ``"."``)."""
    kept: list[str] = []
    for piece in text.split("."):
        sentence = piece.strip()
        if not sentence or any(sentence in earlier for earlier in kept):
            continue  # `sentence in earlier` covers an exact repeat too
        kept.append(sentence)
    return kept


def has_repeats(text: str) -> bool:
    """Whether splitting dropped a repeated (or contained) sentence (HA-DPO's ``is_repeated``)."""
    pieces = [p.strip() for p in text.split(".") if p.strip()]
    return len(pieces) != len(split_sentences(text))


def numbered(sentences: Sequence[str]) -> str:
    """``1. first\\n2. second\\n`` (the comments block of the judge prompt)."""
    return "".join(f"{i}. {s}\n" for i, s in enumerate(sentences, 1))


def _box_value(region: Mapping[str, object], long: str, short: str) -> float:
    return float(region[long] if long in region else region[short])  # type: ignore[arg-type]


def format_regions(regions: Iterable[Mapping[str, object]], width: float, height: float) -> str:
    """Regions ``{x, y, width, height, phrase}`` (or ``w``/``h``) as HA-DPO's normalised
    ``[x1, y1, x2, y2]: phrase`` lines; regions without a phrase are left out."""
    lines = []
    for r in regions:
        x, y = float(r["x"]), float(r["y"])  # type: ignore[arg-type]
        w, h = _box_value(r, "width", "w"), _box_value(r, "height", "h")
        box = [float(f"{v:.2f}") for v in (x / width, y / height, (x + w) / width, (y + h) / height)]
        if r.get("phrase"):
            lines.append(f"{box}: {r['phrase']}\n")
    return "".join(lines)


def judge_prompt(regions: Sequence[Mapping[str, object]], factual: Sequence[str], description: str,
                 width: float, height: float) -> str:
    """The prompt HA-DPO sends its judge for one image."""
    return JUDGE_PROMPT.format(regions=format_regions(regions, width, height),
                               factual="".join(f"{text}\n" for text in factual),
                               comments=numbered(split_sentences(description)))


def parse_judgement(text: str, n_sentences: int) -> list[str] | None:
    """The verdict of each sentence (lowercased text before its ``":"``), or ``None`` when
    the reply has no ``"Judgement:"`` line or not one verdict per sentence."""
    lines = [line for line in text.split("\n") if len(line) > 0]
    marks = [i for i, line in enumerate(lines) if JUDGEMENT_MARK in line]
    if not marks:
        return None
    verdicts = [" ".join(line.split(" ")[1:]).strip() for line in lines[marks[0] + 1:]]
    verdicts = [v for v in verdicts if len(v) > 0]
    if len(verdicts) != n_sentences:
        return None
    return [v.split(":")[0].lower() for v in verdicts]


def repetition(text: str, n: int) -> float:
    """HA-DPO's ``cal_repetition``: distinct n-grams / n-grams of the cleaned description (0.0 without any)."""
    for mark in (".", ":", "\n", "?", ","):
        text = text.replace(mark, "")
    words = text.split()
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


@dataclass(frozen=True)
class Judged:
    """One image: its description and the verdict of each of its sentences (``None`` = no verdict)."""

    description: str
    verdicts: list[str] | None  # None: the reply did not give one verdict per sentence
    judged: bool = True  # False: the image was never judged (only repetition is computed)


def _words(sentence: str) -> int:
    return len(f"{sentence}.".split(" "))


def summarize(images: Sequence[Judged]) -> dict[str, float]:
    """HA-DPO's metrics (``get_metric`` plus repetition and ``mean_hal_ratio``) of the images."""
    judged = [im for im in images if im.judged]
    metrics: dict[str, float] = {"num_images": float(len(judged))}
    sents = words = hal_sents = hal_words = rated_sents = rated_words = 0
    unparsed = 0
    for im in judged:
        sentences = split_sentences(im.description)
        unparsed += im.verdicts is None
        verdicts: Sequence[str | None] = im.verdicts if im.verdicts is not None else [None] * len(sentences)
        for sentence, verdict in zip(sentences, verdicts, strict=True):
            count = _words(sentence)
            sents += 1
            words += count
            if verdict not in VERDICTS:
                continue
            rated_sents += 1
            rated_words += count
            if verdict == "hallucination":
                hal_sents += 1
                hal_words += count
    n = len(judged)
    metrics["sents_per_image"] = round(sents / n, 3) if n else 0.0
    metrics["words_per_image"] = round(words / n, 3) if n else 0.0
    metrics["hal_sents_per_image"] = round(hal_sents / n, 3) if n else 0.0
    metrics["hal_words_per_image"] = round(hal_words / n, 3) if n else 0.0
    metrics["hal_sents_ratio"] = round(hal_sents / rated_sents, 3) if rated_sents else 0.0
    metrics["hal_words_ratio"] = round(hal_words / rated_words, 3) if rated_words else 0.0
    for gram in range(1, 5):
        total = sum(repetition(im.description, gram) for im in images)
        metrics[f"gram-{gram}-repetition"] = round(total / len(images), 3) if images else 0.0
    metrics["mean_hal_ratio"] = round(metrics["hal_sents_ratio"], 3)  # one judge run
    metrics["shr"] = round(100 * metrics["mean_hal_ratio"], 1)
    metrics["hallucinated_sentences"] = float(hal_sents)
    metrics["sentences"] = float(sents)
    metrics["repeated_images"] = float(sum(has_repeats(im.description) for im in images))
    metrics["unparsed"] = float(unparsed)
    return metrics
