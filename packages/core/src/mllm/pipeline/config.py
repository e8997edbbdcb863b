"""Pipeline YAML schema, validation with helpful errors, and ``key=value`` overrides.

A pipeline file is read with ``yaml.safe_load`` only. Validation happens in two steps:
the top level (:class:`PipelineConfig`), then each stage against the config model of its
kind, and each component reference (``method:``, ``data:``, ``benchmarks:``, ``model:``)
against the config model of the component it names. Every error names the file, the
stage and the key, with a "did you mean" when a key is misspelt.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from pathlib import Path
from typing import Any, ClassVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mllm.errors import ConfigError
from mllm.pipeline.secrets import is_secret_key, redact_text
from mllm.plugins.registry import PluginError, Registry
from mllm.plugins.specs import ComponentKind, ComponentSpec, SpecImportError
from mllm.reporting.findings import FindingConfig

STAGE_ID_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")  # fullmatch: "$" would let a trailing newline through
INIT = "init"


class ComponentRef(BaseModel):
    """``{name: <component>, <its own keys>...}``: a component picked by name."""

    model_config = ConfigDict(extra="allow")
    #: the YAML key holding the name (``rule`` in ``score: {rule: ...}``, ``op`` in ``ops: [{op: ...}]``)
    name_key: ClassVar[str] = "name"
    name: str = Field(description="registered name of the component, or 'distribution:name'")

    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class StageConfig(BaseModel):
    """Keys every stage has. Stage kinds subclass this with their own keys.

    ``component_fields`` maps a field holding :class:`ComponentRef` (or a list of them)
    to the component kind it names, so the loader validates it against that component.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True, protected_namespaces=())
    component_fields: ClassVar[dict[str, ComponentKind]] = {}

    id: str = Field(description="stage id, unique in the pipeline; names its folder runs/<name>/<id>/")
    kind: str = Field(description="stage kind: train, eval, generate, transform, report, or a plugin's")
    from_: str = Field(INIT, alias="from", description="the stage whose model (or records) this stage starts from")
    seed: int | None = Field(None, description="this stage's seed; default: the pipeline's seed (`seeds:` sets it "
                                               "on each copy)")

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str) -> str:
        if not STAGE_ID_PATTERN.fullmatch(value) or value == INIT:
            raise ValueError(f"stage id {value!r} must start with a letter, use letters, digits, '-' or '_', and not be 'init'")
        return value


class PipelineConfig(BaseModel):
    """The top level of a pipeline file."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    name: str = Field(description="pipeline name; outputs go to runs/<name>/")
    description: str = Field("", description="free text shown by `mllm run --dry-run` and at the top of report.md")
    model: ComponentRef = Field(description="the model every stage starts from (stage id 'init')")
    stages: list[dict[str, Any]] = Field(description="the stages, in order; each has id and kind")
    seed: int = Field(0, description="global seed passed to every stage (and the one `init` is built with)")
    seeds: list[int] | None = Field(None, description="repeat every stage but reports once per seed: `sft` becomes "
                                                      "`sft-s0`, `sft-s1`, ... (see Seeds and sweeps)")
    sweep: dict[str, dict[str, Any]] | None = Field(
        None, description="named variants, each a mapping of stage keys to values (`lr2: {stages.dpo.train.lr: "
                          "2.0e-5}`): the stages a variant changes, and those reading them, are repeated per variant")
    findings: list[FindingConfig] = Field(
        default_factory=list, description="claims the report judges from the numbers: metric, two arms, direction "
                                          "(see Findings)")

    @field_validator("seeds")
    @classmethod
    def _check_seeds(cls, value: list[int] | None) -> list[int] | None:
        if value is None:
            return value
        if not value:
            raise ValueError("list at least one seed, e.g. seeds: [0, 1, 2] (or leave seeds out)")
        if any(seed < 0 for seed in value):
            raise ValueError(f"seeds are whole numbers >= 0 (they name the copies: sft-s0), got {value}")
        repeated = sorted({seed for seed in value if value.count(seed) > 1})
        if repeated:
            raise ValueError(f"seed {repeated[0]} is listed twice; each seed once, e.g. [0, 1, 2]")
        return value

    @field_validator("sweep")
    @classmethod
    def _check_sweep(cls, value: dict[str, dict[str, Any]] | None) -> dict[str, dict[str, Any]] | None:
        from mllm.pipeline.expand import VARIANT_PATTERN

        if value is None:
            return value
        if not value:
            raise ValueError("name at least one variant, e.g. sweep: {lr2: {stages.dpo.train.lr: 2.0e-5}}")
        for name in value:
            if not VARIANT_PATTERN.fullmatch(str(name)):
                raise ValueError(f"variant name {name!r} must use letters, digits and '_' (it goes into stage "
                                 "ids: dpo-<variant>-s0)")
        return value

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not STAGE_ID_PATTERN.fullmatch(value):
            raise ValueError(f"pipeline name {value!r} must start with a letter and use letters, digits, '-' or '_'")
        return value


@dataclass
class ResolvedComponent:
    """A component reference checked against its spec: the spec plus its validated config."""

    kind: ComponentKind
    spec: ComponentSpec
    config: Any

    def build(self) -> Any:
        """Import the implementation and construct it with its config."""
        impl = self.spec.load()
        return impl(self.config) if self.config is not None else impl()

    def describe(self) -> dict[str, Any]:
        options = self.config.model_dump(mode="json") if isinstance(self.config, BaseModel) else {}
        return {"name": self.spec.name, "distribution": self.spec.distribution, "version": self.spec.version, **options}


@dataclass
class Stage:
    """One validated stage: its config and its kind's spec."""

    config: StageConfig
    kind_spec: ComponentSpec
    components: dict[str, ResolvedComponent | list[ResolvedComponent]]

    @property
    def id(self) -> str:
        return self.config.id


