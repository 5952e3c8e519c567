"""What a run needs to be reproduced: package versions, git commit, machine, GPU, command line."""

from __future__ import annotations

import datetime
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

PACKAGES = (
    "archdsl",
    "torch",
    "triton",
    "numpy",
    "schedulefree",
    "lark",
    "optuna",
    "mamba-ssm",
    "flash-linear-attention",
    "causal-conv1d",
)


def versions() -> dict[str, str]:
    """Installed versions of the packages that can change a result (missing ones are left out)."""
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def git_commit(where: Path | None = None) -> dict[str, object]:
    """The commit of the archdsl checkout (and whether it had uncommitted changes); {} outside git."""
    where = where or Path(__file__).resolve().parents[2]

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(where), *args], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"commit": commit, "dirty": dirty}


def device_info(device: str) -> dict[str, object]:
    """The accelerator (name, memory, CUDA/cuDNN versions) or the CPU the run used."""
    import torch

    info: dict[str, object] = {
        "device": device,
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(torch.device(device))
        info.update(
            gpu=props.name,
            gpu_memory_bytes=props.total_memory,
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
            gpu_count=torch.cuda.device_count(),
        )
    return info


def environment(device: str) -> dict[str, object]:
    """Everything above, plus host, platform, UTC time and the command line."""
    return {
        "versions": versions(),
        "git": git_commit(),
        **device_info(device),
        "host": platform.node(),
        "platform": platform.platform(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "argv": list(sys.argv),
    }
