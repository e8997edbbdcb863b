"""Runs a validated pipeline: stage order, fingerprints, skip / resume / re-run.

Each stage's fingerprint hashes its resolved config, the fingerprints of the stages it
reads, the size and mtime of the data files its datasets read, and the versions of the
plugins it uses. A second ``mllm run`` skips stages whose completion marker carries the
same fingerprint, resumes a stage that started with the same fingerprint but did not
finish, and re-runs (after moving the old folder to ``.history/``) a stage whose
fingerprint changed; since fingerprints chain, everything downstream re-runs too.
The model every stage starts from is the implicit stage ``init``.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal

from mllm import __version__
from mllm.errors import MissingFileError
from mllm.interfaces import HasDataFiles, HasSourcePath, RunsDistributed
from mllm.pipeline.config import INIT, Pipeline, ResolvedComponent, Stage, stage_inputs
from mllm.pipeline.progress import FILE_ONLY
from mllm.pipeline.runfolder import (
    RunFolderError,
    RunLock,
    StageFolder,
    StageProcessesFailed,
    atomic_write_text,
    check_run_folder,
    copy_stage_folder,
    create_run_folder,
    find_finished_stage,
    redact,
)
from mllm.pipeline.secrets import RedactingFilter
from mllm.plugins.registry import Registry

if TYPE_CHECKING:
    from mllm.training.settings import TrainSettings

logger = logging.getLogger("mllm")

MODEL_SUBDIR = "model"
Action = Literal["run", "skip", "resume", "rerun", "force", "reuse"]


def hash_json(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def file_stats(paths: list[Path]) -> list[list[Any]]:
    """(path, size, mtime_ns) per file; a folder contributes every file below it."""
    stats = []
    for path in paths:
        path = Path(path)
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            try:
                st = file.stat()
                stats.append([str(file), st.st_size, st.st_mtime_ns])
            except OSError:
                stats.append([str(file), None, None])
    return stats


@dataclass
class StagePlan:
    """What ``mllm run`` will do with one stage, and why."""

    stage_id: str
    kind: str
    fingerprint: str
    action: Action
    reason: str = ""


@dataclass
class StageContext:
    """What a stage kind's ``run(context)`` gets (:class:`mllm.interfaces.StageKind`).

    Fields: the ``runner`` (plans and runs the pipeline), the validated ``stage`` (its
    ``config``, ``kind_spec`` and resolved ``components``), its ``folder`` in the run
    folder, the stage ``fingerprint``, ``resume`` (an interrupted run with the same
    fingerprint continues), the stage's ``logger`` (also written to ``log.txt``) and
    ``metrics``, which the stage sets and the runner writes to ``metrics.json``.
    """

    runner: "PipelineRunner"
    stage: Stage
    folder: StageFolder
    fingerprint: str
    resume: bool
    logger: logging.Logger
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def stage_dir(self) -> Path:
        """The stage's output folder, ``runs/<pipeline>/<stage id>/``."""
        return self.folder.path

    @property
    def pipeline(self) -> Pipeline:
        return self.runner.pipeline

    @property
    def registry(self) -> Registry:
        return self.runner.registry

    @property
    def seed(self) -> int:
        """The stage's ``seed:`` (set per copy by ``seeds:``), else the pipeline's global seed."""
        own = getattr(self.stage.config, "seed", None)
        return own if own is not None else self.runner.pipeline.config.seed

    def model_dir(self, stage_id: str) -> Path:
        return self.runner.model_dir(stage_id)

    def stage_dir_of(self, stage_id: str) -> Path:
        return self.runner.run_dir / stage_id

    def load_model(self, stage_id: str) -> Any:
        """The model adapter saved by stage ``stage_id`` (or the pipeline's ``init``)."""
        return self.runner.load_model(stage_id)

    def model_ids(self) -> list[str]:
        """``init`` and the ids of stages that produce a model, in pipeline order."""
        return [INIT] + [s.id for s in self.runner.pipeline.stages if getattr(s.config, "produces_model", False)]


