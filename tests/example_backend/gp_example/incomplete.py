"""A backend that forgot its required hooks: gp must refuse it by name."""

from __future__ import annotations

from gp_core import hookimpl


@hookimpl
def launch(resources: dict) -> dict:
    return {}
