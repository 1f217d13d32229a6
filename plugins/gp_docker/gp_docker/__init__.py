"""gp-docker: gp backends that run Jupyter kernels as Docker containers (``docker``) or Docker Swarm
services (``docker-swarm``).

The backends are the modules :mod:`gp_docker.container` and :mod:`gp_docker.swarm`, registered under the
entry-point group ``gp_core.backends``. Importing this package does not import the docker SDK; the
backend modules do.
"""

from __future__ import annotations

__version__ = "0.1.0"


def close_pools() -> None:
    """Remove every container this process's pools (option ``pool_size``) hold parked; blocking.

    Also run at interpreter exit. Imports the docker SDK.
    """
    from ._pool import close_pools as close

    close()
