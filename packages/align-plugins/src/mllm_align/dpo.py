"""Direct preference optimization (method ``dpo``) and its loss variants.

Each :class:`~mllm.records.Preference` becomes two sequences, the prompt followed by the
chosen answer and by the rejected one (the model's chat template, ``<s>`` in front, the
end-of-turn token after the answer). A sequence's log-probability is the **sum** of the
log-probabilities of its completion tokens (the answer and its end-of-turn token), as in
DPO, TRL and the seed studies. With ``pi`` the policy, ``ref`` the reference (the model the
stage starts from) and ``d = (log pi(c) - log ref(c)) - (log pi(r) - log ref(r))``:

- ``sigmoid``: ``-(1 - e) log s(beta d) - e log s(-beta d)``; ``e = label_smoothing`` is
  conservative DPO (cDPO), 0 is plain DPO;
- ``ipo``: ``(d' - 1 / (2 beta))^2`` where ``d'`` uses log-ratios divided by the number of
  completion tokens (length-averaged, as TRL computes IPO);
- ``hinge``: ``relu(1 - beta d)`` (SLiC);
- ``robust``: ``((1 - e)(-log s(beta d)) + e log s(-beta d)) / (1 - 2e)`` (rDPO).

The loss is ``dpo_weight * mean(dpo loss) + sft_weight * sft`` where ``sft`` is the mean
negative log-likelihood per chosen completion token (mllm-dpo's ``SFT_weight`` /
``DPO_weight``). Logged per step: ``rewards/chosen``, ``rewards/rejected`` (``beta`` times
the log-ratios), ``rewards/margins``, ``rewards/accuracies`` (share of pairs whose chosen
reward is higher), ``logps/chosen``, ``logps/rejected`` (policy log-probs); the Trainer
logs ``loss``.

Training is full fine-tuning (vision tower frozen by default) or LoRA (see
:class:`mllm_align.common.TrainableConfig`). With LoRA the reference is the same model
with its adapters disabled (peft's ``disable_adapter()``): no second copy of the weights.
With full fine-tuning and ``precompute_reference: false`` a frozen copy is kept.

Two speed-ups, each switchable (``benchmarks/dpo_step.py`` measures them):

- ``precompute_reference`` (default on): the reference log-probs of every pair are
  computed once in ``prepare`` (batched, without gradients), cached in the stage folder
  (``reference_logps.json``, valid for the stage fingerprint and keyed by record content
  and id) and read back on resume; records that carry ``reference_logps`` (e.g. mllm-dpo's
  ``ref_win_logp``/``ref_rej_logp``) use those. No reference forward pass happens while
  training.
- ``share_image_features`` (default on): chosen and rejected of one prompt share one
  vision-tower pass: ``adapter.encode_images`` once per image, then
  ``adapter.embed_inputs`` for both sequences; the logits are those of
  ``model(input_ids, pixel_values)`` with the images given twice.

Two more from the stage's ``train:`` keys (docs/speed.md; both through
:mod:`mllm.training.packing`, both off with a logged reason where the model's attention
cannot take them):

- ``shared_prompt`` (default on): one sequence per pair, the prompt (image tokens
  included) once, then the chosen answer, then the rejected one, which sees the prompt
  but not the chosen answer (a block mask; its position ids continue from the prompt).
  The prompt goes through the language model once, forward and backward, in training and
  in the reference precompute; the log-probs are the two sequences' (float noise).
- ``packing`` (default off): several pairs per row, attention never crossing a pair.

```yaml
method: {name: dpo, beta: 0.1}
method: {name: dpo, loss_type: ipo, beta: 0.5, lora: true, lora_r: 128, lora_alpha: 256}
method: {name: dpo, beta: 0.1, sft_weight: 1.0, dpo_weight: 1.0}      # mllm-dpo's mixed loss
```
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

from mllm import ImageTokenCounts, Preference, TrainContext, Turn
from pydantic import Field, model_validator

from mllm_align.common import (
    IGNORE_INDEX,
    TrainableConfig,
    cut_problem,
    load_batch_images,
    pad_encoded,
    prepare_trainable,
    record_image_paths,
)
from mllm_align.layout import Layout, layout_from_context

REFERENCE_CACHE = "reference_logps.json"
LossType = Literal["sigmoid", "ipo", "hinge", "robust"]
_DEFAULT_IMAGE_WEIGHT = 576


class DPOConfig(TrainableConfig):
    """Options of the ``dpo`` method (plus the freezing / LoRA keys of :class:`TrainableConfig`)."""

    beta: float = Field(0.1, gt=0, description="strength of the KL penalty towards the reference (IPO's tau)")
    loss_type: LossType = Field("sigmoid", description="sigmoid (DPO / cDPO), ipo, hinge or robust")
    label_smoothing: float = Field(0.0, ge=0.0, lt=0.5, description="assumed share of flipped labels: conservative "
                                                                     "DPO for sigmoid, rDPO for robust")
    dpo_weight: float = Field(1.0, ge=0.0, description="weight of the preference loss (mllm-dpo's DPO_weight)")
    sft_weight: float = Field(0.0, ge=0.0, description="weight of an SFT term on the chosen answers "
                                                       "(mllm-dpo's SFT_weight); 0 turns it off")
    precompute_reference: bool = Field(True, description="compute the reference log-probs once before training "
                                                         "(cached in the stage folder) instead of every step")
    share_image_features: bool = Field(True, description="one vision-tower pass per image for chosen and rejected")
    reference_batch_size: int = Field(16, ge=1, description="pairs per forward pass when precomputing the reference")

    @model_validator(mode="after")
    def _some_loss(self) -> DPOConfig:
        if self.dpo_weight == 0 and self.sft_weight == 0:
            raise ValueError("dpo_weight and sft_weight are both 0: nothing would be trained")
        return self


def record_key(record: Preference) -> str:
    """Identifies a pair: its id and everything its log-probs depend on."""
    payload = [record.id, [[t.role, t.content] for t in record.prompt], record.chosen, record.rejected,
               [os.fspath(p) for p in record.images]]
    return hashlib.sha256(json.dumps(payload).encode()).hexdigest()[:32]


def dpo_losses(chosen_logps: Any, rejected_logps: Any, ref_chosen_logps: Any, ref_rejected_logps: Any, *,
               beta: float, loss_type: str = "sigmoid", label_smoothing: float = 0.0,
               chosen_lengths: Any = None, rejected_lengths: Any = None) -> tuple[Any, Any, Any]:
    """Per-pair DPO losses and the (detached) chosen / rejected rewards.

    ``*_logps`` are summed completion log-probs ``[n]``; ``*_lengths`` (completion token
    counts) are needed by ``ipo``.
    """
    import torch
    import torch.nn.functional as F

    chosen_ratio = chosen_logps - ref_chosen_logps
    rejected_ratio = rejected_logps - ref_rejected_logps
    delta = chosen_ratio - rejected_ratio
    if loss_type == "sigmoid":
        losses = -(1 - label_smoothing) * F.logsigmoid(beta * delta) - label_smoothing * F.logsigmoid(-beta * delta)
    elif loss_type == "hinge":
        losses = torch.relu(1 - beta * delta)
    elif loss_type == "ipo":
        if chosen_lengths is None or rejected_lengths is None:
            raise ValueError("the ipo loss needs the completion lengths")
        averaged = (chosen_ratio / chosen_lengths.clamp(min=1) - rejected_ratio / rejected_lengths.clamp(min=1))
        losses = (averaged - 1 / (2 * beta)) ** 2
    elif loss_type == "robust":
        losses = (-(1 - label_smoothing) * F.logsigmoid(beta * delta)
                  + label_smoothing * F.logsigmoid(-beta * delta)) / (1 - 2 * label_smoothing)
    else:
        raise ValueError(f"unknown loss_type {loss_type!r}; use sigmoid, ipo, hinge or robust")
    return losses, beta * chosen_ratio.detach(), beta * rejected_ratio.detach()


class DPO:
    """Preference optimization on :class:`~mllm.records.Preference` records (see the module docstring)."""

    record_kind: ClassVar[str] = "preference"

    def __init__(self, config: DPOConfig | None = None) -> None:
        self.config = config or DPOConfig()
        self.adapter: Any = None
        self.reference_model: Any = None  # full fine-tuning without precomputed log-probs: a frozen copy
        self.reference: dict[str, tuple[float, float]] = {}  # record key -> (chosen, rejected) reference log-probs
        # reference_forward_passes: reference passes during training (0 with precompute_reference)
        self.stats = {"reference_forward_passes": 0, "reference_cached": 0, "reference_computed": 0}
        #: rows as train.packing / train.shared_prompt ask (set by prepare; plain rows until then)
        self.layout = Layout()

    @property
    def projector_lr(self) -> float | None:
        return self.config.projector_lr

    # -- Method protocol ----------------------------------------------------------------

    def setup(self, adapter: Any) -> Any:
        """Freeze parts or wrap with LoRA; with full fine-tuning and no precomputation,
        keep a frozen copy of the starting model as the reference."""
        self.adapter = adapter
        if _dynamic(adapter) and self.config.share_image_features:
            # encode_images gives one count per image only at one resolution; per-image grids go
            # through the model's own forward instead (same loss, one vision pass per row)
            _LOG.warning("dpo: share_image_features off: the model's dynamic_resolution gives each image its own "
                         "token count and grid; chosen and rejected rows each run the vision tower")
        if not self.config.lora and not self.config.precompute_reference:
            self.reference_model = self._frozen_copy(adapter.model)
        return prepare_trainable(adapter, self.config)

    @staticmethod
    def _frozen_copy(model: Any) -> Any:
        reference = copy.deepcopy(model)
        reference.eval()
        for param in reference.parameters():
            param.requires_grad_(False)
        return reference

    def resolve(self, record: Preference) -> Preference:
        """The pair a record stands for now (subclasses may resample it, e.g. per epoch)."""
        return record

    def reference_records(self, records: Sequence[Preference]) -> list[Preference]:
        """Every pair whose reference log-probs training will need."""
        return [self.resolve(r) for r in records]

    def prepare(self, context: TrainContext) -> None:
        """Reference log-probs of every training pair, once (see ``precompute_reference``).

        ``context.records`` are the training records; ``context.stage_dir`` holds the cache,
        ``context.fingerprint`` validates it. First the batch layout ``context.train`` asks for."""
        self.layout = layout_from_context(self.adapter, context, preference=True)
        if self.layout.active and _dynamic(self.adapter):
            from mllm import ConfigError

            raise ConfigError("train.packing / train.shared_prompt: the model's dynamic_resolution gives each image "
                              "its own token count and grid, which packed or shared-prompt rows do not carry; "
                              "turn them off or set dynamic_resolution off")
        if not self.config.precompute_reference:
            return
        cache = Path(context.stage_dir) / REFERENCE_CACHE
        computed = self.precompute_reference(self.reference_records(context.records), cache_path=cache,
                                             fingerprint=str(context.fingerprint))
        if context.logger is not None:
            context.logger.info("reference log-probs: %d pairs computed, %d from the cache or the records",
                        computed, self.stats["reference_cached"])

    def precompute_reference(self, records: Sequence[Preference], *, cache_path: Path | None = None,
                             fingerprint: str = "") -> int:
        """Fill :attr:`reference` for ``records``; returns how many pairs were computed."""
        import torch

        cached: dict[str, list[float]] = {}
        if cache_path is not None and Path(cache_path).is_file():
            try:
                data = json.loads(Path(cache_path).read_text())
                if data.get("fingerprint") == fingerprint:
                    cached = data.get("logps", {})
            except (OSError, ValueError):
                cached = {}
        missing: dict[str, Preference] = {}
        for record in records:
            key = record_key(record)
            if record.reference_logps is not None:
                self.reference[key] = (float(record.reference_logps[0]), float(record.reference_logps[1]))
                self.stats["reference_cached"] += 1
            elif key in cached:
                self.reference[key] = (float(cached[key][0]), float(cached[key][1]))
                self.stats["reference_cached"] += 1
            elif key not in self.reference:
                missing[key] = record
        todo = list(missing.items())
        if todo:
            # long pairs together: little padding per batch
            todo.sort(key=lambda item: -self.lengths([item[1]])[0])
            model = self.adapter.model
            was_training = model.training
            model.eval()
            try:
                with torch.no_grad():
                    for start in range(0, len(todo), self.config.reference_batch_size):
                        chunk = todo[start:start + self.config.reference_batch_size]
                        batch = self._collate_resolved([record for _, record in chunk])
                        batch = {k: v.to(self._device()) if hasattr(v, "to") else v for k, v in batch.items()}
                        chosen, rejected = self.reference_logps_now(model, batch)
                        for (key, _), c, r in zip(chunk, chosen.tolist(), rejected.tolist()):
                            self.reference[key] = (c, r)
            finally:
                model.train(was_training)
            self.stats["reference_computed"] += len(todo)
        if cache_path is not None and (todo or not Path(cache_path).is_file()):
            wanted = {record_key(r) for r in records}
            payload = {"fingerprint": fingerprint,
                       "logps": {k: list(v) for k, v in self.reference.items() if k in wanted or k in cached}}
            tmp = Path(cache_path).with_name(f".{Path(cache_path).name}.tmp-{os.getpid()}")
            tmp.write_text(json.dumps(payload))
            os.replace(tmp, cache_path)
        return len(todo)

    def _require_adapter(self) -> Any:
        if self.adapter is None:
            raise RuntimeError(f"{type(self).__name__}.setup(adapter) must be called before collate()")
        return self.adapter

    def _device(self) -> Any:
        return next(self.adapter.model.parameters()).device

    def encode(self, record: Preference) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
        """``input_ids`` / ``labels`` of prompt + chosen and prompt + rejected; labels only
        on the final answer (and its end-of-turn token)."""
        adapter = self._require_adapter()
        prompt_length = len(adapter.encode_prompt(record.prompt, **_images_kwarg(adapter, record)))
        out = []
        for encoded in self._encode_answers(record).values():
            labels = list(encoded["labels"])
            labels[:prompt_length] = [IGNORE_INDEX] * min(prompt_length, len(labels))
            if all(label == IGNORE_INDEX for label in labels):
                raise ValueError(f"record {record.id!r}: the answer has no tokens left after truncation to "
                                 f"max_length={adapter.max_length}")
            out.append({"input_ids": list(encoded["input_ids"]), "labels": labels})
        return out[0], out[1]

    def row_problem(self, record: Preference) -> str | None:
        """A pair whose prompt + chosen or prompt + rejected is longer than the model's
        ``max_length`` is a bad row (the train stage applies ``on_bad_row``), not cut."""
        try:
            encoded = self._encode_answers(self.resolve(record))
        except ValueError as error:
            return str(error)
        for side, conversation in encoded.items():
            problem = cut_problem(self._require_adapter(), conversation)
            if problem is not None:
                return f"{side}: {problem}"
        return None

    def _encode_answers(self, record: Preference) -> dict[str, dict[str, Any]]:
        """The adapter's encoding of prompt + chosen and prompt + rejected (``cut_from`` kept)."""
        adapter = self._require_adapter()
        return {side: adapter.encode_conversation(tuple(record.prompt) + (Turn("assistant", answer),),
                                                  **_images_kwarg(adapter, record))
                for side, answer in (("chosen", record.chosen), ("rejected", record.rejected))}

    def collate(self, records: Sequence[Preference]) -> dict[str, Any]:
        """``input_ids``/``labels``/``attention_mask`` ``[2n, T]`` (chosen rows, then rejected
        rows, right-padded), ``pixel_values`` of each record's images once, and the reference
        log-probs ``[n, 2]`` where known (``reference_known`` ``[n]``)."""
        return self._collate_resolved([self.resolve(r) for r in records])

    def _collate_resolved(self, records: Sequence[Preference]) -> dict[str, Any]:
        import torch

        adapter = self._require_adapter()
        pairs = [self.encode(r) for r in records]
        if self.layout.active:
            from mllm import pack_pairs

            batch = pack_pairs(pairs, [len(r.images) for r in records], adapter.pad_token_id,
                               prompt_lengths=[len(adapter.encode_prompt(r.prompt)) for r in records],
                               shared_prompt=self.layout.shared_prompt, packing=self.layout.packing,
                               one_row=self.layout.one_row)
        else:
            batch = pad_encoded([c for c, _ in pairs] + [r for _, r in pairs], adapter.pad_token_id)
        if isinstance(adapter, ImageTokenCounts):
            paths = record_image_paths(records)
            if paths:
                inputs = adapter.image_inputs(paths)
                batch["pixel_values"] = inputs.pop("pixel_values")
                if inputs:  # e.g. image_grid_thw: per-image rows, repeated with the pixels
                    batch["image_forward_inputs"] = inputs
        else:
            pixel_values = load_batch_images(adapter, records)
            if pixel_values is not None:
                batch["pixel_values"] = pixel_values
        known, values = [], []
        for record in records:
            value = self.reference.get(record_key(record))
            if value is None and record.reference_logps is not None:
                value = tuple(float(v) for v in record.reference_logps)
            known.append(value is not None)
            values.append(value if value is not None else (0.0, 0.0))
        batch["reference_logps"] = torch.tensor(values, dtype=torch.float32)
        batch["reference_known"] = torch.tensor(known, dtype=torch.bool)
        return batch

    # -- log-probs -----------------------------------------------------------------------

    def sequence_logps(self, model: Any, batch: dict[str, Any], *, share_image_features: bool | None = None,
                       adapter: Any = None) -> tuple[Any, Any]:
        """Summed completion log-probs ``[2n]`` and completion token counts ``[2n]``.

        ``adapter`` (default: the method's) encodes images and embeds tokens when
        ``share_image_features``; pass one whose ``model`` is ``model`` for a reference copy.
        The rows are chosen rows then rejected rows of the same records, so each record's
        images serve two rows (:func:`mllm.answer_logprobs` with ``image_repeats=2``).
        """
        from mllm import answer_logprobs

        share = self.config.share_image_features if share_image_features is None else share_image_features
        share = share and not _dynamic(adapter or self.adapter)
        scored = answer_logprobs(model, batch, adapter=adapter or self.adapter, image_repeats=2,
                                 share_image_features=share)
        return scored.sums, scored.counts

    @contextlib.contextmanager
    def _reference_context(self, model: Any) -> Iterator[tuple[Any, Any]]:
        """``(model, adapter)`` that compute the reference: a frozen copy, or the LoRA model
        with its adapters disabled (the base), or the model itself before training."""
        if self.reference_model is not None:
            device = next(model.parameters()).device
            self.reference_model.to(device)
            reference_adapter = copy.copy(self.adapter)
            reference_adapter.model = self.reference_model
            yield self.reference_model, reference_adapter
        elif self.config.lora and hasattr(model, "disable_adapter"):
            with model.disable_adapter():
                yield model, self.adapter
        else:
            yield model, self.adapter

    def reference_logps_now(self, model: Any, batch: dict[str, Any]) -> tuple[Any, Any]:
        """Reference log-probs ``([n], [n])`` of a batch, computed now without gradients."""
        import torch

        with torch.no_grad(), self._reference_context(model) as (reference, reference_adapter):
            logps, _ = self.sequence_logps(reference, batch, adapter=reference_adapter)
        n = logps.shape[0] // 2
        return logps[:n].detach(), logps[n:].detach()

    # -- loss ----------------------------------------------------------------------------

    def loss(self, model: Any, batch: dict[str, Any]) -> tuple[Any, dict[str, float]]:
        """The weighted DPO (+ SFT) loss of a batch and its reward metrics."""
        config = self.config
        logps, counts = self.sequence_logps(model, batch)
        n = logps.shape[0] // 2
        chosen, rejected = logps[:n], logps[n:]
        known = batch.get("reference_known")
        if known is not None and bool(known.all()):
            reference = batch["reference_logps"].to(chosen.device, chosen.dtype)
            ref_chosen, ref_rejected = reference[:, 0], reference[:, 1]
        else:
            if config.precompute_reference and self.reference_model is None and not config.lora \
                    and getattr(model, "training", False):
                raise RuntimeError("DPO: a batch without precomputed reference log-probs while training with "
                                   "precompute_reference on and full fine-tuning (the start model is gone); "
                                   "call prepare() with every training record first")
            ref_chosen, ref_rejected = self.reference_logps_now(model, batch)
            self.stats["reference_forward_passes"] += 1
        losses, chosen_rewards, rejected_rewards = dpo_losses(
            chosen, rejected, ref_chosen, ref_rejected, beta=config.beta, loss_type=config.loss_type,
            label_smoothing=config.label_smoothing, chosen_lengths=counts[:n], rejected_lengths=counts[n:])
        dpo_loss = losses.mean()
        total = config.dpo_weight * dpo_loss
        metrics = {
            "rewards/chosen": float(chosen_rewards.mean()),
            "rewards/rejected": float(rejected_rewards.mean()),
            "rewards/margins": float((chosen_rewards - rejected_rewards).mean()),
            "rewards/accuracies": float((chosen_rewards > rejected_rewards).float().mean()),
            "logps/chosen": float(chosen.detach().mean()),
            "logps/rejected": float(rejected.detach().mean()),
        }
        if config.sft_weight > 0:
            sft_loss = -chosen.sum() / counts[:n].sum().clamp(min=1)
            total = total + config.sft_weight * sft_loss
            metrics["loss/dpo"] = float(dpo_loss.detach())
            metrics["loss/sft"] = float(sft_loss.detach())
        return total, metrics

    def lengths(self, records: Sequence[Preference]) -> list[int]:
        """Approximate lengths for length grouping: prompt, chosen and rejected characters
        plus a fixed weight per image (no tokenization)."""
        weight = getattr(self.adapter, "num_image_tokens", None) or _DEFAULT_IMAGE_WEIGHT
        return [sum(len(t.content) for t in r.prompt) + max(len(r.chosen), len(r.rejected)) + weight * len(r.images)
                for r in records]


_LOG = logging.getLogger("mllm_align.dpo")


def _dynamic(adapter: Any) -> bool:
    """The adapter gives images different token counts (e.g. Qwen2-VL's dynamic_resolution)."""
    return isinstance(adapter, ImageTokenCounts) and bool(getattr(adapter, "dynamic_resolution", False))


def _images_kwarg(adapter: Any, record: Any) -> dict[str, Any]:
    """``images=`` for an adapter whose encoder needs them (per-image token counts), else nothing."""
    return {"images": record.images} if isinstance(adapter, ImageTokenCounts) else {}