@dataclass
class TrainContext(StageContext):
    """What a method's ``prepare(context)`` gets (:class:`mllm.interfaces.Method`): the train
    stage's context plus the training ``records`` (``prepare`` may replace them, e.g. to keep
    the best candidates) and the ``adapter`` the method was set up with. ``train`` is the
    stage's ``train:`` settings."""

    records: list[Any] = field(default_factory=list)
    adapter: Any = None

    @property
    def train(self) -> TrainSettings:
        return self.stage.config.train

    @classmethod
    def of(cls, context: StageContext, records: list[Any], adapter: Any) -> "TrainContext":
        """The train context of a stage context; both share one ``metrics`` dict."""
        return cls(context.runner, context.stage, context.folder, context.fingerprint, context.resume,
                   context.logger, context.metrics, records=list(records), adapter=adapter)


class PipelineRunner:
    """Plans and runs a pipeline in ``runs_dir/<name>/``."""

    def __init__(self, pipeline: Pipeline, registry: Registry, runs_dir: Path = Path("runs"),
                 force: tuple[str, ...] = (), on_event: Callable[[StagePlan, str], None] | None = None,
                 launch: Any = None) -> None:
        self.pipeline = pipeline
        # mllm.pipeline.launch.LaunchSettings: distributed stage kinds run under torchrun when it asks for > 1 process
        self.launch = launch
        self.registry = registry
        self.run_dir = Path(runs_dir) / pipeline.name
        # with seeds:/sweep:, a stage as written (or an arm) names all its copies: --force sft forces sft-s0, sft-s1, ...
        copies = getattr(pipeline, "copies", {}) or {}
        self.force = {c for f in force for c in ([f] if f not in {o.template for o in copies.values()} | {
            o.arm for o in copies.values()} else [c for c, o in copies.items() if f in (o.template, o.arm)])}
        self.on_event = on_event or (lambda plan, event: None)
        unknown = self.force - {s.id for s in pipeline.stages} - {INIT}
        if unknown:
            from mllm.pipeline.config import ConfigError

            raise ConfigError(f"--force names unknown stage(s) {sorted(unknown)}; stages are "
                              f"{[INIT] + [s.id for s in pipeline.stages]}")
        try:  # never write into (or move things out of) a folder that is not ours
            check_run_folder(self.run_dir)
        except RunFolderError as error:
            from mllm.pipeline.config import ConfigError

            raise ConfigError(str(error)) from None
        self._rerun_notes: dict[str, str] = {}
        self._reuse_sources: dict[str, Path] = {}  # stage id -> a finished stage of another run (plan "reuse")
        self._fingerprints: dict[str, str] = {}
        self._model_cls: Any = None
        self._init_done: set[str] = set()
        self._problems: list[Any] | None = None  # the pre-flight's, found once

    # -- models -------------------------------------------------------------------------

    @property
    def model_class(self) -> Any:
        if self._model_cls is None:
            self._model_cls = self.pipeline.model.spec.load()
        return self._model_cls

    def _init_source(self) -> Path | None:
        if isinstance(self.model_class, HasSourcePath):
            return self.model_class.source_path(self.pipeline.model.config)
        return None

    def model_dir(self, stage_id: str) -> Path:
        if stage_id == INIT:
            source = self._init_source()
            if source is not None:
                return Path(source)
            self._ensure_init()
        return self.run_dir / stage_id / MODEL_SUBDIR

    def _ensure_init(self) -> None:
        """Build and save the start model the first time a stage asks for it.

        ``init`` is planned like a stage but runs lazily, so pipelines whose stages never
        load a model (score-only evaluation, reports) never build one."""
        plan = self._plan_one(INIT, "model", self.init_fingerprint(), INIT in self._forced())
        if plan.action == "skip" or INIT in self._init_done:
            return
        create_run_folder(self.run_dir)
        folder = StageFolder(self.run_dir, INIT)
        if folder.exists():
            moved = folder.archive()
            logger.warning("stage init: %s; previous output moved to %s", plan.reason, moved)
        if plan.action == "reuse" and self._reuse(folder, plan):
            self._init_done.add(INIT)
            return
        self.on_event(plan, "started")
        self._run_init(folder, plan)
        self._init_done.add(INIT)
        self.on_event(plan, "finished")

    def load_model(self, stage_id: str) -> Any:
        path = self.model_dir(stage_id)
        if not path.exists():
            raise MissingFileError(f"stage {stage_id!r} has no saved model at {path}; does it produce one?")
        if stage_id == INIT and self._init_source() is not None:
            # a user's own checkpoint: the pipeline's model keys (template, ...) apply to it
            return self.model_class.load(path, config=self.pipeline.model.config)
        return self.model_class.load(path)

    # -- fingerprints -------------------------------------------------------------------

    def _component_fingerprint(self, component: ResolvedComponent) -> dict[str, Any]:
        description = component.describe()
        impl = component.spec.load()
        if isinstance(impl, HasDataFiles) and component.config is not None:
            description["files"] = file_stats([Path(p) for p in impl.data_files(component.config)])
        return description

    def init_fingerprint(self) -> str:
        if INIT not in self._fingerprints:
            model = self.pipeline.model
            payload: dict[str, Any] = {"model": model.describe(), "seed": self.pipeline.config.seed}
            source = self._init_source()
            if source is not None:
                payload["files"] = file_stats([Path(source)])
            self._fingerprints[INIT] = hash_json(payload)
        return self._fingerprints[INIT]

    def fingerprint(self, stage: Stage) -> str:
        if stage.id not in self._fingerprints:
            components: dict[str, Any] = {}
            for key, value in stage.components.items():
                if isinstance(value, list):
                    components[key] = [self._component_fingerprint(c) for c in value]
                else:
                    components[key] = self._component_fingerprint(value)
            payload = {
                "core": __version__,
                "kind": [stage.kind_spec.name, stage.kind_spec.distribution, stage.kind_spec.version],
                "config": fingerprint_config(stage.config),
                "components": components,
                "inputs": {i: (self.init_fingerprint() if i == INIT else self.fingerprint(self.pipeline.stage(i)))
                           for i in stage_inputs(stage)},
                "seed": self.pipeline.config.seed,
            }
            self._fingerprints[stage.id] = hash_json(payload)
        return self._fingerprints[stage.id]

    # -- planning -----------------------------------------------------------------------

    def _forced(self) -> set[str]:
        """Forced stages and every stage downstream of them."""
        forced = set(self.force)
        for stage in self.pipeline.stages:
            if forced & set(stage_inputs(stage)):
                forced.add(stage.id)
        return forced

    def _plan_one(self, stage_id: str, kind: str, fingerprint: str, forced: bool) -> StagePlan:
        folder = StageFolder(self.run_dir, stage_id)
        if forced and folder.exists():
            return StagePlan(stage_id, kind, fingerprint, "force", "forced with --force (or downstream of a forced stage)")
        done = folder.completed_fingerprint()
        if done == fingerprint:
            return StagePlan(stage_id, kind, fingerprint, "skip", "finished, fingerprint unchanged")
        if done is None and folder.started_fingerprint() == fingerprint:
            return StagePlan(stage_id, kind, fingerprint, "resume", "interrupted; resuming")
        # a report names its run (title, links) and costs little: always written by its own run
        # (a forced stage, and what follows it, is recomputed: never copied from another run)
        source = None if kind == "report" or forced else find_finished_stage(self.run_dir.parent, stage_id, fingerprint,
                                                                    exclude=self.run_dir)
        if source is not None:  # the same stage, finished by another run: copied, not recomputed
            self._reuse_sources[stage_id] = source
            return StagePlan(stage_id, kind, fingerprint, "reuse", f"finished in {source} with the same fingerprint")
        return StagePlan(stage_id, kind, fingerprint, "rerun" if folder.exists() else "run",
                         "fingerprint changed (config, inputs or data)" if folder.exists() else "not run before")

    def plan(self) -> list[StagePlan]:
        forced = self._forced()
        plans = []
        if self._init_source() is None:
            plans.append(self._plan_one(INIT, "model", self.init_fingerprint(), INIT in forced))
        for stage in self.pipeline.stages:
            plans.append(self._plan_one(stage.id, stage.kind_spec.name, self.fingerprint(stage), stage.id in forced))
        return plans

    # -- running ------------------------------------------------------------------------

    def preflight(self) -> list[Any]:
        """The problems that would stop stages (:func:`mllm.pipeline.validation.preflight`:
        missing files and model folders, sources that write or score no records, judges
        not set up, ...), found without loading a model; ``run`` refuses to start with any."""
        if self._problems is None:
            from mllm.pipeline.validation import preflight

            self._problems = preflight(self.pipeline, self.registry)
        return self._problems

    def check(self) -> None:
        """Raise :class:`mllm.pipeline.validation.PreflightError`, a line per problem, when
        :meth:`preflight` finds any."""
        from mllm.pipeline.validation import PreflightError

        problems = self.preflight()
        if problems:
            prefix = f"{self.pipeline.path}: " if self.pipeline.path else ""
            from mllm.pipeline.expand import collapse_copies

            raise PreflightError("\n".join(f"{prefix}{line}" for line in collapse_copies(problems, self.pipeline.copies)))

    def run(self, only: set[str] | None = None, *, wait: bool = False) -> list[StagePlan]:
        """Run every stage that is not finished with its current fingerprint.

        The run folder is locked (:class:`mllm.pipeline.runfolder.RunLock`) from before the
        plan is made until the last stage ends: a second run refuses with the holder's pid,
        or, with ``wait``, waits for it and then plans from what the first one left."""
        self.check()  # every pre-flight problem at once, before anything is written or loaded
        create_run_folder(self.run_dir)  # refuses a non-empty folder without the .mllm-run marker
        if self.launch is not None and self.launch.node_rank > 0:
            return self._run_stages(only)  # node 0 holds the lock of the (shared) run folder
        with RunLock(self.run_dir, wait=wait):
            return self._run_stages(only)

    def _run_stages(self, only: set[str] | None) -> list[StagePlan]:
        plans = self.plan()
        for plan in plans:
            if only is not None and plan.stage_id not in only:
                continue
            if self.launch is not None and self.launch.node_rank > 0:
                self._follow(plan)  # another node: join distributed stages, wait for the rest
                continue
            if plan.action == "skip":
                self.on_event(plan, "skipped")
                continue
            if plan.stage_id == INIT:
                continue  # built on first use, see _ensure_init
            folder = StageFolder(self.run_dir, plan.stage_id)
            if plan.action == "reuse":
                if folder.exists():
                    logger.warning("stage %s: previous output moved to %s", plan.stage_id, folder.archive())
                if self._reuse(folder, plan):
                    continue
                plan.action, plan.reason = "run", "the finished stage to reuse is gone; running it"
            if plan.action in ("rerun", "force"):
                changed = self._what_changed(folder, self.pipeline.stage(plan.stage_id)) if plan.action == "rerun" else ""
                moved = folder.archive()
                note = f"{plan.reason}{changed}; previous output moved to {moved}"
                logger.warning("stage %s: %s", plan.stage_id, note)
                self._rerun_notes[plan.stage_id] = note
            self.on_event(plan, "started")
            started = time.monotonic()
            try:
                self._run_stage(self.pipeline.stage(plan.stage_id), folder, plan)
            except OSError as error:
                if not is_write_failure(error, self.run_dir):
                    raise
                raise cannot_write(plan.stage_id, folder.path, error) from error
            self.on_event(plan, f"finished in {time.monotonic() - started:.1f}s")
        return plans

    def _reuse(self, folder: StageFolder, plan: StagePlan) -> bool:
        """Copy the finished stage the plan found (hard links where possible); False when it is
        no longer there, finished, or free (the caller then runs the stage)."""
        source = self._reuse_sources.get(plan.stage_id)
        if source is None or StageFolder(source.parent, plan.stage_id).completed_fingerprint() != plan.fingerprint \
                or find_finished_stage(self.run_dir.parent, plan.stage_id, plan.fingerprint, self.run_dir) is None:
            return False
        linked = copy_stage_folder(source, folder.path)
        if folder.completed_fingerprint() != plan.fingerprint:  # changed while copied: never keep half a stage
            import shutil

            shutil.rmtree(folder.path, ignore_errors=True)
            return False
        note = f"reused from {source} (same fingerprint; {'hard links' if linked else 'copied'}), not recomputed"
        with open(folder.path / "log.txt", "a") as log:
            log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} INFO stage {plan.stage_id}: {note}\n")
        logger.info("stage %s: %s", plan.stage_id, note)
        self.on_event(plan, f"reused from {source}")
        return True

    @staticmethod
    def _what_changed(folder: StageFolder, stage: Stage) -> str:
        """`` (changed config keys: a.b: old -> new, ...)`` from the old ``resolved_config.yaml``."""
        import yaml

        try:
            old = yaml.safe_load((folder.path / "resolved_config.yaml").read_text())
        except (OSError, yaml.YAMLError):
            return ""
        new = redact(stage.config.model_dump(mode="json", by_alias=True))
        changes = changed_keys(old, new)
        if not changes:
            return " (config unchanged: an input stage, a data file or a plugin version changed)"
        shown = ", ".join(f"{key}: {_short(a)} -> {_short(b)}" for key, a, b in changes[:20])
        more = f", and {len(changes) - 20} more" if len(changes) > 20 else ""
        return f" (changed config keys: {shown}{more})"

    def _stage_logger(self, folder: StageFolder) -> tuple[logging.Logger, logging.Handler]:
        stage_logger = logging.getLogger(f"mllm.stage.{self.pipeline.name}.{folder.stage_id}")
        handler = logging.FileHandler(folder.path / "log.txt")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        stage_logger.addHandler(handler)
        stage_logger.setLevel(logging.INFO)
        if not any(isinstance(f, RedactingFilter) for f in stage_logger.filters):
            stage_logger.addFilter(RedactingFilter())  # key-shaped text never reaches log.txt or the console
        return stage_logger, handler

    def _run_init(self, folder: StageFolder, plan: StagePlan) -> None:
        folder.start(plan.fingerprint, {"model": self.pipeline.raw.get("model"), "seed": self.pipeline.config.seed})
        adapter = self.model_class.from_config(self.pipeline.model.config, seed=self.pipeline.config.seed)
        target = folder.path / MODEL_SUBDIR
        adapter.save(target)
        folder.finish(plan.fingerprint)

    def _run_stage(self, stage: Stage, folder: StageFolder, plan: StagePlan) -> None:
        resolved = stage.config.model_dump(mode="json", by_alias=True)
        folder.start(plan.fingerprint, resolved)
        stage_logger, handler = self._stage_logger(folder)
        if stage.id in self._rerun_notes:
            # for log.txt: the console got it from the runner's own warning
            stage_logger.warning("re-run: %s", self._rerun_notes.pop(stage.id), extra={FILE_ONLY: True})
        try:
            kind_impl = stage.kind_spec.load()
            context = StageContext(self, stage, folder, plan.fingerprint, plan.action == "resume", stage_logger)
            from mllm.data.recordio import CURRENT_RUN_DIR  # the stage-records dataset reads earlier stages' records

            self._write_environment(stage, folder)
            token = CURRENT_RUN_DIR.set(self.run_dir)
            try:
                if self._launches(kind_impl):
                    self._run_distributed(stage, folder, plan, context)
                else:
                    kind_impl(stage.config, stage.components).run(context)
            finally:
                CURRENT_RUN_DIR.reset(token)
            if context.metrics:
                atomic_write_text(folder.path / "metrics.json", json.dumps(context.metrics, indent=2, default=float))
            folder.finish(plan.fingerprint)
        finally:
            stage_logger.removeHandler(handler)
            handler.close()


    # -- several processes (mllm.pipeline.launch) ---------------------------------------------------

    def _launches(self, kind_impl: Any) -> bool:
        """Whether this stage kind runs as torchrun processes (``distributed = True`` on the kind)."""
        return bool(self.launch is not None and self.launch.distributed and isinstance(kind_impl, RunsDistributed)
                    and kind_impl.distributed)

    def _write_environment(self, stage: Stage, folder: StageFolder) -> None:
        """``environment.json``: processes, precision, DeepSpeed, attention, library versions."""
        try:
            from mllm.pipeline.environment import stage_environment

            info = stage_environment(stage.config, self.launch if self._launches(stage.kind_spec.load()) else None)
            atomic_write_text(folder.path / "environment.json", json.dumps(info, indent=2, default=str))
        except Exception as error:  # a report must never stop a stage
            logger.warning("stage %s: environment.json not written (%s)", stage.id, error)

    def _run_distributed(self, stage: Stage, folder: StageFolder, plan: StagePlan, context: StageContext) -> None:
        from mllm.pipeline.launch import RESULT_FILE, run_torchrun, write_launch_file

        for needed in stage_inputs(stage):
            if needed == INIT:
                self.model_dir(INIT)  # built here once, before the processes start
        (folder.path / RESULT_FILE).unlink(missing_ok=True)
        launch_file = write_launch_file(pipeline_raw=self.pipeline.raw, pipeline_path=self.pipeline.path,
                                        runs_dir=self.run_dir.parent, stage_id=stage.id, fingerprint=plan.fingerprint,
                                        resume=plan.action == "resume", node_rank=self.launch.node_rank)
        context.logger.info("stage %s: %d processes (%d per node, %d nodes) through torchrun", stage.id,
                            self.launch.world_size, self.launch.nproc_per_node, self.launch.nnodes)
        try:
            code = run_torchrun(self.launch, launch_file)
        finally:
            launch_file.unlink(missing_ok=True)  # it holds the unredacted pipeline
        if code != 0:
            raise StageProcessesFailed(f"stage {stage.id!r}: a torchrun process failed (exit status {code}); see the "
                               f"messages above and {folder.path / 'log.txt'}")
        result = folder.path / RESULT_FILE
        if result.is_file():
            context.metrics = json.loads(result.read_text()).get("metrics") or {}
            result.unlink()

    def _follow(self, plan: StagePlan, poll_seconds: float = 5.0) -> None:
        """Node rank > 0: join a distributed stage's torchrun; wait for node 0 to finish any other stage."""
        from mllm.pipeline.launch import run_torchrun, write_launch_file

        if plan.stage_id == INIT or plan.action == "skip":
            return
        stage = self.pipeline.stage(plan.stage_id)
        folder = StageFolder(self.run_dir, plan.stage_id)
        if plan.action != "reuse" and self._launches(stage.kind_spec.load()):
            for _ in range(int(3600 / poll_seconds)):  # node 0 starts the folder first
                if folder.started_fingerprint() == plan.fingerprint:
                    break
                time.sleep(poll_seconds)
            launch_file = write_launch_file(pipeline_raw=self.pipeline.raw,
                                            pipeline_path=self.pipeline.path, runs_dir=self.run_dir.parent,
                                            stage_id=stage.id, fingerprint=plan.fingerprint,
                                            resume=plan.action == "resume", node_rank=self.launch.node_rank)
            try:
                code = run_torchrun(self.launch, launch_file)
            finally:
                launch_file.unlink(missing_ok=True)
            if code != 0:
                raise StageProcessesFailed(f"stage {stage.id!r}: a torchrun process on node {self.launch.node_rank} "
                                   f"failed (exit status {code})")
        self.on_event(plan, "waiting for node 0")
        while folder.completed_fingerprint() != plan.fingerprint:
            time.sleep(poll_seconds)
        self.on_event(plan, "finished on node 0")


