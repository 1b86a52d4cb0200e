"""A quiet, in-memory Great Expectations context shared by the whole process.

GX draws tqdm bars for every metric computation and would try to send usage statistics; both are
noise in a scheduler's logs and the second hangs on an offline network. One ephemeral context is
built once and reused, because building a datasource per batch costs more than validating it.
"""

from __future__ import annotations

import logging
import os
import threading
from functools import cache

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

import great_expectations as gx
from great_expectations.data_context import EphemeralDataContext
from great_expectations.data_context.types.base import (
    DataContextConfig,
    InMemoryStoreBackendDefaults,
    ProgressBarsConfig,
)

DATASOURCE = "yiwang_batches"

# GX is not thread-safe; Dagster may run several batch steps in threads of one process.
GX_LOCK = threading.RLock()


def quiet_gx_logging() -> None:
    """GX and its analytics client log at INFO/WARNING for routine events; keep only errors."""
    for name in ("great_expectations", "posthog", "backoff"):
        logging.getLogger(name).setLevel(logging.ERROR)


@cache
def context() -> EphemeralDataContext:
    """The process-wide ephemeral context: no files, no analytics, no progress bars."""
    quiet_gx_logging()
    skip_dataframe_fingerprint()
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(),
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
    )
    ctx = gx.get_context(mode="ephemeral", project_config=config)
    ctx.data_sources.add_pandas(DATASOURCE)
    return ctx


def skip_dataframe_fingerprint() -> None:
    """GX hashes every in-memory dataframe under 1 GB for a batch marker nobody here reads.

    On 1M rows that hash is half of the validation time; batches are identified by their batch_id.
    """
    from great_expectations.execution_engine import pandas_execution_engine

    pandas_execution_engine.HASH_THRESHOLD = 0
