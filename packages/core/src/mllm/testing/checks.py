"""The conformance kit: checks every component of a plugin module must pass.

Use it from a test::

    from mllm.testing import check_plugin, parametrize_with_checks

    def test_my_plugin_conforms():
        check_plugin("mllm_mine.plugin")                 # runs every check, reports all failures

    @parametrize_with_checks("mllm_mine.plugin")          # one pytest test per check
    def test_conformance(check):
        check()

The checks (one id each, ``<check>[<kind>:<name>]``):

``imports-without-torch``
    importing the plugin module in a fresh interpreter leaves torch, transformers and
    deepspeed out of ``sys.modules`` (``mllm --help`` must stay fast).
``registers``
    the module registers at least one component through the hooks, without errors.
``resolves``
    each spec's ``impl`` and ``config`` strings import.
``protocol``
    the implementation has every member of its Protocol in :mod:`mllm.interfaces`
    (``Dataset``, ``Method``, ``Benchmark``, ``Judge``, ``ModelAdapter`` with the class
    methods of ``ModelAdapterClass``, ``StageKind``), and ``record_kind`` / ``metric_keys``
    hold valid values; the optional capabilities it has (``data_files``, ``lengths``,
    ``callbacks``, ``score_files``, ``example_config``...) are methods; a benchmark with
    ``score_files`` declares its file options in ``score_inputs`` (keywords it takes). The behaviour
    checks below check the built object's members too (instance attributes such as
    ``model``, ``pad_token_id``, ``template``); a missing member is named.
``config``
    the config class validates the example values, survives a YAML round trip
    (``model_dump`` -> ``yaml.safe_dump`` -> ``yaml.safe_load`` -> validate, equal) and
    rejects an unknown key; a dataset config has ``on_bad_row`` and ``max_bad_fraction``.
``records`` (datasets)
    the dataset yields at least one valid record of its (instance's) ``record_kind`` (up to 16 are
    checked) with unique ids, and every path ``data_files`` lists exists.
``train-step`` (methods)
    ``setup`` on a fresh tiny LLaVA, ``prepare``, ``collate`` of two records of the
    method's ``record_kind``, then ``loss`` is a finite scalar, backward gives finite
    gradients, not all zero, and one SGD step on CPU changes the trainable weights.
``score`` (benchmarks)
    ``items()`` gives at least two items; ``score`` of the first two (answered with their
    gold answer, else their first choice) returns every key of the built benchmark's
    ``metric_keys`` (an instance may narrow the class's keys to its config) as a number.
``complete`` (judges)
    ``complete(prompt, system=...)`` returns a string.
``load`` (models)
    ``from_config`` builds an adapter satisfying ``ModelAdapter`` whose ``module_names``
    resolve, and ``save`` then ``load`` gives the same parameter names.
``stages`` (models)
    a pipeline on the model runs every built-in stage kind that uses a model: a ``train``
    stage with an SFT-like and one with a DPO-like method, a greedy and a sampling
    ``generate`` stage, and an ``eval`` stage answering by generation and by choice
    scoring (the kit's own components, :mod:`mllm.testing.components`); the message
    names the stage that failed.

Example config values. A component whose config needs values (a file path, a required
key) declares them with an optional classmethod on its implementation::

    @classmethod
    def example_config(cls, tmp_path: pathlib.Path) -> dict:
        (tmp_path / "rows.jsonl").write_text('{"question": "q", "answer": "a"}\\n')
        return {"path": str(tmp_path / "rows.jsonl")}

It may write small files into ``tmp_path`` (a fresh folder per check). Without it the
config is built from its defaults. Callers can override per component:
``check_plugin(module, examples={"dataset:mine": {...}})`` (key ``kind:name`` or ``name``;
the value is a dict or a callable taking ``tmp_path``). A method may likewise define
``example_records(cls, tmp_path) -> list[Record]`` to train on other records than the
kit's (two one-image records of its ``record_kind``, see :mod:`mllm.testing.samples`).
Benchmarks whose constructor takes a ``judge`` keyword get the judge given in
``judges={"name": judge}`` (e.g. a :class:`mllm.testing.ScriptedJudge`).
Stage kinds' example values are merged over ``{"id": "example", "kind": <name>}``.
"""

from __future__ import annotations

import contextvars
import importlib
import inspect
import json
import math
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterable, Mapping, Sequence

