"""DPO on a tiny Idefics3: loss and reward metrics equal TRL's DPOTrainer on the same model and batch.

As the core's LLaVA check (packages/align-plugins/tests/test_dpo.py): TRL is built with the
family's processor and its dataset; its ``compute_loss`` gets our token layout (prompt +
completion, ``completion_mask`` = our labels) and the images given twice (its vision
collator's layout). LoRA, so TRL's reference is the model with adapters disabled, as ours.

``test_dpo_equals_trl_through_its_own_data_path`` (Idefics3 and LLaVA-NeXT) lets TRL do the data
side too: its dataset, chat template, processor and collator; the ids, pixel values, loss and
metrics equal ours (see its docstring for the one convention that differs)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")
trl = pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")

from mllm.records import Preference, Turn  # noqa: E402
from mllm.testing import write_image  # noqa: E402
from mllm_align import DPO, DPOConfig  # noqa: E402
from mllm_models.adapter import Idefics3Adapter  # noqa: E402
from mllm_models.config import Idefics3ModelConfig  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: one intra-op thread


def _records(tmp_path):
    out = []
    for index, (colour, other) in enumerate((("red", "blue"), ("blue", "green"), ("green", "red"), ("red", "green"))):
        image = str(write_image(tmp_path / f"{index}.png", colour))
        out.append(Preference(id=f"p{index}", prompt=(Turn("user", "<image>\nWhat colour is the square?"),),
                              chosen=colour, rejected=f"a {other} one", images=(image,)))
    return out


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo"])
def test_idefics3_dpo_loss_and_rewards_equal_trl(tmp_path, loss_type):
    from PIL import Image

    adapter = Idefics3Adapter.from_config(Idefics3ModelConfig(**Idefics3Adapter.example_config(tmp_path)), seed=0)
    records = _records(tmp_path)
    beta = 0.1 if loss_type == "sigmoid" else 0.5
    method = DPO(DPOConfig(lora=True, lora_r=4, lora_alpha=8, lora_dropout=0.0, beta=beta, loss_type=loss_type))
    model = method.setup(adapter)
    method.prepare(SimpleNamespace(records=records, stage_dir=tmp_path, fingerprint="fp", logger=None))
    rows = [{"images": [Image.open(r.images[0]).convert("RGB")], "prompt": r.prompt[0].content, "chosen": r.chosen,
             "rejected": r.rejected} for r in records]
    args = trl.DPOConfig(output_dir=str(tmp_path / "trl"), per_device_train_batch_size=len(records), report_to=[],
                         beta=beta, loss_type=[loss_type], max_length=None, use_cpu=True)
    trainer = trl.DPOTrainer(model=model, args=args, train_dataset=datasets.Dataset.from_list(rows),
                             processing_class=adapter.processor)
    batch = method.collate(records)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model.train()
    for _ in range(3):  # a few steps in, so the policy differs from the reference
        loss, _ = method.loss(model, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    trl_inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
                  "pixel_values": torch.cat([batch["pixel_values"]] * 2),
                  "completion_mask": (batch["labels"] != -100).long()}
    with torch.no_grad():
        ours, metrics = method.loss(model, batch)
        theirs = trainer.compute_loss(trainer.model, trl_inputs)
    logged = {k: v[-1] for k, v in trainer._metrics["train"].items()}
    assert float(ours) > 0 and metrics["rewards/margins"] != 0
    assert float(ours) == pytest.approx(float(theirs), abs=1e-5)
    for key in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
                "logps/chosen", "logps/rejected"):
        assert metrics[key] == pytest.approx(logged[key], abs=1e-5), key


# -- TRL's own data path ------------------------------------------------------------------------
# The rows a TRL user writes (images + conversational prompt / chosen / rejected); TRL applies the
# family's chat template, tokenizes with its processor and collates (DataCollatorForVisionPreference).

QUESTION = "What colour is the square?"
COLOURS = {"red": (220, 20, 20), "blue": (20, 20, 220), "green": (20, 200, 20)}
# What each family's chat template puts after an answer's end-of-turn token. TRL's completion is
# everything the template renders after the prompt, so it holds these tokens too; ours learns the
# answer and its end-of-turn only (generation stops there; the newline only separates turns).
SEPARATOR = {"idefics3": "\n", "llava-next": ""}


def _family_adapter(family, tmp_path):
    from mllm_models.adapter import LlavaNextAdapter

    cls = {"idefics3": Idefics3Adapter, "llava-next": LlavaNextAdapter}[family]
    return cls.from_config(cls.config_class(**cls.example_config(tmp_path)), seed=0)


def _pairs(adapter, tmp_path):
    """Our records and the same pairs as TRL rows, images at the model's one resolution (height x width:
    LLaVA-NeXT's token count depends on the image's size, which our loader resizes to first)."""
    from PIL import Image

    height, width = adapter.options["size"]
    # the text the family's template renders for an image part in front of the question
    image_text = adapter.processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}], tokenize=False)
    image_text = "<image>\n" if "<image>\n" + QUESTION in image_text else "<image>"
    records, rows = [], []
    for index, (colour, other) in enumerate((("red", "blue"), ("blue", "green"), ("green", "red"), ("red", "green"))):
        image = Image.new("RGB", (width, height), (255, 255, 255))
        image.paste(Image.new("RGB", (width // 2, height // 2), COLOURS[colour]), (width // 4, height // 4))
        path = tmp_path / f"{index}.png"
        image.save(path)
        records.append(Preference(id=f"p{index}", prompt=(Turn("user", image_text + QUESTION),), chosen=colour,
                                  rejected=f"a {other} one", images=(str(path),)))
        rows.append({"images": [Image.open(path).convert("RGB")],
                     "prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}],
                     "chosen": [{"role": "assistant", "content": [{"type": "text", "text": colour}]}],
                     "rejected": [{"role": "assistant", "content": [{"type": "text", "text": f"a {other} one"}]}]})
    return records, rows


def _tokens(ids, mask):
    return [row[m.bool()].tolist() for row, m in zip(ids, mask, strict=True)]


def _assert_same(theirs, ours, tokenizer, what):
    for row, (a, b) in enumerate(zip(theirs, ours, strict=True)):
        if a != b:
            at = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            pytest.fail(f"{what}, row {row}: first difference at token {at}: TRL {a[at:at + 4]} "
                        f"{tokenizer.decode(a[at:at + 4])!r} vs ours {b[at:at + 4]} {tokenizer.decode(b[at:at + 4])!r}")


@pytest.mark.parametrize("family", ["idefics3", "llava-next"])
def test_dpo_equals_trl_through_its_own_data_path(tmp_path, family):
    """TRL does everything itself: ``DPOTrainer`` on a dataset of ``{images, prompt, chosen,
    rejected}`` conversational rows with the family's processor; its ``data_collator`` on its
    ``train_dataset`` (in order) applies the chat template, tokenizes and collates. Ours is
    ``DPO.collate`` on the same pairs as records.

    The token ids of prompt + chosen / prompt + rejected and the pixel values are the same out of
    the box. The completions differ for Idefics3 only: its template closes each turn with
    ``<end_of_utterance>\\n`` and TRL's completion is everything after the prompt, so TRL also
    scores the ``\\n``; ours learns `` {answer}<end_of_utterance>`` (the adapter's template, whose
    text equals the family's). That newline is TRL's convention, not the family's, so the loss and
    metrics are compared on the part that is the same: the rows in TRL's standard (string) format,
    prompt = ``processor.apply_chat_template(..., add_generation_prompt=True)``, chosen / rejected =
    the answer with the template's end-of-turn (TRL's vision collator appends no eos), through the
    same TRL collator: those ids are ours without the trailing separator, and a causal model's
    scores of the answer do not depend on tokens after it. For LLaVA-NeXT both of TRL's batches are
    compared. LoRA (TRL's reference is the model with adapters disabled, as ours), a few steps in.
    """
    torch.manual_seed(0)
    adapter = _family_adapter(family, tmp_path)
    tokenizer = adapter.tokenizer
    records, rows = _pairs(adapter, tmp_path)
    n = len(records)
    method = DPO(DPOConfig(lora=True, lora_r=4, lora_alpha=8, lora_dropout=0.0, beta=0.1, loss_type="sigmoid"))
    model = method.setup(adapter)
    method.prepare(SimpleNamespace(records=records, stage_dir=tmp_path, fingerprint="fp", logger=None))
    args = trl.DPOConfig(output_dir=str(tmp_path / "trl"), per_device_train_batch_size=n, report_to=[], beta=0.1,
                         loss_type=["sigmoid"], max_length=None, use_cpu=True)
    trainer = trl.DPOTrainer(model=model, args=args, train_dataset=datasets.Dataset.from_list(rows),
                             processing_class=adapter.processor)
    conversational = trainer.data_collator([dict(trainer.train_dataset[i]) for i in range(n)])
    batch = method.collate(records)

    # the same token ids (prompt + chosen rows, then prompt + rejected rows) and pixel values
    ours_ids = _tokens(batch["input_ids"], batch["attention_mask"])
    _assert_same(_tokens(conversational["input_ids"], conversational["attention_mask"]), ours_ids, tokenizer,
                 "prompt + answer ids")
    pixels = conversational["pixel_values"]
    pixels = pixels[:, 0] if family == "idefics3" else pixels  # [samples, images, ...], one image each
    assert torch.equal(pixels, torch.cat([batch["pixel_values"]] * 2))
    if "image_sizes" in conversational:
        assert conversational["image_sizes"].tolist() == [adapter.options["size"]] * (2 * n)

    # TRL's completion: our learned tokens plus the template's separator after the end of turn
    separator = tokenizer(SEPARATOR[family], add_special_tokens=False)["input_ids"] if SEPARATOR[family] else []
    ours_answers = _tokens(batch["input_ids"], batch["labels"] != -100)
    assert all(answer[-1] == tokenizer.convert_tokens_to_ids(adapter.template.stop) for answer in ours_answers)
    _assert_same(_tokens(conversational["input_ids"], conversational["completion_mask"]),
                 [answer + separator for answer in ours_answers], tokenizer, "completion")

    # the same rows in TRL's standard format: prompt text from the chat template, answer + end of turn
    prompt = adapter.processor.apply_chat_template(rows[0]["prompt"], add_generation_prompt=True, tokenize=False)
    stop = adapter.template.stop
    standard = trainer.data_collator([{"images": row["images"], "prompt": prompt,
                                       "chosen": f" {record.chosen}{stop}", "rejected": f" {record.rejected}{stop}"}
                                      for row, record in zip(rows, records, strict=True)])
    _assert_same(_tokens(standard["input_ids"], standard["attention_mask"]),
                 [ids[:len(ids) - len(separator)] for ids in ours_ids], tokenizer, "standard-format ids")
    _assert_same(_tokens(standard["input_ids"], standard["completion_mask"]), ours_answers, tokenizer,
                 "standard-format completion")
    assert torch.equal(standard["pixel_values"], conversational["pixel_values"])

    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=5.0)
    model.train()
    for _ in range(3):  # a few steps in, so the policy differs from the reference (rewards ~0.1)
        loss, _ = method.loss(model, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    keys = ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen",
            "logps/rejected")
    with torch.no_grad():
        ours, metrics = method.loss(model, batch)
        trl_batches = [standard] + ([conversational] if not separator else [])
        for trl_batch in trl_batches:
            theirs = trainer.compute_loss(trainer.model, trl_batch)
            logged = {k: v[-1] for k, v in trainer._metrics["train"].items()}
            assert float(ours) == pytest.approx(float(theirs), abs=1e-5)
            for key in keys:
                assert metrics[key] == pytest.approx(logged[key], abs=1e-5), key
    assert float(ours) > 0 and metrics["rewards/margins"] != 0 and metrics["rewards/chosen"] != 0
