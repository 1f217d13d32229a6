"""gp-sparkop: the gp backend that runs Jupyter kernels as Spark Operator ``SparkApplication``s
(``spark-operator``): the operator submits each kernel's application and the kernel lives in its driver pod.

Built on gp-k8s's public API (namespaces, template rendering, the pod status watch, pod removal). The backend
is the module :mod:`gp_sparkop.hooks`; importing this package imports no Kubernetes client.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