from mllm import interfaces
from mllm.pipeline.runner import TrainContext
from mllm.plugins.kinds import KINDS
from mllm.plugins.specs import ComponentSpec

HEAVY_MODULES = ("torch", "transformers", "deepspeed")
UNKNOWN_KEY = "mllm_conformance_unknown_key"
RECORDS_CHECKED = 16

# kind -> its Protocol in mllm.interfaces, from the one kinds table
PROTOCOLS: dict[str, type] = {kind.name: kind.load_protocol() for kind in KINDS}
# Protocols the implementation *class* satisfies besides the instance's (a model adapter's from_config, load).
CLASS_PROTOCOLS: dict[str, type] = {"model": interfaces.ModelAdapterClass}
# Optional capabilities, per kind: where an implementation has one, its members must be methods.
CAPABILITIES: dict[str, tuple[type, ...]] = {
    "dataset": (interfaces.HasDataFiles, interfaces.HasExampleConfig),
    "method": (interfaces.GroupsByLength, interfaces.HasTrainCallbacks, interfaces.HasExampleRecords,
               interfaces.HasExampleConfig, interfaces.ChecksRows),
    "benchmark": (interfaces.HasDataFiles, interfaces.ScoresFromFiles, interfaces.RecordsProvenance,
                  interfaces.HasExampleConfig),
    "model": (interfaces.HasSourcePath, interfaces.HasExampleConfig, interfaces.HasPositionCaches,
              interfaces.ImageTokenCounts),
    "judge": (interfaces.HasExampleConfig,),
    "stage_kind": (interfaces.HasExampleConfig,),
}

Example = Mapping[str, Any] | Callable[[Path], Mapping[str, Any]]


class ConformanceError(AssertionError):
    """A plugin failed one or more conformance checks; the message says which and how to fix them."""


@dataclass
class Check:
    """One conformance check; call it to run it (raises :class:`ConformanceError`)."""

    id: str
    function: Callable[[], None] = field(repr=False)

    def __call__(self) -> None:
        # a copied context: context variables an example sets never leak into later tests
        contextvars.copy_context().run(self.function)

    def __str__(self) -> str:
        return self.id


# -- helpers --------------------------------------------------------------------------


def _fail(where: str, message: str) -> None:
    raise ConformanceError(f"{where}: {message}")


def _module_name(plugin: ModuleType | str) -> str:
    return plugin if isinstance(plugin, str) else plugin.__name__


def _import(plugin: ModuleType | str) -> ModuleType:
    return importlib.import_module(plugin) if isinstance(plugin, str) else plugin


def _guess_distribution(module_name: str) -> str:
    from importlib import metadata

    top = module_name.partition(".")[0]
    dists = metadata.packages_distributions().get(top, [])
    return dists[0] if dists else "plugin-under-test"


def _protocol_annotations(protocol: type) -> dict[str, str]:
    """Annotations of a Protocol and of the Protocols it extends (``ModelAdapter`` is three)."""
    annotations: dict[str, str] = {}
    for base in reversed(protocol.__mro__):
        if getattr(base, "_is_protocol", False):
            annotations.update({k: str(v) for k, v in getattr(base, "__annotations__", {}).items()})
    return annotations


def _protocol_members(protocol: type) -> tuple[set[str], set[str]]:
    """(class-level members, instance attributes) of a Protocol."""
    import typing

    members = set(getattr(protocol, "__protocol_attrs__", None) or typing._get_protocol_attrs(protocol))
    annotations = _protocol_annotations(protocol)
    instance = {name for name, annotation in annotations.items() if "ClassVar" not in annotation and name in members}
    return members - instance, instance


def _check_instance(obj: Any, kind: str, where: str) -> None:
    """The built object has every member of its Protocol."""
    class_members, instance_members = _protocol_members(PROTOCOLS[kind])
    missing = sorted(m for m in class_members | instance_members if not hasattr(obj, m))
    if missing:
        _fail(where, f"the built object does not satisfy mllm.interfaces.{PROTOCOLS[kind].__name__}: "
                     f"missing {', '.join(missing)}")


