"""The entry point torchrun runs in each process of a distributed stage.

``python -m mllm.pipeline.worker --launch-file <stage>/.launch.node<R>.json`` (see
:mod:`mllm.pipeline.launch`): starts the process group (``nccl`` on GPUs, ``gloo`` on CPUs),
rebuilds the pipeline from the validated copy the parent wrote, checks that the stage's
fingerprint is the parent's, and runs just that stage. The run folder's state files
(``stage.json``, ``COMPLETE``, history) are the parent's; rank 0 writes the stage's log
and hands its metrics back in ``.distributed_result.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from datetime import timedelta
from pathlib import Path


def init_process_group() -> str:
    """Start ``torch.distributed`` from torchrun's environment; returns the backend."""
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return str(dist.get_backend())
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        backend = "nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend=backend, timeout=timedelta(minutes=int(os.environ.get("MLLM_DIST_TIMEOUT_MIN", "60"))))
    return backend


def _stage_logger(stage_dir: Path, stage_id: str, rank: int) -> tuple[logging.Logger, logging.Handler]:
    logger = logging.getLogger(f"mllm.stage.distributed.{stage_id}")
    logger.propagate = False
    if rank == 0:
        handler: logging.Handler = logging.FileHandler(stage_dir / "log.txt")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.setLevel(logging.INFO)
    else:  # other ranks: warnings and errors to stderr (torchrun prefixes the rank)
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(f"rank {rank} %(levelname)s %(message)s"))
        logger.setLevel(logging.WARNING)
    logger.addHandler(handler)
    return logger, handler


def run_stage(launch: dict) -> None:
    from mllm import distributed
    from mllm.data.recordio import CURRENT_RUN_DIR
    from mllm.errors import StageProcessesFailed
    from mllm.pipeline.config import INIT, load_pipeline
    from mllm.pipeline.launch import RESULT_FILE
    from mllm.pipeline.runfolder import StageFolder, atomic_write_text
    from mllm.pipeline.runner import PipelineRunner, StageContext
    from mllm.plugins.registry import get_registry

    registry = get_registry()
    pipeline = load_pipeline(None, registry, data=launch["pipeline"])
    runner = PipelineRunner(pipeline, registry, Path(launch["runs_dir"]))
    runner._init_done.add(INIT)  # the parent built init before launching; never build it here
    stage_id = launch["stage"]
    stage = pipeline.stage(stage_id)
    fingerprint = runner.fingerprint(stage)
    if fingerprint != launch["fingerprint"]:
        raise StageProcessesFailed(f"stage {stage_id!r}: this process computes fingerprint {fingerprint[:12]} but the "
                           f"launcher planned {launch['fingerprint'][:12]}; are the nodes' environments (plugin "
                           "versions, data files) the same?")
    folder = StageFolder(runner.run_dir, stage_id)
    rank = distributed.rank()
    logger, handler = _stage_logger(folder.path, stage_id, rank)
    try:
        logger.info("stage %s: process %d of %d", stage_id, rank, distributed.world_size())
        context = StageContext(runner, stage, folder, fingerprint, bool(launch["resume"]), logger)
        token = CURRENT_RUN_DIR.set(runner.run_dir)
        try:
            stage.kind_spec.load()(stage.config, stage.components).run(context)
        finally:
            CURRENT_RUN_DIR.reset(token)
        distributed.barrier()
        if rank == 0:
            atomic_write_text(folder.path / RESULT_FILE, json.dumps({"metrics": context.metrics}, default=float))
    finally:
        logger.removeHandler(handler)
        handler.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mllm.pipeline.worker", description=__doc__.splitlines()[0])
    parser.add_argument("--launch-file", required=True, type=Path)
    args = parser.parse_args(argv)
    launch = json.loads(args.launch_file.read_text())
    init_process_group()
    import torch.distributed as dist

    from mllm.errors import MllmError

    try:
        run_stage(launch)
    except MllmError as error:  # a user error: one line per process (torchrun prefixes the rank), no traceback
        if os.environ.get("MLLM_DEBUG", "").lower() in ("1", "true", "t", "yes", "y", "on"):
            raise
        print(f"rank {os.environ.get('RANK', '0')} {error.label}: {error}", file=sys.stderr)
        raise SystemExit(error.exit_code) from None
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
