"""gp-k8s: the gp backend that runs Jupyter kernels as Kubernetes pods (``k8s``).

The backend is the module :mod:`gp_k8s.hooks`, registered under the entry-point group ``gp_core.backends``.
Importing this package does not import the kubernetes client; the backend's modules do, on first use.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
