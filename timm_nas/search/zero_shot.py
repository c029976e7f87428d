"""TF-TAS zero-shot search: rank random candidates inside the constraints by a training-free proxy.

Zhou et al., "Training-free Transformer Architecture Search", CVPR 2022; decemberzhou/TF_TAS
``search_autoformer.py`` (defaults: ``--population-num 8000``, ``--min-param-limits 3``, ``--param-limits 23``
(millions), ``--indicator-name dss``; the supernet is randomly initialised, no checkpoint).
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch.nn as nn

from .constraints import Constraints
from .engine import SearchResult, run_search
from .random_search import RandomSearch
from .scorers import ProxyScorer

__all__ = ["ZeroShotSearch", "tf_tas", "TF_TAS_CANDIDATES", "TF_TAS_PARAMS"]

#: ``--population-num`` of TF_TAS ``search_autoformer.py``.
TF_TAS_CANDIDATES = 8000
#: ``--min-param-limits`` / ``--param-limits`` of TF_TAS ``search_autoformer.py`` (parameters).
TF_TAS_PARAMS = (3e6, 23e6)


@dataclasses.dataclass
class ZeroShotSearch(RandomSearch):
    """:class:`RandomSearch` with TF-TAS's defaults (8000 candidates); score it with a proxy."""

    name: ClassVar[str] = "tf-tas"

    num_candidates: int = TF_TAS_CANDIDATES


def tf_tas(supernet: nn.Module, *, num_candidates: int = TF_TAS_CANDIDATES, params: tuple[float, float] = TF_TAS_PARAMS,
           macs: tuple[float | None, float | None] = (None, None), proxy: str = "dss", seed: int = 0,
           out: Any = None, **kwargs: Any) -> SearchResult:
    """TF-TAS on a supernet's space: ``num_candidates`` random subnets in the windows, ranked by ``proxy``.

    Args:
        supernet: e.g. ``timm.create_model('autoformer_supernet', space='tiny')`` (random init is what TF-TAS
            uses).
        num_candidates: candidates to score (TF-TAS: 8000).
        params: parameter window (TF-TAS: 3M to 23M).
        macs: MAC window (unbounded by default).
        proxy: the proxy (``'dss'``; proxy options such as ``mode='paper'`` go in ``kwargs``).
        seed: seed of the draws.
        out: output folder (resumable), or ``None``.
        **kwargs: proxy options, or ``run_search`` keywords (``overwrite``, ``callback``, ``dist``, ``plot``).
    """
    run_kw = {k: kwargs.pop(k) for k in ("overwrite", "callback", "dist", "plot", "arguments") if k in kwargs}
    constraints = Constraints.for_model(supernet, params_min=params[0], params_max=params[1], macs_min=macs[0],
                                        macs_max=macs[1])
    constraints.check_space(supernet.space)
    strategy = ZeroShotSearch(supernet.space, num_candidates=num_candidates, constraints=constraints, seed=seed)
    return run_search(strategy, ProxyScorer(supernet, proxy, **kwargs), out=out, **run_kw)