def specs_of(plugin: ModuleType | str, distribution: str) -> list[ComponentSpec]:
    """The specs a plugin module registers (in an isolated registry, no entry points)."""
    from mllm.plugins.registry import Registry

    registry = Registry(autoload=False, builtins=False)
    ok = registry.register_plugin(_import(plugin), distribution=distribution)
    if not ok:
        failure = registry.failures[-1]
        raise ConformanceError(f"{_module_name(plugin)}: registering failed: {failure.cause}\n{failure.detail}")
    return registry.specs()


@dataclass
class _Examples:
    examples: Mapping[str, Example]
    judges: Mapping[str, Any]

    def config_values(self, spec: ComponentSpec, impl: Any, tmp_path: Path) -> dict[str, Any]:
        given = self.examples.get(f"{spec.kind}:{spec.name}", self.examples.get(spec.name))
        if given is None:
            given = impl.example_config if isinstance(impl, interfaces.HasExampleConfig) else {}
        values = dict(given(tmp_path) if callable(given) else given)
        if spec.kind == "stage_kind":
            values = {"id": "example", "kind": spec.name, **values}
        return values

    def judge(self, spec: ComponentSpec) -> Any:
        return self.judges.get(f"{spec.kind}:{spec.name}", self.judges.get(spec.name))


def _build_config(spec: ComponentSpec, values: Mapping[str, Any], where: str) -> Any:
    from pydantic import ValidationError

    config_cls = spec.load_config()
    if config_cls is None:
        if values:
            _fail(where, f"example values {sorted(values)} were given but the spec names no config class")
        return None
    try:
        return config_cls.model_validate(dict(values))
    except ValidationError as error:
        _fail(where, f"the example config values {dict(values)!r} do not validate:\n{error}\n"
                     "Declare working values with an `example_config(cls, tmp_path)` classmethod on the "
                     "implementation, or pass examples={...} to the kit")


def _construct(spec: ComponentSpec, config: Any, judge: Any = None) -> Any:
    impl = spec.load()
    kwargs = {}
    if judge is not None and "judge" in inspect.signature(impl).parameters:
        kwargs["judge"] = judge
    return impl(config, **kwargs) if config is not None else impl(**kwargs)


# -- the checks -----------------------------------------------------------------------


