"""The standard normal, vectorised, with scipy imported on first use.

`import modelops.evaluation` must stay cheap for a sensor's code location, and scipy.special
alone costs half a second; every caller here needs it only once a test is evaluated.
"""

from __future__ import annotations

from statistics import NormalDist
from typing import Any

import numpy as np

_STD = NormalDist()


def z(q: float) -> float:
    """The q-quantile of N(0, 1), a scalar (design constants)."""
    return _STD.inv_cdf(q)


def cdf(x: Any) -> Any:
    from scipy.special import ndtr

    return ndtr(np.asarray(x, dtype=float))


def log_cdf(x: Any) -> Any:
    from scipy.special import log_ndtr

    return log_ndtr(np.asarray(x, dtype=float))


def sf(x: Any) -> Any:
    from scipy.special import ndtr

    return ndtr(-np.asarray(x, dtype=float))
