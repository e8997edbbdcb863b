"""Pre-flight: what ``mllm validate`` checks, and ``mllm run`` before its first stage starts.

Beyond the schema (keys, names and stage order, checked by the loader,
:mod:`mllm.pipeline.config`), a pipeline is checked against what its stages will read:

- the model folder (``model: {path: ...}``) exists;
- every data and benchmark file a component names (its ``data_files(config)``) exists,
  and the first records or items of each dataset and benchmark name images that exist
  (unless the component's ``check_images`` is false);
- every stage read through ``from:`` (a train stage's ``data: {from: ...}``, ``stage-records``)
  writes records, and one read by a pairing (``pairs: wrong-vs-gold``) scores its answers;
- every model id a stage starts from or evaluates (``from:``, ``models:``) names a model;
- a train stage's method and dataset agree on the record kind, and the packages its
  ``report_to`` integrations and ``deepspeed`` need are installed;
- every judge is set up: a benchmark scored by a judge has ``judge:``, the judge's name and
  keys are valid, the environment variable holding its API key is set, a local judge's
  folder exists.

Every problem is found at once and reported on a line of its own, naming the stage, the
key and the path (absolute: relative paths in a pipeline are relative to the working
directory ``mllm`` runs in). Nothing here loads a model or calls a judge.
"""

from __future__ import annotations

import itertools
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from mllm.errors import ConfigError
from mllm.pipeline.config import INIT, ComponentRef, Pipeline, ResolvedComponent, Stage, resolve_component
from mllm.plugins.registry import Registry

#: records (or items) per dataset (or benchmark) whose images are checked
IMAGE_SAMPLES = 3
#: config keys that hold a judge (``generator``: the model llava-instruct asks)
JUDGE_KEYS = ("judge", "generator")


@dataclass(frozen=True)
class Problem:
    """One reason a stage would fail: the stage id (``init`` for the pipeline's model), the key and what is wrong."""

    stage: str
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


class PreflightError(ConfigError):
    """A pipeline would fail: one line per problem (the stage, the key, the path, how to fix it)."""


def shown(path: str | os.PathLike) -> str:
    """A path as errors print it: absolute (relative paths are relative to the working directory)."""
    return str(Path(path).expanduser().absolute())


def preflight(pipeline: Pipeline, registry: Registry | None = None) -> list[Problem]:
    """Every problem the pre-flight finds (see the module docstring), in pipeline order."""
    if registry is None:
        from mllm.plugins.registry import get_registry

        registry = get_registry()
    problems = list(_model_problems(pipeline))
    for stage in pipeline.stages:
        problems += _stage_problems(pipeline, stage, registry)
    return problems


def validate_file(path: str | os.PathLike, registry: Registry, overrides: Iterable[str] = ()) -> Pipeline:
    """``mllm validate``: load ``path`` and run the pre-flight, raising one :class:`ConfigError`
    that lists every problem, the file's (keys, names, stage order) and the pre-flight's."""
    from mllm.pipeline.config import collect_pipeline

    lines: list[str] = []
    pipeline = collect_pipeline(Path(path), registry, list(overrides), problems=lines)
    from mllm.pipeline.expand import collapse_copies

    lines += [f"{path}: {line}" for line in collapse_copies(preflight(pipeline, registry), pipeline.copies)]
    if lines:
        raise PreflightError("\n".join(lines))
    return pipeline


# -- the model ------------------------------------------------------------------------------------


def _model_problems(pipeline: Pipeline) -> Iterator[Problem]:
    from mllm.interfaces import HasSourcePath

    model = pipeline.model
    if model is None:
        return
    impl = model.spec.load()
    if isinstance(impl, HasSourcePath):
        source = impl.source_path(model.config)
        if source is not None and not Path(source).exists():
            named = str(getattr(model.config, "path", "") or "")
            if re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", named):  # owner/name: a hub id, not a folder
                folder = named.rsplit("/", 1)[-1]
                yield Problem(INIT, "model.path", f"{named!r} is not a folder here but looks like a Hugging Face hub "
                                                  f"id; mllm reads local folders: download it with `hf download "
                                                  f"{named} --local-dir models/{folder}` and set path: models/{folder}")
                return
            yield Problem(INIT, "model.path", f"the model folder {shown(source)} does not exist; point path at a "
                                              "save_pretrained folder (or use init: tiny)")


# -- each stage -----------------------------------------------------------------------------------


def _components(stage: Stage) -> Iterator[tuple[str, ResolvedComponent]]:
    """``(key, component)`` of every component a stage names (``benchmarks[1]`` for list items)."""
    for key, value in stage.components.items():
        if isinstance(value, list):
            for index, component in enumerate(value):
                if component is not None:
                    yield f"{key}[{index}]", component
        elif value is not None:
            yield key, value


