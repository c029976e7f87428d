"""Architecture search over the Space protocol: strategies, scorers, constraints, a resumable log, Pareto fronts.

A search is a space, a scorer (a training-free proxy or the supernet's accuracy on data), cost constraints from
the analytic cost model, and a strategy::

    import timm, timm_nas
    from timm_nas.search import ZeroShotSearch, EvolutionSearch, Constraints, ProxyScorer, run_search

    supernet = timm.create_model('autoformer_supernet', space='tiny')
    constraints = Constraints.for_model(supernet, params_min=3e6, params_max=23e6)
    result = run_search(ZeroShotSearch(supernet.space, num_candidates=8000, constraints=constraints),
                        ProxyScorer(supernet, 'dss'), out='runs/tf-tas')
    result.best.config, result.best.score

Every scored candidate is appended to ``out/candidates.jsonl``; the same call after an interruption resumes
without re-scoring. Under ``torchrun`` candidates are sharded across the processes. The DARTS and SPViT searches
(gradient-based) live in their own modules.
"""
from .constraints import Constraints, Cost
from .distributed import Dist
from .engine import Candidate, Evaluator, Proposal, SearchResult, run_search, write_results
from .evolution import EvolutionSearch
from .log import SearchFolder, config_key
from .pareto import pareto_front, plot_pareto
from .random_search import RandomSearch
from .regularized_evolution import RegularizedEvolution
from .oracle import OracleScorer, StrategyCurves, compare_strategies, proxy_prefilter
from .scorers import AccuracyScorer, ProxyScorer, build_eval_loader
from .zero_shot import TF_TAS_CANDIDATES, TF_TAS_PARAMS, ZeroShotSearch, tf_tas

__all__ = [
    "Constraints",
    "Cost",
    "Dist",
    "Candidate",
    "Proposal",
    "Evaluator",
    "SearchResult",
    "run_search",
    "write_results",
    "RandomSearch",
    "RegularizedEvolution",
    "OracleScorer",
    "StrategyCurves",
    "compare_strategies",
    "proxy_prefilter",
    "ZeroShotSearch",
    "EvolutionSearch",
    "tf_tas",
    "TF_TAS_CANDIDATES",
    "TF_TAS_PARAMS",
    "ProxyScorer",
    "AccuracyScorer",
    "build_eval_loader",
    "SearchFolder",
    "config_key",
    "pareto_front",
    "plot_pareto",
]
