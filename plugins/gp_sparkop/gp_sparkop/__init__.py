"""gp-sparkop: not implemented yet; this package registers no backend."""
