"""The prediction log: what the gateway served, written in batches, read as windows.

`writer` (PredictionLog, the gateway's sink), `reader` (PredictionLogReader, the windows the
sensors read, as `modelops.evidence` types), `schema` (tables, URLs and the log's own
migrations, under `migrations/`).
"""

from serving.predlog.reader import PredictionLogReader
from serving.predlog.schema import (
    HEAD_REVISION,
    VERSION_TABLE,
    current_revision,
    default_predlog_url,
    ensure_schema,
    events,
    metadata,
    outcomes,
    predictions,
    resolve_predlog_url,
    upgrade,
)
from serving.predlog.writer import PredictionLog

__all__ = [
    "HEAD_REVISION",
    "VERSION_TABLE",
    "metadata",
    "predictions",
    "outcomes",
    "events",
    "default_predlog_url",
    "resolve_predlog_url",
    "upgrade",
    "current_revision",
    "ensure_schema",
    "PredictionLog",
    "PredictionLogReader",
]
