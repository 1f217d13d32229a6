"""Clear errors for what Gateway Provisioners 0.5.0 users bring along.

- Its provisioner names (``docker-provisioner``, ...) are registered in the
  ``jupyter_client.kernel_provisioners`` group by gp-core too, pointing at the classes below. When
  several distributions register one name, jupyter_client keeps whichever entry point it sees last
  (``KernelProvisionerFactory.__init__``) or first (``_get_provisioner``), an order that depends on
  the install: so each class here builds the real anchor provisioner when ``gateway_provisioners`` is
  importable, and only otherwise raises an :class:`~gp_core.errors.InvalidOptionError` saying how to
  convert the kernelspec. With both installed, nothing changes for the anchor's kernels.
- :func:`report_anchor_config` logs, once per server process, the anchor's server-config sections
  (``c.DockerProvisioner.*``, ...) with their gp names: gp does not read them.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import threading
from typing import Any, ClassVar

from . import _anchor
from .errors import InvalidOptionError


def _anchor_class(path: str) -> Any:
    """The anchor's provisioner class, or None when gateway_provisioners is not installed."""
    if importlib.util.find_spec(_anchor.ANCHOR_PACKAGE) is None:
        return None
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def conversion_message(provisioner_name: str, kernel_spec: Any = None) -> str:
    """What a user starting an anchor kernelspec under gp is told."""
    anchor = _anchor.PROVISIONERS[provisioner_name]
    display = getattr(kernel_spec, "display_name", "") or "this kernel"
    where = getattr(kernel_spec, "resource_dir", "") or "<kernelspec directory>"
    head = (
        f"Kernel {display!r} ({where}) uses kernel provisioner {provisioner_name!r} from {_anchor.ANCHOR}, "
        f"which is not installed."
    )
    if anchor.backend is None:
        return f"{head} It has no gp equivalent: {anchor.note}."
    from .plugins import installed_backends

    install = "" if anchor.backend in installed_backends() else f" (pip install {anchor.distribution})"
    return (
        f"{head} gp runs such kernels with provisioner {_anchor.GP_PROVISIONER!r} and backend "
        f"{anchor.backend!r}{install}. Convert the kernelspec with: gp migrate {where} --in-place "
        f"(or --output DIR); see docs/migration.md. Or install {_anchor.ANCHOR_PACKAGE} to keep running it."
    )


class AnchorProvisioner:
    """Stands for one anchor provisioner name (see the module docstring)."""

    provisioner_name: ClassVar[str]

    def __new__(cls, **kwargs: Any) -> Any:
        real = _anchor_class(_anchor.PROVISIONERS[cls.provisioner_name].anchor_class)
        if real is not None:
            return real(**kwargs)
        raise InvalidOptionError(conversion_message(cls.provisioner_name, kwargs.get("kernel_spec")))


class DockerProvisioner(AnchorProvisioner):
    provisioner_name = "docker-provisioner"


class DockerSwarmProvisioner(AnchorProvisioner):
    provisioner_name = "docker-swarm-provisioner"


class DistributedProvisioner(AnchorProvisioner):
    provisioner_name = "distributed-provisioner"


class KubernetesProvisioner(AnchorProvisioner):
    provisioner_name = "kubernetes-provisioner"


class YarnProvisioner(AnchorProvisioner):
    provisioner_name = "yarn-provisioner"


class SparkOperatorProvisioner(AnchorProvisioner):
    provisioner_name = "spark-operator-provisioner"


class CustomResourceProvisioner(AnchorProvisioner):
    provisioner_name = "custom-resource-provisioner"


_reported = False
_report_lock = threading.Lock()


def anchor_config_notes(config: Any) -> list[str]:
    """``c.<AnchorClass>.<trait> -> gp name`` for each anchor setting in a traitlets config."""
    from .migrate import ConfigItem, Note, map_config_item

    notes = []
    for section in _anchor.anchor_config_classes():
        if section not in config.keys():
            continue
        for trait, value in dict(config[section]).items():
            mapped = map_config_item(ConfigItem(section, trait, repr(value), value))
            if isinstance(mapped, Note):
                notes.append(f"c.{section}.{trait}: not read by gp ({mapped.detail})")
            else:
                notes.append(f"c.{section}.{trait}: not read by gp; it is c.{mapped[0]}.{mapped[1]}")
    return notes


def report_anchor_config(config: Any, log: logging.Logger | logging.LoggerAdapter[Any]) -> bool:
    """Log the anchor settings in ``config`` once per process; True when this call logged them."""
    global _reported
    with _report_lock:
        if _reported:
            return False
        _reported = True
    notes = anchor_config_notes(config)
    if not notes:
        return False
    log.warning(
        "The server config holds %s settings that gp ignores:\n  %s\nConvert them with "
        "'gp migrate --config <your jupyter_server_config.py or .json> --dry-run' (docs/migration.md).",
        _anchor.ANCHOR,
        "\n  ".join(notes),
    )
    return True