@dataclass
class Pipeline:
    """A validated pipeline, ready for the runner."""

    path: Path | None
    config: PipelineConfig
    model: ResolvedComponent
    stages: list[Stage]
    raw: dict[str, Any]
    #: expanded stage id -> the stage as written, variant and seed (``seeds:``/``sweep:``; empty without them)
    copies: dict[str, Any] = dataclass_field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.config.name

    def arm_models(self, model_ids: list[str]) -> dict[str, list[str]]:
        """``{arm: [model ids]}``: the copies of one stage (and variant) over seeds form one arm."""
        from mllm.pipeline.expand import arm_models

        return arm_models(self.copies, model_ids)

    def stage(self, stage_id: str) -> Stage:
        for stage in self.stages:
            if stage.id == stage_id:
                return stage
        raise KeyError(stage_id)


# -- error formatting -------------------------------------------------------------------


def _model_fields(model: type[BaseModel]) -> list[str]:
    names = []
    for name, field in model.model_fields.items():
        names.append(field.alias or name)
    return names


def _field_model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The pydantic model that owns the last key of ``loc`` (for "did you mean")."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int) or not (isinstance(current, type) and issubclass(current, BaseModel)):
            continue
        field = current.model_fields.get(part) or next(
            (f for f in current.model_fields.values() if f.alias == part), None)
        if field is None:
            return None
        annotation = field.annotation
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        current = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unknown_key_message(owner: type[BaseModel] | None, key: str) -> tuple[str, str | None]:
    """``unknown key 'x'; did you mean 'y'?`` and the key suggested (``None``: none).

    A model's ``key_aliases`` (``{other tool's name: (our key, note)}``, e.g. the train
    block's ``learning_rate -> lr``) come first, then close spellings, else the known keys."""
    known = _model_fields(owner) if owner else []
    message = f"unknown key {key!r}"
    alias = (getattr(owner, "key_aliases", None) or {}).get(key)
    if alias is not None:
        target, note = alias
        return f"{message}; did you mean {target!r} ({note})?", target
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if close:
        return f"{message}; did you mean {close[0]!r}?", close[0]
    return (f"{message}; known keys: {', '.join(known)}" if known else message), None


def format_validation_error(error: ValidationError, model: type[BaseModel], where: str) -> str:
    """One line per problem: ``where.key: message (did you mean 'x'?)``.

    A required key reported missing because it was misspelt (``stagez`` for ``stages``)
    is one problem: the unknown key's line suggests it, the "missing" line is dropped."""
    lines = []
    suggested: set[tuple] = set()
    items = error.errors()
    for item in items:
        if item["type"] == "extra_forbidden":
            loc = tuple(item["loc"])
            target = _unknown_key_message(_field_model_at(model, loc), str(loc[-1]))[1]
            if target is not None:
                suggested.add((*loc[:-1], target))
    for item in items:
        loc = tuple(item["loc"])
        key = ".".join(str(p) for p in loc)
        location = f"{where}.{key}" if key else where
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = _unknown_key_message(_field_model_at(model, loc), str(loc[-1]))[0]
        elif item["type"] == "missing" and loc in suggested:
            continue
        elif item["type"] == "missing":
            message = "required key is missing"
        elif is_secret_key(loc[-1] if loc else ""):
            message += " (value not shown: the key names a secret)"
        else:
            message += f" (got {redact_text(repr(item.get('input')))})"
        lines.append(f"{location}: {message}")
    return "\n".join(lines)


