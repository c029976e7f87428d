"""Reference numbers for NAS-Bench-201 parity, produced with the authors' ``xautodl`` package (PyPI ``xautodl``,
the code of Dong and Yang, "NAS-Bench-201", ICLR 2020, and NATS-Bench).

Run in a separate environment that has xautodl (never timm-nas's own venv)::

    python3 -m venv /tmp/refenv && /tmp/refenv/bin/pip install torch==2.14.1 numpy xautodl
    /tmp/refenv/bin/python tests/reference_scripts/nb201_reference.py > tests/data/nb201_reference.json

It writes, for several cells: the parameter count of the authors' ``TinyNetwork`` (C=16, N=5, 10 and 100 classes),
and logits of small and full networks whose weights are filled by :func:`fill` (a deterministic rule that
tests/test_nb201.py repeats, so the test needs neither xautodl nor a weight file); the same for the authors' DARTS
search network ``TinyNetworkDarts``; and the benchmark's index order (``CellStructure.gen_all`` then
``random.seed(88); random.shuffle``, as the benchmark was built) as a digest plus the first strings.
"""
import hashlib
import json
import random

import torch
from xautodl.models.cell_infers.tiny_network import TinyNetwork
from xautodl.models.cell_operations import SearchSpaceNames
from xautodl.models.cell_searchs.genotypes import Structure as CellStructure
from xautodl.models.cell_searchs.search_model_darts import TinyNetworkDarts

CELLS = [
    "|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|skip_connect~2|",
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|",
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|",
    "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|",
    "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|",
    "|nor_conv_1x1~0|+|avg_pool_3x3~0|none~1|+|skip_connect~0|nor_conv_1x1~1|avg_pool_3x3~2|",
]
#: (C, N) of the logits checks: a small network for every cell, the benchmark's for the first three.
SMALL, FULL = (4, 1), (16, 5)


def fill(state_dict, seed):
    """Deterministic weights: one generator, tensors in state-dict order (keys sorted), fan-in scaled."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key in sorted(state_dict):
        t = state_dict[key]
        if not t.is_floating_point():
            out[key] = t.clone()
        elif key.endswith("running_var"):
            out[key] = torch.rand(t.shape, generator=g) + 0.5
        elif key.endswith("running_mean") or key.endswith("bias"):
            out[key] = 0.1 * torch.randn(t.shape, generator=g)
        elif t.dim() == 1:  # BatchNorm weight
            out[key] = 1.0 + 0.1 * torch.randn(t.shape, generator=g)
        else:
            fan_in = t[0].numel() if t.dim() > 1 else t.shape[-1]
            out[key] = torch.randn(t.shape, generator=g) / fan_in ** 0.5
    return out


def images(seed, n=2):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def run(model, seed):
    sd = fill(model.state_dict(), seed)
    model.load_state_dict(sd)
    model.eval()
    with torch.no_grad():
        _, logits = model(images(seed))
    return dict(seed=seed, keys=[[k, list(v.shape)] for k, v in sorted(sd.items())], logits=logits.tolist())


def main():
    torch.manual_seed(0)
    ops = SearchSpaceNames["nas-bench-201"]
    archs = CellStructure.gen_all(ops, 4, False)
    random.seed(88)
    random.shuffle(archs)
    order = [a.tostr() for a in archs]
    out = dict(
        source="xautodl (pip), TinyNetwork / TinyNetworkDarts / CellStructure; script tests/reference_scripts/nb201_reference.py",
        torch=torch.__version__,
        ops=list(ops),
        index_order=dict(count=len(order), sha256=hashlib.sha256("\n".join(order).encode()).hexdigest(),
                         first=order[:20], at={str(i): order[i] for i in (0, 9, 123, 7000, 15624)}),
        cells=[],
    )
    for k, arch in enumerate(CELLS):
        genotype = CellStructure.str2structure(arch)
        entry = dict(arch_str=arch, params={})
        for nc in (10, 100):
            net = TinyNetwork(16, 5, genotype, nc)
            entry["params"][str(nc)] = sum(p.numel() for p in net.parameters())
        entry["logits"] = []
        for C, N in ([SMALL, FULL] if k < 3 else [SMALL]):
            r = run(TinyNetwork(C, N, genotype, 10), seed=100 + k)
            entry["logits"].append(dict(C=C, N=N, **r))
        out["cells"].append(entry)
    net = TinyNetworkDarts(4, 1, 4, 10, ops, False, True)
    r = run(net, seed=7)
    out["search"] = dict(C=4, N=1, affine=False, track_running_stats=True, genotype=net.genotype().tostr(),
                         params=sum(p.numel() for p in net.parameters()), **r)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