def check_imports_without_torch(module_name: str) -> None:
    """Import ``module_name`` in a fresh interpreter; torch & co must stay out of ``sys.modules``."""
    code = (
        "import importlib, json, sys\n"
        f"importlib.import_module({module_name!r})\n"
        f"print(json.dumps([m for m in {list(HEAVY_MODULES)!r} if m in sys.modules]))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    if result.returncode != 0:
        _fail(module_name, f"importing it failed:\n{result.stderr.strip()}")
    heavy = json.loads(result.stdout.strip().splitlines()[-1])
    if heavy:
        _fail(module_name, f"importing the plugin module imports {', '.join(heavy)}; a plugin module only "
                           "registers specs (strings): move heavy imports into the implementation modules")


def check_registers(plugin: ModuleType | str, distribution: str) -> None:
    specs = specs_of(plugin, distribution)
    if not specs:
        _fail(_module_name(plugin), "registers no component; implement a hook such as mllm_register_datasets "
                                    "with @mllm.hookimpl and call register(ComponentSpec(...))")


def check_resolves(spec: ComponentSpec) -> None:
    where = f"{spec.kind} {spec.name!r}"
    impl = spec.load()
    if not callable(impl):
        _fail(where, f"impl {spec.impl!r} is not a class or callable")
    config_cls = spec.load_config()
    if config_cls is not None and not (isinstance(config_cls, type) and hasattr(config_cls, "model_validate")):
        _fail(where, f"config {spec.config!r} is not a pydantic model class; subclass "
                     "mllm.interfaces.ComponentConfig (or DatasetConfig for datasets)")


def check_protocol(spec: ComponentSpec) -> None:
    from mllm.records import RECORD_KINDS

    where = f"{spec.kind} {spec.name!r} ({spec.impl})"
    impl = spec.load()
    protocol = PROTOCOLS[spec.kind]
    class_members, _ = _protocol_members(protocol)
    wanted = {name: protocol for name in class_members}
    if spec.kind in CLASS_PROTOCOLS:
        wanted.update({name: CLASS_PROTOCOLS[spec.kind] for name in _protocol_members(CLASS_PROTOCOLS[spec.kind])[0]})
    missing = sorted(m for m in wanted if not hasattr(impl, m))
    if missing:
        names = " and ".join(sorted({f"mllm.interfaces.{wanted[m].__name__}" for m in missing}))
        _fail(where, f"does not satisfy {names}: missing {', '.join(missing)}")
    for name, owner in wanted.items():
        if "ClassVar" not in _protocol_annotations(owner).get(name, "") and not callable(getattr(impl, name)):
            _fail(where, f"{name} must be a method (mllm.interfaces.{owner.__name__})")
    for capability in CAPABILITIES.get(spec.kind, ()):
        if not isinstance(impl, capability):
            continue
        methods, _ = _protocol_members(capability)
        for name in sorted(methods):
            if "ClassVar" not in _protocol_annotations(capability).get(name, "") and not callable(getattr(impl, name)):
                _fail(where, f"{name} must be a method (optional capability mllm.interfaces.{capability.__name__})")
    if spec.kind in ("dataset", "method"):
        if impl.record_kind not in RECORD_KINDS:
            _fail(where, f"record_kind {impl.record_kind!r} is not one of {sorted(RECORD_KINDS)}")
    if spec.kind == "benchmark" and isinstance(impl, interfaces.ScoresFromFiles):
        _check_score_inputs(impl, where)
    if spec.kind == "benchmark":
        keys = impl.metric_keys
        if not keys or isinstance(keys, str) or not all(isinstance(k, str) for k in keys):
            _fail(where, f"metric_keys must be a non-empty tuple of metric names, got {keys!r}")
    if spec.kind == "stage_kind":
        from mllm.pipeline.config import StageConfig

        config_cls = spec.load_config()
        if config_cls is not None and not issubclass(config_cls, StageConfig):
            _fail(where, f"config {spec.config!r} must subclass mllm.pipeline.config.StageConfig")


def _check_score_inputs(impl: Any, where: str) -> None:
    """``score_inputs`` (the file options ``mllm eval score BENCH`` shows) names keywords of ``score_files``."""
    declared = getattr(impl, "score_inputs", None)
    if declared is None:
        _fail(where, "has score_files but no score_inputs; declare its file options as a class attribute "
                     "score_inputs = {'answers': 'what the file is', ...} (mllm eval score BENCH --help lists them)")
    if not isinstance(declared, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in declared.items()):
        _fail(where, f"score_inputs must map each file option to a description (str -> str), got {declared!r}")
    params = inspect.signature(impl.score_files).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    unknown = sorted(k for k in declared if k not in params and not takes_any)
    if unknown:
        _fail(where, f"score_inputs declares {', '.join(unknown)}, which score_files does not take as keywords")


def check_config(spec: ComponentSpec, examples: _Examples) -> None:
    import yaml
    from pydantic import ValidationError

    where = f"{spec.kind} {spec.name!r} config ({spec.config})"
    config_cls = spec.load_config()
    if config_cls is None:
        return
    with tempfile.TemporaryDirectory(prefix="mllm-check-") as tmp:
        values = examples.config_values(spec, spec.load(), Path(tmp))
        config = _build_config(spec, values, where)
        dumped = config.model_dump(mode="json", by_alias=True)
        try:
            text = yaml.safe_dump(dumped, sort_keys=False)
        except yaml.YAMLError as error:
            _fail(where, f"model_dump(mode='json') is not plain YAML data: {error}")
        try:
            again = config_cls.model_validate(yaml.safe_load(text))
        except ValidationError as error:
            _fail(where, f"a YAML round trip does not validate:\n{text}\n{error}")
        if again != config:
            _fail(where, f"a YAML round trip changes the config:\nbefore: {config!r}\nafter:  {again!r}")
        try:
            config_cls.model_validate({**dumped, UNKNOWN_KEY: 1})
        except ValidationError as error:
            if not any(e["type"] == "extra_forbidden" for e in error.errors()):
                _fail(where, f"an unknown key fails for another reason than extra_forbidden: {error}")
        else:
            _fail(where, "accepts unknown keys; subclass mllm.interfaces.ComponentConfig "
                         "(model_config = ConfigDict(extra='forbid'))")
        if spec.kind == "dataset":
            missing = [k for k in ("on_bad_row", "max_bad_fraction") if k not in config_cls.model_fields]
            if missing:
                _fail(where, f"has no {', '.join(missing)}; subclass mllm.interfaces.DatasetConfig "
                             "so the dataset follows the bad-row policy")


def check_records(spec: ComponentSpec, examples: _Examples) -> None:
    from mllm.data.badrows import DataReport
    from mllm.records import RECORD_KINDS

    where = f"dataset {spec.name!r}"
    with tempfile.TemporaryDirectory(prefix="mllm-check-") as tmp:
        impl = spec.load()
        config = _build_config(spec, examples.config_values(spec, impl, Path(tmp)), where)
        dataset = _construct(spec, config)
        _check_instance(dataset, "dataset", where)
        record_kind = dataset.record_kind
        if record_kind not in RECORD_KINDS:
            _fail(where, f"record_kind {record_kind!r} is not one of {sorted(RECORD_KINDS)}")
        listed = impl.data_files(config) if isinstance(impl, interfaces.HasDataFiles) and config is not None else ()
        for path in listed:
            if not Path(path).exists():
                _fail(where, f"data_files lists {os.fspath(path)!r}, which does not exist")
        report = DataReport(source=where, on_bad_row="error")
        record_cls = RECORD_KINDS[record_kind]
        records = list(islice(dataset.records(report), RECORDS_CHECKED))
        if not records:
            _fail(where, "yielded no records with the example config")
        seen: set[str] = set()
        for record in records:
            if not isinstance(record, record_cls):
                _fail(where, f"record_kind is {record_kind!r} but it yielded a {type(record).__name__}")
            if record.id in seen:
                _fail(where, f"record id {record.id!r} appears twice; ids must be unique")
            seen.add(record.id)
        if report.total == 0:
            _fail(where, "report.row() was never entered; build each record inside "
                         "`with report.row(file=..., row=...):` so the bad-row policy applies")


@dataclass
class ExampleStageContext(TrainContext):
    """The :class:`mllm.pipeline.runner.TrainContext` a method's ``prepare(context)`` gets in the
    ``train-step`` check: ``stage_dir``, ``records``, ``adapter``, ``fingerprint``, ``seed``,
    ``resume``, ``logger``, ``metrics`` and default ``train`` settings. There is no pipeline:
    ``runner``, ``stage`` and ``folder`` are ``None``. Build it with :meth:`create`.
    """

    example_stage_dir: Path | None = None

    @classmethod
    def create(cls, stage_dir: Path, records: list[Any], adapter: Any) -> "ExampleStageContext":
        import logging

        return cls(None, None, None, "conformance", False, logging.getLogger("mllm.testing"),  # type: ignore[arg-type]
                   records=list(records), adapter=adapter, example_stage_dir=Path(stage_dir))

    @property
    def stage_dir(self) -> Path:
        return self.example_stage_dir

    @property
    def seed(self) -> int:
        return 0

    @property
    def train(self) -> Any:
        from mllm.training.settings import TrainSettings

        return TrainSettings()


def check_train_step(spec: ComponentSpec, examples: _Examples) -> None:
    import torch

    from mllm.testing.samples import example_records
    from mllm.testing.tiny import load_tiny_llava

    where = f"method {spec.name!r}"
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="mllm-check-") as tmp:
        tmp_path = Path(tmp)
        impl = spec.load()
        config = _build_config(spec, examples.config_values(spec, impl, tmp_path), where)
        method = _construct(spec, config)
        _check_instance(method, "method", where)
        records = list(impl.example_records(tmp_path / "records") if isinstance(impl, interfaces.HasExampleRecords)
                       else example_records(method.record_kind, tmp_path / "records"))
        adapter = load_tiny_llava()
        model = method.setup(adapter)
        if model is None:
            _fail(where, "setup(adapter) returned None; return the module to train (usually adapter.model)")
        (tmp_path / "stage").mkdir()
        method.prepare(ExampleStageContext.create(tmp_path / "stage", records, adapter))
        model.train()
        trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        if not trainable:
            _fail(where, "setup() left no trainable parameter")
        before = [p.detach().clone() for _, p in trainable]
        batch = method.collate(records)
        result = method.loss(model, batch)
        if not (isinstance(result, tuple) and len(result) == 2):
            _fail(where, f"loss() must return (loss tensor, metrics dict), got {type(result).__name__}")
        loss, metrics = result
        if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
            _fail(where, f"the loss must be a scalar tensor, got {loss!r}")
        if not torch.isfinite(loss):
            _fail(where, f"the loss is not finite: {loss.item()}")
        if not isinstance(metrics, Mapping):
            _fail(where, f"metrics must be a dict of name -> number, got {type(metrics).__name__}")
        for key, value in metrics.items():
            try:
                float(value)
            except (TypeError, ValueError):
                _fail(where, f"metric {key!r} is not a number: {value!r}")
        if not loss.requires_grad:
            _fail(where, "the loss does not depend on any trainable parameter")
        loss.backward()
        grads = [(n, p.grad) for n, p in trainable if p.grad is not None]
        if not grads:
            _fail(where, "backward() gave no gradient to any trainable parameter")
        bad = [n for n, g in grads if not torch.isfinite(g).all()]
        if bad:
            _fail(where, f"non-finite gradients in {', '.join(bad[:5])}")
        if all(float(g.abs().sum()) == 0.0 for _, g in grads):
            _fail(where, "every gradient is zero")
        torch.optim.SGD([p for _, p in trainable], lr=1e-2).step()
        if all(torch.equal(b, p.detach()) for b, (_, p) in zip(before, trainable)):
            _fail(where, "one optimizer step changed no trainable weight")


