"""gp-yarn: not implemented yet; this package registers no backend."""

from __future__ import annotations