_MISSING = object()


def fingerprint_config(config: Any) -> dict[str, Any]:
    """The stage config as hashed: an unset stage ``seed`` (the key every stage has) is left
    out, so fingerprints of stages written before the key existed stay what they were."""
    from mllm.pipeline.config import StageConfig

    dumped = config.model_dump(mode="json", by_alias=True)
    owns_seed = any("seed" in vars(cls).get("__annotations__", {}) for cls in type(config).__mro__
                    if cls is not StageConfig and isinstance(cls, type) and issubclass(cls, StageConfig))
    if not owns_seed and dumped.get("seed") is None:
        dumped.pop("seed", None)
    return dumped


def changed_keys(old: Any, new: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """``(dotted key, old value, new value)`` for every leaf that differs between two configs."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in list(old) + [k for k in new if k not in old]:
            out += changed_keys(old.get(key, _MISSING), new.get(key, _MISSING), f"{prefix}{key}.")
        return out
    if old == new:
        return []
    return [(prefix.rstrip(".") or "(config)", old, new)]


def _short(value: Any) -> str:
    if value is _MISSING:
        return "(unset)"
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}


def is_write_failure(error: OSError, run_dir: Path) -> bool:
    """A full disk or read-only file system anywhere, or a permission error on a file in the
    run folder (mllm only writes there; a permission error on a data file stays a data error)."""
    if error.errno in WRITE_ERRNOS:
        return True
    if error.errno in (errno.EACCES, errno.EPERM) and error.filename:
        try:
            return Path(error.filename).resolve().is_relative_to(Path(run_dir).resolve())
        except (OSError, ValueError):
            return False
    return False


def cannot_write(stage_id: str, stage_dir: Path, error: OSError) -> RunFolderError:
    """A full disk or a read-only run folder, as one line naming the file (the stage resumes on a re-run)."""
    where = error.filename or stage_dir
    how = {errno.ENOSPC: "free some space", errno.EDQUOT: "free some space (disk quota)"}.get(
        error.errno, "make the run folder writable")
    return RunFolderError(f"stage {stage_id!r}: cannot write {where}: {error.strerror or error}; {how}, or pick "
                          "another --runs-dir, then run the same command again (it resumes)")


def default_runs_dir() -> Path:
    return Path(os.environ.get("MLLM_RUNS_DIR", "runs"))