def _answer(item: Any) -> str:
    if item.answer:
        return item.answer
    if item.choices:
        return item.choices[0]
    return "yes"


def check_score(spec: ComponentSpec, examples: _Examples) -> None:
    where = f"benchmark {spec.name!r}"
    with tempfile.TemporaryDirectory(prefix="mllm-check-") as tmp:
        impl = spec.load()
        config = _build_config(spec, examples.config_values(spec, impl, Path(tmp)), where)
        benchmark = _construct(spec, config, examples.judge(spec))
        _check_instance(benchmark, "benchmark", where)
        mode = benchmark.answer_mode if isinstance(benchmark, interfaces.ChoosesAnswerMode) else "generate"
        if mode not in ("generate", "choice"):
            _fail(where, f"answer_mode is {mode!r}; it must be 'generate' or 'choice'")
        budget = benchmark.max_new_tokens if isinstance(benchmark, interfaces.HasAnswerBudget) else 1
        if not isinstance(budget, int) or budget < 1:
            _fail(where, f"max_new_tokens must be a positive int, got {budget!r}")
        items = list(benchmark.items())
        if len(items) < 2:
            _fail(where, f"items() gave {len(items)} item(s) with the example config; the check needs two")
        items = items[:2]
        if mode == "choice" and any(not item.choices for item in items):
            _fail(where, "answer_mode is 'choice' but an item has no choices")
        metrics = benchmark.score(items, {item.id: _answer(item) for item in items})
        if not isinstance(metrics, Mapping):
            _fail(where, f"score() must return a dict of metric -> number, got {type(metrics).__name__}")
        declared = tuple(benchmark.metric_keys)
        missing = [k for k in declared if k not in metrics]
        if missing:
            _fail(where, f"score() did not return declared metric_keys {missing}; it returned {sorted(metrics)}. "
                         "Declare only keys every scoring returns (an instance may narrow metric_keys to its config)")
        for key in declared:
            try:
                value = float(metrics[key])
            except (TypeError, ValueError):
                _fail(where, f"metric {key!r} is not a number: {metrics[key]!r}")
            if math.isnan(value):
                _fail(where, f"metric {key!r} is NaN on two answered items")