def _stage_problems(pipeline: Pipeline, stage: Stage, registry: Registry) -> list[Problem]:
    problems: list[Problem] = []
    for key, component in _components(stage):
        missing = list(_missing_files(stage, key, component))
        problems += missing
        if not missing and component.kind in ("dataset", "benchmark"):
            problems += _image_problems(stage, key, component)
        problems += _judge_problems(stage, key, component, registry)
        problems += _source_problems(pipeline, stage, key, component)
    problems += _model_source_problems(pipeline, stage)
    problems += _record_kind_problems(stage)
    problems += _train_package_problems(stage)
    return problems


def _missing_files(stage: Stage, key: str, component: ResolvedComponent) -> Iterator[Problem]:
    from mllm.interfaces import HasDataFiles

    impl = component.spec.load()
    if component.config is None or not isinstance(impl, HasDataFiles):
        return
    for path in impl.data_files(component.config):
        if not Path(path).exists():
            yield Problem(stage.id, f"stages.{stage.id}.{key}",
                          f"{component.spec.name} reads {shown(path)}, which does not exist")


def _image_problems(stage: Stage, key: str, component: ResolvedComponent) -> list[Problem]:
    """The images of a dataset's first records (a benchmark's first items) exist."""
    from mllm.data.badrows import DataReport
    from mllm.errors import MllmError

    if callable(getattr(component.config, "stage_inputs", None)):
        return []  # it reads an earlier stage's records, which exist only once that stage ran
    if getattr(component.config, "check_images", True) is False:
        return []  # the user said the paths need not exist (e.g. captions rewritten without their images)
    where = f"stages.{stage.id}.{key}"
    try:
        built = component.build()
        if component.kind == "dataset":
            report = DataReport(source=where, on_bad_row="skip", max_bad_fraction=1.0)
            sample = list(itertools.islice(built.records(report), IMAGE_SAMPLES))
        else:
            sample = list(itertools.islice(built.items(), IMAGE_SAMPLES))
    except (MllmError, OSError) as error:
        return [Problem(stage.id, where, f"{component.spec.name}: {error}")]
    problems = []
    for record in sample:
        for image in getattr(record, "images", ()):
            if isinstance(image, (str, os.PathLike)) and not Path(image).exists():
                problems.append(Problem(stage.id, where, f"{component.spec.name}: record {record.id!r} names the "
                                                         f"image {shown(image)}, which does not exist"))
    return problems


def _judge_problems(stage: Stage, key: str, component: ResolvedComponent, registry: Registry) -> list[Problem]:
    """A benchmark scored by a judge has one; every judge named is valid and set up."""
    config = component.config
    problems: list[Problem] = []
    for judge_key in JUDGE_KEYS:
        if config is None or judge_key not in type(config).model_fields:
            continue
        where = f"stages.{stage.id}.{key}.{judge_key}"
        ref = getattr(config, judge_key)
        if ref is None:
            if component.kind == "benchmark" and judge_key == "judge":
                problems.append(Problem(stage.id, where, f"benchmark {component.spec.name!r} is scored by a judge, "
                                                         "and none is set; add judge: {name: openai, model: ..., "
                                                         "base_url: ...} (or {name: hf-local, path: ...})"))
            continue
        problems += _judge_setup(stage, where, ref, registry)
    return problems


def _judge_setup(stage: Stage, where: str, ref: Any, registry: Registry) -> list[Problem]:
    if isinstance(ref, ComponentRef):
        ref = {ref.name_key or "name": ref.name, **ref.options()}
    if not isinstance(ref, dict):
        return []  # an object with complete() given in Python
    try:
        judge = resolve_component(registry, "judge", dict(ref), where)
    except ConfigError as error:
        return [Problem(stage.id, where, line.partition(": ")[2] or line) for line in error.lines()]
    config, name = judge.config, judge.spec.name
    problems = []
    variable = getattr(config, "api_key_env", None)
    if isinstance(variable, str) and not os.environ.get(variable):
        problems.append(Problem(stage.id, where, f"judge {name!r} reads its API key from ${variable}, which is not "
                                                 f"set; export it (or set api_key_env to the variable that holds it)"))
    path = getattr(config, "path", None)
    if isinstance(path, str) and not Path(path).expanduser().exists():
        problems.append(Problem(stage.id, f"{where}.path", f"judge {name!r} loads {shown(path)}, which does not exist"))
    return problems


# -- what a stage reads from other stages -----------------------------------------------------------


