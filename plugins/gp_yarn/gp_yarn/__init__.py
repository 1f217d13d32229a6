"""gp-yarn: the ``yarn`` gp backend, which runs Jupyter kernels as Hadoop YARN applications.

A kernel is a Spark application in cluster mode (``spark-submit --master yarn --deploy-mode cluster``
through the kernelspec's ``bin/run.sh``): gp's launcher runs in the application master's container and
reports back to the server. Importing this package imports neither yarn-api-client nor jupyter_client.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
