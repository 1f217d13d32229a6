"""gp-ssh: the ``ssh`` gp backend, which starts Jupyter kernels on remote hosts over SSH."""

from __future__ import annotations

__version__ = "0.1.0"