def validate_model(model: type[BaseModel], data: Any, where: str) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error, model, where)) from None


# -- overrides ------------------------------------------------------------------------


def parse_override(text: str) -> tuple[list[str], Any]:
    """``stages.sft.train.lr=1e-4`` -> (["stages", "sft", "train", "lr"], 0.0001)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} is not of the form key=value (e.g. stages.sft.train.lr=1e-4)")
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError as error:  # 'seed=[1,' or a '!!python/...' tag: one line, never a traceback
        problem = str(getattr(error, "problem", None) or "not valid YAML").strip()
        raise ConfigError(f"override {redact_text(text)!r}: the value is not valid YAML ({problem}); quote a "
                          "string value, close brackets, and use no '!!' tags") from None
    if isinstance(parsed, str) and _FLOAT.match(parsed):
        parsed = float(parsed)  # YAML 1.1 reads "1e-4" as a string
    return key.strip().split("."), parsed


_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key=value`` overrides; stages are addressed by id: ``stages.<id>.<key>``."""
    for text in overrides:
        path, value = parse_override(text)
        target: Any = data
        for depth, part in enumerate(path[:-1]):
            if isinstance(target, list):
                match = [s for s in target if isinstance(s, dict) and s.get("id") == part]
                if not match:
                    ids = [s.get("id") for s in target if isinstance(s, dict)]
                    raise ConfigError(f"override {text!r}: no stage with id {part!r}; stages are {ids}")
                target = match[0]
            elif isinstance(target, dict):
                target = target.setdefault(part, {})
                if not isinstance(target, (dict, list)):
                    raise ConfigError(f"override {text!r}: {'.'.join(path[:depth + 1])} is not a mapping")
            else:
                raise ConfigError(f"override {text!r}: cannot descend into {'.'.join(path[:depth])}")
        if isinstance(target, list):
            raise ConfigError(f"override {text!r}: address a stage by id, e.g. stages.<id>.<key>=value")
        target[path[-1]] = value
    return data


# -- loading --------------------------------------------------------------------------


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a pipeline file with ``yaml.safe_load``; errors name the file and line."""
    try:
        text = Path(path).read_text()
    except OSError as error:
        raise ConfigError(f"cannot read pipeline file {path}: {error.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:  # one line: where, and what the parser expected
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = ": ".join(p for p in (getattr(error, "context", None), getattr(error, "problem", None)) if p)
        raise ConfigError(f"{path}: not valid YAML{where}: {problem or error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a pipeline file is a mapping with name, model and stages")
    return data


def resolve_component(registry: Registry, kind: ComponentKind, ref: ComponentRef | dict, where: str) -> ResolvedComponent:
    """Check a ``{name: ..., ...}`` reference against the named component's config."""
    if isinstance(ref, dict):
        ref = validate_model(ComponentRef, ref, where)
    name_at = f"{where}.{ref.name_key}" if ref.name_key else where
    try:
        spec = registry.get(kind, ref.name)
    except PluginError as error:
        raise ConfigError(f"{name_at}: {error}") from None
    try:
        config_model = spec.load_config()
    except SpecImportError as error:
        raise ConfigError(f"{name_at}: {error}") from None
    options = ref.options()
    if config_model is None:
        if options:
            raise ConfigError(f"{where}: {kind} {ref.name!r} takes no options, got {sorted(options)}")
        return ResolvedComponent(kind, spec, None)
    config = validate_model(config_model, options, where)
    # a component's config may name components too (a dataset's pairs: a pairing): check them now
    for key, nested_kind in getattr(config_model, "component_fields", {}).items():
        value = getattr(config, key, None)
        if value is not None:
            resolve_component(registry, nested_kind, _NameOnly(name=value) if isinstance(value, str) else value,
                              f"{where}.{key}")
    return ResolvedComponent(kind, spec, config)


class _NameOnly(ComponentRef):
    """A component named by a bare string (``pairs: wrong-vs-gold``): errors point at the key itself."""

    name_key: ClassVar[str] = ""


