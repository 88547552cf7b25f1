"""Triton: the supervised server (`server`), the model-repository writer (`repo`), the HTTP
client and retention policy (`backend`), the Python-backend model file Triton loads by path
(`python_model`, copied into every portable entry) and the offline SLO probe (`slo`)."""

from serving.triton.backend import RetentionDecision, RetentionPolicy, TritonBackend, promoted_at
from serving.triton.repo import (
    PYTHON_MODEL_SOURCE,
    RepositoryWriter,
    parse_triton_model_name,
    triton_model_name,
)
from serving.triton.server import TritonServer, free_port
from serving.triton.slo import measure_slo, slo_model_name

__all__ = [
    "PYTHON_MODEL_SOURCE",
    "RepositoryWriter",
    "RetentionDecision",
    "RetentionPolicy",
    "TritonBackend",
    "TritonServer",
    "free_port",
    "measure_slo",
    "parse_triton_model_name",
    "promoted_at",
    "slo_model_name",
    "triton_model_name",
]
