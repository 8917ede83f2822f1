"""vMF predictions by Monte Carlo, as the paper's code (google-research/vmf_embeddings) makes them.

Classification: draw S instance samples z~_is ~ vMF(mu_z, kappa_z) (mu = z/|z|, kappa = |z|) and, for
every (i, s), a fresh class sample w~_isc ~ vMF(mu_c, kappa_c) (from the class weights: kappa_c = |w_c|);
logits_isc = beta <z~_is, w~_isc> with beta = 1/T; p(c|x) = (1/S) sum_s softmax_c(logits_is).
As kappa -> infinity this is cosine softmax with the same beta (a limit the tests check).

Retrieval: per draw s, exact cosine kNN among the sampled unit vectors; Recall@1 = mean over queries
of the strict-majority vote of the S per-draw hits (an S/2 : S/2 split counts as a miss, like the
original's scipy.stats.mode); precision-type metrics (MAP@R, R-precision) are means over draws. Lone
queries are dropped (the original divided by all N and turned MAP@R into NaN).

Draws are seeded with one torch.Generator (`seed`), so results are reproducible on one device.
The sampler is `vmf_embeddings.methods.vmf_distribution.sample_vmf`, imported lazily; pass `sampler=`
to use another (tests do).
"""

from __future__ import annotations

import math
from typing import Callable, Dict, Optional, Union

import numpy as np
import torch

from .arrays import Array
from .knn import knn_self
from .retrieval import metrics_from_neighbours, reindex_labels

Sampler = Callable[..., torch.Tensor]
#: memory bound for one chunk of class samples (rows x S x C x D float32)
DEFAULT_CHUNK_BYTES = 256 << 20


def default_sampler() -> Sampler:
    """The project's vMF sampler (lazy import: the methods package may be absent in a slim install)."""
    from vmf_embeddings.methods.vmf_distribution import sample_vmf

    return sample_vmf


def _device(device) -> torch.device:
    """Explicit device, else CUDA when present (draws differ between devices; each is seeded)."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _t32(x: Array, device) -> torch.Tensor:
    t = x.detach() if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))
    return t.to(device=device, dtype=torch.float32)


def split_mu_kappa(z: torch.Tensor):
    """(unit directions, norms): for vMF rows the norm IS kappa."""
    kappa = z.norm(dim=1)
    return z / kappa.clamp_min(1e-12)[:, None], kappa


def vmf_mc_log_probs(
    embeddings: Array,
    weights: Array,
    temperature: float = 1.0,
    n_samples: int = 10,
    seed: int = 1234,
    sampler: Optional[Sampler] = None,
    device: Optional[Union[str, torch.device]] = None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> torch.Tensor:
    """N x C float64 log p(c|x) of the Monte-Carlo predictive distribution (module docstring).

    Chunked over items so memory stays ~chunk_bytes whatever N (S x rows x C x D class samples).
    """
    sampler = sampler or default_sampler()
    dev = _device(device)
    z = _t32(embeddings, dev)
    w = _t32(weights, dev)
    if z.shape[1] != w.shape[1]:
        raise ValueError(f"embeddings have dim {z.shape[1]} but class weights have dim {w.shape[1]}")
    beta = 1.0 / float(temperature)
    mu_z, k_z = split_mu_kappa(z)
    mu_c, k_c = split_mu_kappa(w)
    n, d = z.shape
    c = w.shape[0]
    gen = torch.Generator(device=dev).manual_seed(int(seed))
    rows = max(1, int(chunk_bytes // (4 * n_samples * c * d)))
    out = []
    with torch.no_grad():
        for s in range(0, n, rows):
            e = min(n, s + rows)
            b = e - s
            zs = sampler(mu_z[s:e], k_z[s:e], n_samples, generator=gen)  # S x b x D
            ws = sampler(mu_c, k_c, n_samples * b, generator=gen).reshape(n_samples, b, c, d)
            logits = beta * torch.einsum("sbd,sbcd->sbc", zs.to(torch.float32), ws.to(torch.float32))
            lp = torch.log_softmax(logits.double(), dim=2)
            out.append((torch.logsumexp(lp, dim=0) - math.log(n_samples)).cpu())
    return torch.cat(out)


def vmf_sampled_retrieval(
    embeddings: Array,
    labels: Array,
    n_samples: int = 10,
    seed: int = 1234,
    sampler: Optional[Sampler] = None,
    device: Optional[Union[str, torch.device]] = None,
    backend: str = "auto",
) -> Dict[str, float]:
    """The paper's sampled vMF retrieval: majority-vote Recall@1, draw-mean MAP@R / R-precision / P@1.

    Keys: mc_recall@1 (vote), mc_precision@1 (mean over draws), mc_r_precision, mc_map@r, mc_samples.
    """
    sampler = sampler or default_sampler()
    dev = _device(device)
    z = _t32(embeddings, dev)
    y = reindex_labels(labels)
    counts = np.bincount(y)
    k = int(min(max(1, counts.max() - 1), len(y) - 1))
    keep = counts[y] > 1
    mu, kappa = split_mu_kappa(z)
    gen = torch.Generator(device=dev).manual_seed(int(seed))
    hits = np.zeros(len(y), np.int64)
    acc: Dict[str, float] = {"precision@1": 0.0, "r_precision": 0.0, "map@r": 0.0}
    with torch.no_grad():
        for _ in range(n_samples):
            draw = sampler(mu, kappa, 1, generator=gen)[0].to(torch.float32)
            draw = draw / draw.norm(dim=1, keepdim=True).clamp_min(1e-12)
            q = draw if dev.type != "cpu" else draw.numpy()
            res = knn_self(q, q, k, backend=backend, device=dev)
            m = metrics_from_neighbours(y[res.indices], y)
            for key in acc:
                acc[key] += m[key] / n_samples
            hits += y[res.indices[:, 0]] == y
    vote = (2 * hits > n_samples)[keep]
    return {
        "mc_recall@1": float(vote.mean()) if keep.any() else float("nan"),
        "mc_precision@1": acc["precision@1"],
        "mc_r_precision": acc["r_precision"],
        "mc_map@r": acc["map@r"],
        "mc_samples": int(n_samples),
    }