def _source_problems(pipeline: Pipeline, stage: Stage, key: str, component: ResolvedComponent) -> list[Problem]:
    """A stage whose records are read writes records; one read by a pairing scores them."""
    stage_inputs = getattr(component.config, "stage_inputs", None)
    if not callable(stage_inputs):
        return []
    problems = []
    pairs = getattr(component.config, "pairs", None)
    where = f"stages.{stage.id}.{key}"
    for source_id in stage_inputs():
        source = _stage_or_none(pipeline, source_id)
        if source is None:
            continue  # the loader reports stages that do not exist
        if getattr(source.config, "produces_model", False):
            problems.append(Problem(stage.id, where, f"reads the records of stage {source_id!r}, a "
                                                     f"{source.kind_spec.name} stage, which writes a model, not "
                                                     "records; name a generate or transform stage"))
        elif pairs and not _scores(pipeline, source):
            pairing = pairs if isinstance(pairs, str) else pairs.get("name", "")
            problems.append(Problem(stage.id, f"{where}.pairs", f"pairing {pairing!r} pairs scored answers, and "
                                                                f"stage {source_id!r} does not score them; add "
                                                                "score: {rule: exact-match} (or another rule) to "
                                                                f"stage {source_id!r}"))
    return problems


def _scores(pipeline: Pipeline, stage: Stage, seen: frozenset[str] = frozenset()) -> bool:
    """Whether the records a stage writes are scored: it has a ``score:`` rule, or it passes on
    the records of stages that score (a transform of a generate stage's records)."""
    if getattr(stage.config, "score", None) is not None:
        return True
    for _, component in _components(stage):
        inputs = getattr(component.config, "stage_inputs", None)
        if callable(inputs):
            for source_id in inputs():
                source = _stage_or_none(pipeline, source_id)
                if source is not None and source_id not in seen and _scores(pipeline, source, seen | {stage.id}):
                    return True
    return False


def _stage_or_none(pipeline: Pipeline, stage_id: str) -> Stage | None:
    try:
        return pipeline.stage(stage_id)
    except KeyError:
        return None


def _model_ids_read(stage: Stage) -> Iterable[tuple[str, str]]:
    """``(key, model id)`` of the models a stage loads: an eval stage's ``models``, the
    ``from`` of a train or generate stage."""
    from mllm.stages.generate import GenerateStageConfig
    from mllm.stages.train import TrainStageConfig

    model_ids = getattr(stage.config, "model_ids", None)
    if callable(model_ids):
        return [("models", model_id) for model_id in model_ids()]
    if isinstance(stage.config, (TrainStageConfig, GenerateStageConfig)):
        return [("from", stage.config.from_)]
    return []


def _model_source_problems(pipeline: Pipeline, stage: Stage) -> list[Problem]:
    problems = []
    for key, model_id in _model_ids_read(stage):
        source = _stage_or_none(pipeline, model_id)
        if model_id == INIT or source is None or getattr(source.config, "produces_model", False):
            continue
        problems.append(Problem(stage.id, f"stages.{stage.id}.{key}",
                                f"{model_id!r} is a {source.kind_spec.name} stage, which saves no model; name init "
                                "or a stage that trains one"))
    return problems


def _record_kind_problems(stage: Stage) -> list[Problem]:
    """A train stage's method trains on the record kind its dataset yields."""
    from mllm.errors import MllmError

    method, data = stage.components.get("method"), stage.components.get("data")
    if not isinstance(method, ResolvedComponent) or not isinstance(data, ResolvedComponent):
        return []
    wanted = getattr(method.spec.load(), "record_kind", None)
    try:
        given = getattr(data.build(), "record_kind", None)  # per instance for some (kind: / as: / pairs:)
    except (MllmError, ImportError, OSError):  # it says why when the stage runs; the class may still tell
        given = getattr(data.spec.load(), "record_kind", None)
    if wanted is None or given is None or wanted == given:
        return []
    return [Problem(stage.id, f"stages.{stage.id}.data",
                    f"method {method.spec.name!r} trains on {wanted!r} records and dataset {data.spec.name!r} yields "
                    f"{given!r} records; pick a dataset (or pairs:) that yields {wanted!r} records")]


def _train_package_problems(stage: Stage) -> list[Problem]:
    """The packages a train stage's ``report_to`` integrations and ``deepspeed`` need are installed."""
    missing_packages = getattr(getattr(stage.config, "train", None), "missing_packages", None)
    if not callable(missing_packages):
        return []
    return [Problem(stage.id, f"stages.{stage.id}.train.{key}", message) for key, message in missing_packages()]
