"""Training-free proxies: TF-TAS's DSS and the standard zero-cost scores, behind one registry.

Every proxy has the same call signature (see :mod:`timm_nas.proxies._registry`)::

    from timm_nas import proxies
    proxies.score('synflow', model)                          # any timm model
    proxies.score('dss', supernet, config=cfg)               # a subnet of a supernet
    proxies.get_proxy('snip')(model, images, labels)         # with a batch of your own
    proxies.dss(supernet, cfg, mode='reference').per_layer   # the full DSS breakdown

``list_proxies()`` names them all; ``register_proxy`` adds one.
"""
from ._registry import ProxySpec, default_inputs, get_proxy, list_proxies, register_proxy, score, scoring_mode
from .tf_tas import DSS_MODES, DSSScore, dss
from . import zero_cost  # noqa: F401  (registers synflow, snip, grad_norm, jacov, nwot, params, macs)
from . import zoo  # noqa: F401  (registers l2_norm, plain, fisher, grasp, zen, epe_nas, zico, meco, swap)

__all__ = [
    "ProxySpec",
    "register_proxy",
    "get_proxy",
    "list_proxies",
    "score",
    "default_inputs",
    "scoring_mode",
    "dss",
    "DSSScore",
    "DSS_MODES",
]
