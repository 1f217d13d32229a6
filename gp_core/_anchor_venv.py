"""Gateway Provisioners 0.5.0 (the anchor) in a venv of its own, for tests that run its real installers.

The venv is made once per machine, outside any checkout (CI runs in fresh clones), the way the benches
make theirs: ``python -m venv V && V/bin/pip install gateway_provisioners==0.5.0 docker``. Its place is
``GP_ANCHOR_VENV``, default ``/var/cache/gp-ci/anchor-venv``; concurrent test runs wait on a lock.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

ANCHOR_REQUIREMENTS = ("gateway_provisioners==0.5.0", "docker")
DEFAULT_VENV = "/var/cache/gp-ci/anchor-venv"
_STAMP = ".gp-anchor-installed"


def anchor_venv() -> Path:
    """The anchor's venv, created (once) if missing; raises RuntimeError with pip's output on failure."""
    venv = Path(os.environ.get("GP_ANCHOR_VENV") or DEFAULT_VENV)
    stamp = venv / _STAMP
    wanted = " ".join(ANCHOR_REQUIREMENTS)
    if stamp.is_file() and stamp.read_text() == wanted:
        return venv
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f"{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.is_file() and stamp.read_text() == wanted:
            return venv
        python = venv / "bin" / "python"
        steps = []
        if not python.exists():
            steps.append([sys.executable, "-m", "venv", str(venv)])
        steps.append(
            [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *ANCHOR_REQUIREMENTS]
        )
        for step in steps:
            done = subprocess.run(step, capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(
                    f"making the anchor's venv failed: {' '.join(step)}\n{done.stdout}{done.stderr}"
                )
        stamp.write_text(wanted)
    return venv


def anchor_jupyter(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the anchor venv's ``jupyter`` (e.g. ``docker-spec install ...``)."""
    venv = anchor_venv()
    run_env = {k: v for k, v in os.environ.items() if not k.startswith("GP_")}  # the installers read GP_*
    run_env["PATH"] = f"{venv / 'bin'}:{run_env.get('PATH', '')}"
    run_env.update(env or {})
    return subprocess.run([str(venv / "bin" / "jupyter"), *args], capture_output=True, text=True, env=run_env)
