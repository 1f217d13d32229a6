"""gp-k8s: not implemented yet; this package registers no backend."""
