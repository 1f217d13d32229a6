"""A backend whose import fails: gp must report the import error, never hide it."""

from __future__ import annotations

raise ImportError("gp_example.broken needs an SDK that is not installed")