def _secrets_written_in(raw: Any, where_file: str) -> list[str]:
    """One problem line per part of the pipeline holding a key (:mod:`mllm.pipeline.secrets`)."""
    from mllm.pipeline.secrets import SECRET_HINT, secret_in_pipeline

    if not isinstance(raw, dict):
        return []
    parts: list[tuple[Any, str]] = [({k: v for k, v in raw.items() if k != "stages"}, "")]
    for index, stage in enumerate(raw.get("stages") or [] if isinstance(raw.get("stages"), list) else []):
        label = f"stages.{stage['id']}" if isinstance(stage, dict) and isinstance(stage.get("id"), str) \
            else f"stages[{index}]"
        parts.append((stage, label))
    lines = []
    for value, label in parts:
        found = secret_in_pipeline(value, label)
        if found:
            lines.append(f"{where_file}: {found[0]}: {found[1]}; {SECRET_HINT}")
    return lines


def load_pipeline(path: Path | None, registry: Registry, overrides: list[str] = (), data: dict | None = None) -> Pipeline:
    """Read, override and validate a pipeline (from ``path`` or an already-read ``data``).

    Every problem of the file is reported at once: one :class:`ConfigError` whose message
    has a line per problem (unknown keys in several stages, a misspelt component name, a
    ``from:`` naming no earlier stage, ...); ``mllm`` prints each line as an ``error:``."""
    problems: list[str] = []
    pipeline = collect_pipeline(path, registry, overrides, data, problems)
    if problems:
        raise ConfigError("\n".join(problems))
    return pipeline


def collect_pipeline(path: Path | None, registry: Registry, overrides: list[str] = (), data: dict | None = None,
                     problems: list[str] | None = None) -> Pipeline:
    """:func:`load_pipeline` that appends each problem (one line) to ``problems``.

    The pipeline returned holds the stages that validated (``model`` is ``None`` when the
    model reference is wrong), so the pre-flight checks (:mod:`mllm.pipeline.validation`)
    can look at the rest. The top level of the file (name, model, stages) must be valid:
    a problem there raises at once, since no stage can be read without it."""
    problems = problems if problems is not None else []
    where_file = str(path) if path else "<pipeline>"
    raw = data if data is not None else read_yaml(Path(path))
    from mllm.pipeline import expand

    early, late = expand.split_overrides(raw, list(overrides))
    raw = apply_overrides(raw, early)
    if not expand.expands(raw):
        raw = apply_overrides(raw, late)  # no copies: "no stage with id" as usual
    problems += _secrets_written_in(raw, where_file)  # refused in validate and run alike; never echoed
    config = validate_model(PipelineConfig, raw, where_file)
    model = _collect(problems, resolve_component, registry, "model", config.model, f"{where_file}: model")
    copies: dict[str, Any] = {}
    if expand.expands(raw):
        before = len(problems)
        templates = _collect_stages(registry, config.stages, where_file, problems)
        if len(problems) > before:  # the stages as written have problems: no copies of them
            return Pipeline(Path(path) if path else None, config, model, templates, raw)
        try:
            expanded, copies = expand.expand_stages(config.stages, templates, config.seeds, config.sweep, where_file)
            expand.apply_copy_overrides(expanded, copies, late)
        except ConfigError as error:
            problems.extend(error.lines())
            return Pipeline(Path(path) if path else None, config, model, templates, raw)
        # the pipeline as run: plain stages, no seeds/sweep/findings (a torchrun worker reloads it as is)
        raw = {**{k: v for k, v in raw.items() if k not in (expand.SEEDS, expand.SWEEP, "findings")},
               "stages": expanded}
        config = config.model_copy(update={"stages": expanded})
    before = len(problems)
    stages = _collect_stages(registry, config.stages, where_file, problems)
    if copies:  # a problem of a stage as written shows in each copy: said once
        problems[before:] = expand.collapse_copies(problems[before:], copies)
    problems += _unknown_arms(config, copies, stages, where_file)
    return Pipeline(Path(path) if path else None, config, model, stages, raw, copies)