def check_complete(spec: ComponentSpec, examples: _Examples) -> None:
    where = f"judge {spec.name!r}"
    with tempfile.TemporaryDirectory(prefix="mllm-check-") as tmp:
        impl = spec.load()
        config = _build_config(spec, examples.config_values(spec, impl, Path(tmp)), where)
        judge = _construct(spec, config)
        _check_instance(judge, "judge", where)
        reply = judge.complete("Is the sky blue? Answer yes or no.", system="You are a careful judge.")
        if not isinstance(reply, str):
            _fail(where, f"complete() must return a str, got {type(reply).__name__}")


def check_load(spec: ComponentSpec, examples: _Examples) -> None:
    where = f"model {spec.name!r}"
    with tempfile.TemporaryDirectory(prefix="mllm-check-") as tmp:
        tmp_path = Path(tmp)
        impl = spec.load()
        config = _build_config(spec, examples.config_values(spec, impl, tmp_path), where)
        adapter = impl.from_config(config, seed=0)
        _check_instance(adapter, "model", where)
        names = adapter.module_names()
        for part in ("vision_tower", "projector", "language_model"):
            if part not in names:
                _fail(where, f"module_names() has no {part!r}")
            try:
                adapter.model.get_submodule(names[part])
            except AttributeError:
                _fail(where, f"module_names()[{part!r}] = {names[part]!r} is not a module of adapter.model")
        adapter.save(tmp_path / "saved")
        loaded = impl.load(tmp_path / "saved")
        before = sorted(n for n, _ in adapter.model.named_parameters())
        after = sorted(n for n, _ in loaded.model.named_parameters())
        if before != after:
            _fail(where, "save() then load() gives a model with other parameters")


