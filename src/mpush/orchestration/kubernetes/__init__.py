"""rcontrol's declarations as Kubernetes manifests: ``mpush rcontrol export --kubernetes``
(docs/kubernetes.md)."""