def _unknown_arms(config: PipelineConfig, copies: dict[str, Any], stages: list[Stage], where_file: str) -> list[str]:
    """A line per ``findings:`` arm that names no arm of the pipeline."""
    from mllm.pipeline.expand import arm_models

    arms = list(arm_models(copies, [INIT] + [s.id for s in stages]))
    lines = []
    for index, finding in enumerate(config.findings):
        for arm in finding.arms:
            if arm not in arms:
                close = difflib.get_close_matches(arm, arms, n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"arms are {arms}"
                lines.append(f"{where_file}: findings[{index}].arms: no arm {arm!r}; {hint}")
    return lines


def _collect_stages(registry: Registry, stage_list: list[Any], where_file: str, problems: list[str]) -> list[Stage]:
    """The stages that validate, in order; a line in ``problems`` for each one that does not."""
    stages: list[Stage] = []
    seen: set[str] = {INIT}
    failed: set[str] = set()  # ids of stages with a problem: stages reading them are not blamed again
    for index, stage_data in enumerate(stage_list):
        label = f"{where_file}: stages[{index}]"
        if isinstance(stage_data, dict) and "id" in stage_data:
            label = f"{where_file}: stages.{stage_data['id']}"
        before = len(problems)
        stage = _collect(problems, _load_stage, registry, stage_data, label, [s.id for s in stages])
        if stage is None or len(problems) > before:
            if isinstance(stage_data, dict) and isinstance(stage_data.get("id"), str):
                failed.add(stage_data["id"])
                seen.add(stage_data["id"])
            continue
        if stage.id in seen:
            problems.append(f"{label}.id: stage id {stage.id!r} is used twice; ids must be unique")
            continue
        unknown = [needed for needed in stage_inputs(stage) if needed not in seen]
        if unknown:
            problems.append(f"{label}: refers to stage {unknown[0]!r}, which is not defined before it; "
                            f"earlier stages: {sorted(seen)}")
            failed.add(stage.id)
            seen.add(stage.id)
            continue
        seen.add(stage.id)
        if failed & set(stage_inputs(stage)):
            continue  # reads a stage that has a problem of its own
        stages.append(stage)
    return stages


def _collect(problems: list[str], function: Any, *args: Any) -> Any:
    """``function(*args)``, or ``None`` with its :class:`ConfigError` lines added to ``problems``."""
    try:
        return function(*args)
    except ConfigError as error:
        problems.extend(error.lines())
        return None


def _load_stage(registry: Registry, stage_data: Any, label: str, earlier: list[str]) -> Stage:
    """One stage validated against its kind's config and its components' configs (every
    problem of the stage in one :class:`ConfigError`, a line each)."""
    if not isinstance(stage_data, dict):
        raise ConfigError(f"{label}: a stage is a mapping with id and kind")
    kind_name = stage_data.get("kind")
    if not kind_name:
        raise ConfigError(f"{label}.kind: required key is missing (train, eval, generate, transform, report)")
    try:
        kind_spec = registry.get("stage_kind", kind_name)
    except PluginError as error:
        raise ConfigError(f"{label}.kind: {error}") from None
    try:
        stage_model = kind_spec.load_config() or StageConfig
    except SpecImportError as error:
        raise ConfigError(f"{label}.kind: {error}") from None
    stage_config = validate_model(stage_model, stage_data, label)
    fill_defaults = getattr(stage_config, "fill_defaults", None)
    if callable(fill_defaults):
        fill_defaults(earlier)
    components: dict[str, Any] = {}
    problems: list[str] = []
    for field_name, component_kind in stage_model.component_fields.items():
        value = getattr(stage_config, field_name)
        if value is None:
            continue
        if isinstance(value, list):  # every item of the list is checked
            resolved = [_collect(problems, resolve_component, registry, component_kind, ref,
                                 f"{label}.{field_name}[{i}]") for i, ref in enumerate(value)]
            components[field_name] = resolved
        else:
            components[field_name] = _collect(problems, resolve_component, registry, component_kind, value,
                                              f"{label}.{field_name}")
    if problems:
        raise ConfigError("\n".join(problems))
    return Stage(stage_config, kind_spec, components)


def stage_inputs(stage: Stage) -> list[str]:
    """Stage ids a stage reads: ``from``, what its config lists in ``inputs()``, and what its
    components' configs list in ``stage_inputs()``."""
    inputs = getattr(stage.config, "inputs", None)
    extra = list(inputs()) if callable(inputs) else []
    # components may read earlier stages too (the stage-records dataset): `stage_inputs()` on their config
    for value in stage.components.values():
        for component in value if isinstance(value, list) else [value]:
            component_inputs = getattr(component.config, "stage_inputs", None)
            if callable(component_inputs):
                extra.extend(component_inputs())
    found = [stage.config.from_, *extra]
    return list(dict.fromkeys(found))