def _stages_pipeline(model: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """A pipeline running every built-in stage kind that uses a model, with the kit's components."""
    from mllm.data.recordio import write_records
    from mllm.testing.samples import example_records

    data = {}
    for kind in ("conversation", "preference"):
        path = tmp_path / f"{kind}.jsonl"
        write_records(path, example_records(kind, tmp_path / "images", count=2))
        data[kind] = {"name": "records-jsonl", "path": str(path), "kind": kind}
    train = {"max_steps": 1, "batch_size": 2, "logging_steps": 1}
    questions = str(tmp_path / "questions")
    return {"name": "conformance", "model": model, "stages": [
        {"id": "sft", "kind": "train", "method": {"name": "conformance-sft"}, "data": data["conversation"],
         "train": train},
        {"id": "dpo", "kind": "train", "from": "sft", "method": {"name": "conformance-dpo"},
         "data": data["preference"], "train": train},
        {"id": "answers", "kind": "generate", "from": "dpo", "data": data["conversation"], "max_new_tokens": 3},
        {"id": "samples", "kind": "generate", "from": "dpo", "data": data["conversation"], "max_new_tokens": 3,
         "num_samples": 2, "temperature": 1.0, "seed": 0},
        {"id": "eval", "kind": "eval", "models": ["dpo"], "max_new_tokens": 3, "benchmarks": [
            {"name": "conformance-qa", "folder": questions, "answer_mode": "generate"},
            {"name": "conformance-qa", "folder": questions, "answer_mode": "choice"}]},
    ]}


def check_stages(spec: ComponentSpec, examples: _Examples, plugin: ModuleType | str | None = None) -> None:
    """Run the train (SFT-like, DPO-like), generate (greedy, sampled) and eval (generate, choice)
    stages on the model (see the module docstring)."""
    import yaml

    from mllm.pipeline.config import load_pipeline
    from mllm.pipeline.runner import PipelineRunner
    from mllm.plugins.registry import CORE_DISTRIBUTION
    from mllm.testing import components
    from mllm.testing.fixtures import IsolatedRegistry

    where = f"model {spec.name!r}"
    with tempfile.TemporaryDirectory(prefix="mllm-check-") as tmp:
        tmp_path = Path(tmp)
        values = examples.config_values(spec, spec.load(), tmp_path)
        registry = IsolatedRegistry()
        try:
            if spec.distribution != CORE_DISTRIBUTION and plugin is not None:
                registry.register(_import(plugin), distribution=spec.distribution)
            registry.register(components.plugin, distribution=components.KIT_DISTRIBUTION)
            model = {**values, "name": f"{spec.distribution}:{spec.name}"}
            path = tmp_path / "pipeline.yaml"
            path.write_text(yaml.safe_dump(_stages_pipeline(model, tmp_path), sort_keys=False))
            current: list[str] = ["(loading the pipeline)"]

            def follow(plan: Any, event: str) -> None:
                current[0] = plan.stage_id

            try:
                runner = PipelineRunner(load_pipeline(path, registry, []), registry, tmp_path / "runs", on_event=follow)
                runner.run()
            except Exception as error:
                _fail(where, f"stage {current[0]!r} of the kit's pipeline failed: {type(error).__name__}: {error}\n"
                             "The adapter must implement mllm.interfaces.ModelAdapter as the built-in stages use it "
                             "(see mllm.testing.components for what each stage calls)")
            run_dir = runner.run_dir
            for stage in ("answers", "samples"):
                lines = (run_dir / stage / "records.jsonl").read_text().splitlines()
                if len(lines) != (2 if stage == "answers" else 4):
                    _fail(where, f"generate stage {stage!r} wrote {len(lines)} answers")
            metrics = json.loads((run_dir / "eval" / "metrics.json").read_text())["dpo"]
            if sorted(metrics) != ["conformance-qa", "conformance-qa_2"]:
                _fail(where, f"the eval stage scored {sorted(metrics)}, not both benchmarks")
        finally:
            registry.close()


BEHAVIOUR_CHECKS: dict[str, tuple[tuple[str, Callable[..., None]], ...]] = {
    "dataset": (("records", check_records),),
    "method": (("train-step", check_train_step),),
    "benchmark": (("score", check_score),),
    "judge": (("complete", check_complete),),
    "model": (("load", check_load), ("stages", check_stages)),
}


def plugin_checks(plugin: ModuleType | str, *, distribution: str | None = None,
                  examples: Mapping[str, Example] | None = None, judges: Mapping[str, Any] | None = None,
                  kinds: Iterable[str] | None = None, names: Iterable[str] | None = None) -> list[Check]:
    """The checks of a plugin module (see the module docstring), without running them.

    Args:
        plugin: the plugin module (the entry point's value), or its dotted name.
        distribution: the name it registers under (default: the installed distribution
            that provides the module, else ``plugin-under-test``).
        examples: config values per component, ``{"kind:name" or "name": dict | callable(tmp_path)}``,
            overriding the implementation's ``example_config``.
        judges: judge objects for benchmarks whose constructor takes ``judge=``.
        kinds, names: only check components of these kinds / names.
    """
    module_name = _module_name(plugin)
    distribution = distribution or _guess_distribution(module_name)
    context = _Examples(dict(examples or {}), dict(judges or {}))
    checks = [
        Check(f"imports-without-torch[{module_name}]", lambda: check_imports_without_torch(module_name)),
        Check(f"registers[{module_name}]", lambda: check_registers(plugin, distribution)),
    ]
    wanted_kinds = set(kinds) if kinds is not None else None
    wanted_names = set(names) if names is not None else None
    for spec in specs_of(plugin, distribution):
        if wanted_kinds is not None and spec.kind not in wanted_kinds:
            continue
        if wanted_names is not None and spec.name not in wanted_names:
            continue
        label = f"{spec.kind}:{spec.name}"
        checks.append(Check(f"resolves[{label}]", lambda s=spec: check_resolves(s)))
        checks.append(Check(f"protocol[{label}]", lambda s=spec: check_protocol(s)))
        if spec.config is not None:
            checks.append(Check(f"config[{label}]", lambda s=spec: check_config(s, context)))
        for check_name, function in BEHAVIOUR_CHECKS.get(spec.kind, ()):
            run = (lambda s=spec, f=function: f(s, context, plugin)) if function is check_stages \
                else (lambda s=spec, f=function: f(s, context))
            checks.append(Check(f"{check_name}[{label}]", run))
    return checks


def check_plugin(plugin: ModuleType | str, **options: Any) -> list[str]:
    """Run every conformance check of ``plugin``; raise one :class:`ConformanceError` listing all failures.

    Takes the options of :func:`plugin_checks`. Returns the ids of the checks that ran.
    """
    failures: list[str] = []
    checks = plugin_checks(plugin, **options)
    for check in checks:
        try:
            check()
        except Exception as error:  # report every failing check, not just the first
            failures.append(f"- {check.id}: {type(error).__name__}: {error}")
    if failures:
        raise ConformanceError(f"{len(failures)} of {len(checks)} conformance checks failed for "
                               f"{_module_name(plugin)}:\n" + "\n".join(failures))
    return [check.id for check in checks]


def parametrize_with_checks(plugin: ModuleType | str, **options: Any) -> Any:
    """A ``pytest.mark.parametrize("check", ...)`` with one test per conformance check.

    ::

        @parametrize_with_checks("mllm_mine.plugin")
        def test_conformance(check):
            check()
    """
    import pytest

    checks = plugin_checks(plugin, **options)
    return pytest.mark.parametrize("check", checks, ids=[check.id for check in checks])


def run_checks(checks: Sequence[Check]) -> None:
    """Run ``checks`` in order (the first failure raises)."""
    for check in checks:
        check()
