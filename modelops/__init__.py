"""modelops: a model registry and deployment control plane."""
