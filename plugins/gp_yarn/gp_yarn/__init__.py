"""gp-yarn: not implemented yet; this package registers no backend."""
