"""Multi-process stages: ``mllm run PIPELINE --nproc-per-node N [--nnodes M ...]``.

The ``mllm run`` process keeps the run folder (plan, fingerprints, ``stage.json``,
history, ``COMPLETE``). A stage kind whose implementation says ``distributed = True``
(``train``, ``eval``) is run by torchrun (``python -m torch.distributed.run``, an
argument list, never a shell string) as N processes per node of
:mod:`mllm.pipeline.worker`, which run only that stage; ``COMPLETE`` is written by
the parent only when every process exited successfully. Every other stage (generate,
transform, report) runs once, in the parent.

Several nodes: run the same ``mllm run`` on every node (same pipeline, same
``--runs-dir`` on a shared filesystem, ``--node-rank`` 0..M-1, the same
``--master-addr``/``--master-port``). Node 0 runs the pipeline and keeps the run folder;
the other nodes join each distributed stage's torchrun and wait for node 0 to finish
the stages that run once.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mllm.errors import ConfigError

#: what the parent gives the stage processes (in the stage folder; one per node)
LAUNCH_FILE = ".launch.node{node}.json"
#: what rank 0 of the stage processes gives back (metrics), in the stage folder
RESULT_FILE = ".distributed_result.json"
ENTRY_MODULE = "mllm.pipeline.worker"


@dataclass(frozen=True)
class LaunchSettings:
    """How many processes run a distributed stage, and where they meet."""

    nproc_per_node: int = 1
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str | None = None
    master_port: int | None = None

    def __post_init__(self) -> None:
        if self.nproc_per_node < 1 or self.nnodes < 1:
            raise ConfigError("--nproc-per-node and --nnodes must be at least 1")
        if not 0 <= self.node_rank < self.nnodes:
            raise ConfigError(f"--node-rank {self.node_rank} is not in 0..{self.nnodes - 1}")
        if self.nnodes > 1 and (not self.master_addr or not self.master_port):
            raise ConfigError("several nodes need --master-addr (node 0's address) and --master-port")

    @property
    def world_size(self) -> int:
        return self.nproc_per_node * self.nnodes

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def describe(self) -> dict[str, Any]:
        return {**asdict(self), "world_size": self.world_size}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def torchrun_argv(settings: LaunchSettings, entry_args: list[str]) -> list[str]:
    """``python -m torch.distributed.run ... -m mllm.pipeline.worker ENTRY_ARGS``."""
    master_addr = settings.master_addr or "127.0.0.1"
    master_port = settings.master_port or free_port()
    return [
        sys.executable, "-m", "torch.distributed.run",
        "--nproc-per-node", str(settings.nproc_per_node),
        "--nnodes", str(settings.nnodes),
        "--node-rank", str(settings.node_rank),
        "--master-addr", master_addr,
        "--master-port", str(master_port),
        "-m", ENTRY_MODULE, *entry_args,
    ]


def write_launch_file(*, pipeline_raw: dict[str, Any], pipeline_path: Path | None, runs_dir: Path,
                      stage_id: str, fingerprint: str, resume: bool, node_rank: int = 0) -> Path:
    """What every stage process needs to rebuild the stage: the pipeline as validated
    (overrides applied), the runs folder, the stage and its fingerprint.

    The pipeline is unredacted (a judge's key may be in it), so the file is a private
    temporary file (mode 0600) outside the run folder, never a file under ``runs/``;
    the caller deletes it when the processes end."""
    handle, name = tempfile.mkstemp(prefix=f"mllm-{stage_id}-", suffix=LAUNCH_FILE.format(node=node_rank))
    os.close(handle)
    path = Path(name)
    payload = {"pipeline": pipeline_raw, "pipeline_path": str(pipeline_path) if pipeline_path else None,
               "runs_dir": str(Path(runs_dir).resolve()), "stage": stage_id, "fingerprint": fingerprint,
               "resume": resume}
    path.write_text(json.dumps(payload, default=str))
    return path


def run_torchrun(settings: LaunchSettings, launch_file: Path, *, env: dict[str, str] | None = None) -> int:
    """Run the stage processes and return torchrun's exit status (0: every process succeeded)."""
    argv = torchrun_argv(settings, ["--launch-file", str(Path(launch_file).resolve())])
    full_env = dict(os.environ if env is None else env)
    # the stage processes import mllm from the same environment as this one
    return subprocess.run(argv, env=full_env, check=False).returncode
