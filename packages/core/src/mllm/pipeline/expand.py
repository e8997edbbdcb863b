"""``seeds:`` and ``sweep:``: one pipeline file, its stages repeated per seed and per variant.

``seeds: [0, 1, 2]`` repeats every stage (but ``report`` stages) once per seed: ``sft``
becomes ``sft-s0``, ``sft-s1``, ``sft-s2``, each with its stage key ``seed:`` set. ``sweep:``
names variants, each a set of stage-key overrides::

    sweep:
      lr2: {stages.dpo.train.lr: 2.0e-5}
      lr5: {stages.dpo.train.lr: 5.0e-5}

A stage a variant changes (and every stage reading it) is repeated per variant
(``dpo-lr2-s1``); stages no variant changes stay shared (``sft-s1``). References (``from:``,
an eval's ``models:``, ``data: {from: ...}``, ...) are resolved within the same seed and
variant; a report stage is never repeated: it reads every copy and aggregates over seeds.
The implicit ``init`` is shared: every seed starts from the same model. A stage with its own
``seed:`` runs once, shared by every seed (data preparation: a subsample, a judge's rewrite);
it may read only stages that are not repeated per seed either.

Overrides on the command line address a stage as written (``stages.sft.train.lr=...``:
every copy), one copy (``stages.sft-s1.train.lr=...``) or one sweep arm over its seeds
(``stages.dpo-lr2.train.lr=...``).
"""

from __future__ import annotations

import copy
import difflib
import re
from dataclasses import dataclass
from typing import Any

from mllm.errors import ConfigError

SEEDS, SWEEP = "seeds", "sweep"
VARIANT_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_]*")
#: keys whose string values name components or the stage itself, never another stage
_NAME_KEYS = frozenset({"id", "kind", "name", "op", "rule"})
_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


@dataclass(frozen=True)
class StageCopy:
    """Where an expanded stage comes from: the stage as written, the sweep variant (or none), the seed (or none)."""

    template: str
    variant: str | None
    seed: int | None

    @property
    def arm(self) -> str:
        """The arm the report aggregates over seeds: ``<template>`` or ``<template>-<variant>``."""
        return self.template if self.variant is None else f"{self.template}-{self.variant}"


def copy_id(template: str, variant: str | None, seed: int | None) -> str:
    """``dpo``, ``dpo-lr2``, ``dpo-s1`` or ``dpo-lr2-s1``."""
    parts = [template] + ([variant] if variant is not None else []) + ([f"s{seed}"] if seed is not None else [])
    return "-".join(parts)


def expands(raw: dict[str, Any]) -> bool:
    return raw.get(SEEDS) is not None or raw.get(SWEEP) is not None


def split_overrides(raw: dict[str, Any], overrides: list[str]) -> tuple[list[str], list[str]]:
    """(overrides applied before the expansion, overrides addressing an expanded stage id)."""
    stages = raw.get("stages") if isinstance(raw.get("stages"), list) else []
    written = {s.get("id") for s in stages if isinstance(s, dict)}
    early, late = [], []
    for text in overrides:
        path = text.partition("=")[0].strip().split(".")
        (late if len(path) > 2 and path[0] == "stages" and path[1] not in written else early).append(text)
    return early, late


def _set_path(target: dict[str, Any], path: list[str], value: Any, where: str) -> None:
    for depth, part in enumerate(path[:-1]):
        target = target.setdefault(part, {})
        if not isinstance(target, dict):
            raise ConfigError(f"{where}: {'.'.join(path[:depth + 1])} is not a mapping")
    target[path[-1]] = value


def _rewrite(value: Any, mapping: dict[str, list[str]], where: str, key: str | None = None) -> Any:
    """``value`` with every stage id of ``mapping`` replaced by its copies (a list item by all of
    them; a single value only when there is one)."""
    if isinstance(value, dict):
        return {k: (v if k in _NAME_KEYS else _rewrite(v, mapping, where, k)) for k, v in value.items()}
    if isinstance(value, list):
        out: list[Any] = []
        for item in value:
            if isinstance(item, str) and item in mapping:
                out.extend(mapping[item])
            else:
                out.append(_rewrite(item, mapping, where, key))
        return out
    if isinstance(value, str) and value in mapping:
        if len(mapping[value]) != 1:
            raise ConfigError(f"{where}.{key}: {value!r} is repeated ({', '.join(mapping[value])}); a single key "
                              "cannot read all of them, list the stages instead")
        return mapping[value][0]
    return value


def _variants(sweep: dict[str, dict[str, Any]], kinds: dict[str, str], where: str) -> dict[str, dict[str, list]]:
    """``{variant: {stage id: [(key path, value), ...]}}``, every key checked."""
    problems, out = [], {}
    for name, keys in sweep.items():
        per_stage: dict[str, list] = {}
        for key, value in keys.items():
            parts = str(key).split(".")
            at = f"{where}: sweep.{name}.{key}"
            if len(parts) < 3 or parts[0] != "stages" or not all(parts):
                problems.append(f"{at}: a sweep key sets a stage key, stages.<stage id>.<key> (e.g. "
                                "stages.dpo.train.lr); change other keys in the file or on the command line")
                continue
            stage_id = parts[1]
            if stage_id not in kinds:
                close = difflib.get_close_matches(stage_id, list(kinds), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else f"; stages are {list(kinds)}"
                problems.append(f"{at}: no stage with id {stage_id!r}{hint}")
                continue
            if kinds[stage_id] == "report":
                problems.append(f"{at}: stage {stage_id!r} is a report, which reads every variant; sweep the "
                                "stages it reports on")
                continue
            if isinstance(value, str) and _FLOAT.match(value):
                value = float(value)  # YAML 1.1 reads "2e-5" as a string
            per_stage.setdefault(stage_id, []).append((parts[2:], value))
        out[name] = per_stage
    if problems:
        raise ConfigError("\n".join(problems))
    return out


def expand_stages(raw_stages: list[dict[str, Any]], templates: list[Any], seeds: list[int] | None,
                  sweep: dict[str, dict[str, Any]] | None, where: str) -> tuple[list[dict[str, Any]], dict[str, StageCopy]]:
    """The stages of the expanded pipeline (plain stage mappings, in dependency order) and where each comes from.

    ``templates`` are the validated stages as written (:class:`mllm.pipeline.config.Stage`):
    their inputs say which string values are references to rewrite."""
    from mllm.pipeline.config import INIT, stage_inputs

    order = [t.id for t in templates]
    kinds = {t.id: t.kind_spec.name for t in templates}
    inputs = {t.id: [i for i in stage_inputs(t) if i != INIT] for t in templates}
    raw_by_id = {d["id"]: d for d in raw_stages if isinstance(d, dict) and d.get("id") in kinds}
    variants = _variants(sweep or {}, kinds, where)
    affected: dict[str, set[str]] = {}
    for name, per_stage in variants.items():
        hit = set(per_stage)
        for stage_id in order:  # a stage reading a changed stage changes too
            if kinds[stage_id] != "report" and set(inputs[stage_id]) & hit:
                hit.add(stage_id)
        affected[name] = hit
    seed_list: list[int | None] = list(seeds) if seeds else [None]
    # a stage with its own seed: once for all seeds
    fixed = {i for i in order if isinstance(raw_by_id.get(i), dict) and raw_by_id[i].get("seed") is not None}

    def seeds_of(stage_id: str) -> list[int | None]:
        return [None] if stage_id in fixed else seed_list
    slots: dict[str, list[str | None]] = {}
    for stage_id in order:
        if kinds[stage_id] == "report":
            continue
        changed_by = [v for v in variants if stage_id in affected[v]]
        shared = not variants or len(changed_by) < len(variants)
        slots[stage_id] = ([None] if shared else []) + changed_by

    def ref(stage_id: str, variant: str | None, seed: int | None) -> str:
        if stage_id not in slots:
            return stage_id  # a report (or init): never repeated
        return copy_id(stage_id, variant if variant is not None and stage_id in affected[variant] else None,
                       None if stage_id in fixed else seed)

    problems: list[str] = []
    out: list[dict[str, Any]] = []
    copies: dict[str, StageCopy] = {}
    for stage_id in order:
        data = raw_by_id[stage_id]
        label = f"{where}: stages.{stage_id}"
        try:
            if stage_id not in slots:  # a report: every copy of what it reads
                mapping = {i: [copy_id(i, v, s) for v in slots[i] for s in seeds_of(i)] if i in slots else [i]
                           for i in inputs[stage_id]}
                out.append(_rewrite(copy.deepcopy(data), mapping, label))
                continue
            repeated = [i for i in inputs[stage_id] if i in slots and i not in fixed]
            if seeds and stage_id in fixed and repeated:
                raise ConfigError(f"{label}.seed: a stage with its own seed runs once for all seeds, but it reads "
                                  f"{repeated[0]!r}, which runs once per seed; remove the stage's seed")
            for variant in slots[stage_id]:
                for seed in seeds_of(stage_id):
                    new = copy.deepcopy(data)
                    names = set(inputs[stage_id])
                    for path, value in (variants[variant].get(stage_id, []) if variant else []):
                        _set_path(new, path, copy.deepcopy(value), f"{where}: sweep.{variant}")
                        if isinstance(value, str) and value in kinds:
                            names.add(value)  # the variant points the stage at another stage
                    new = _rewrite(new, {i: [ref(i, variant, seed)] for i in names}, label)
                    new["id"] = copy_id(stage_id, variant, seed)
                    if seed is not None:
                        new["seed"] = seed
                    copies[new["id"]] = StageCopy(stage_id, variant, seed)
                    out.append(new)
        except ConfigError as error:
            problems.extend(error.lines())
    written = set(order)
    for copy_of, origin in copies.items():
        if copy_of in written and copy_of != origin.template:
            problems.append(f"{where}: stages.{origin.template}: its copy {copy_of!r} has the id of another stage; "
                            "rename that stage")
    if problems:
        raise ConfigError("\n".join(problems))
    return out, copies


def apply_copy_overrides(stages: list[dict[str, Any]], copies: dict[str, StageCopy], overrides: list[str]) -> None:
    """Apply overrides naming a copy (``stages.sft-s1.<key>``) or an arm over its seeds (``stages.dpo-lr2.<key>``)."""
    from mllm.pipeline.config import apply_overrides

    holder = {"stages": stages}
    for text in overrides:
        key, _, value = text.partition("=")
        parts = key.strip().split(".")
        targets = [c for c, origin in copies.items() if parts[1] in (c, origin.arm)]
        if not targets:
            ids = list(dict.fromkeys([o.template for o in copies.values()] + [o.arm for o in copies.values()]))
            raise ConfigError(f"override {text!r}: no stage with id {parts[1]!r}; give a stage as written "
                              f"({', '.join(ids)}), an arm or one copy (e.g. {next(iter(copies), 'sft-s0')})")
        for target in targets:
            apply_overrides(holder, [".".join(["stages", target, *parts[2:]]) + "=" + value])


def arm_models(copies: dict[str, StageCopy], model_ids: list[str]) -> dict[str, list[str]]:
    """``{arm: [model ids]}`` in order: a copy's arm is its template (and variant); any other id is its own arm."""
    out: dict[str, list[str]] = {}
    for model_id in model_ids:
        origin = copies.get(model_id)
        out.setdefault(origin.arm if origin else model_id, []).append(model_id)
    return out


def expansion_lines(copies: dict[str, StageCopy]) -> list[str]:
    """``sft -> sft-s0, sft-s1, sft-s2`` per stage as written (for ``mllm validate`` and ``--dry-run``)."""
    by_template: dict[str, list[str]] = {}
    for copy_of, origin in copies.items():
        by_template.setdefault(origin.template, []).append(copy_of)
    return [f"{template} -> {', '.join(ids)}" for template, ids in by_template.items()]


_STAGE_REF = re.compile(r"\bstages\.([A-Za-z][A-Za-z0-9_-]*)")


def collapse_copies(problems: list[Any], copies: dict[str, StageCopy]) -> list[str]:
    """Problems (pre-flight :class:`Problem` objects or error lines) as lines, one that every copy
    of a stage shares said once (``... (also eval-s1, eval-s2)``) instead of once per seed."""
    seen: dict[str, int] = {}
    lines: list[str] = []
    also: dict[int, list[str]] = {}
    for problem in problems:
        line = str(problem)
        match = _STAGE_REF.search(line)
        origin = copies.get(match.group(1)) if match else None
        if origin is None:
            lines.append(line)
            continue
        key = line[:match.start(1)] + origin.arm + line[match.end(1):]
        if key in seen:
            also.setdefault(seen[key], []).append(match.group(1))
            continue
        seen[key] = len(lines)
        lines.append(line)
    return [f"{line} (also {', '.join(also[i])})" if i in also else line for i, line in enumerate(lines)]
