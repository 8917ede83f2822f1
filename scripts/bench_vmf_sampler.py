"""Time per call of `sample_vmf` against the original loop-until-accepted sampler, side by side.

"old" re-implements the structure of the original (s-vae-pytorch as adapted by google-research/vmf_embeddings):
every iteration draws one Beta proposal per row from the global RNG, pending rows take it if accepted, and
the loop runs until every row has accepted (one host-device sync per iteration). It uses the exact b, not the
biased large-kappa shortcut, so both samplers draw from the same distribution and only the loop differs.
"new" is `vmf_embeddings.methods.vmf_distribution.sample_vmf` (a block of candidates per row, first accepted one).
Columns: rounds / iterations of the rejection loop, time of the cosine stage alone ("w", where the two loops
differ), and of the whole draw ("all", which adds the tangent Gaussians and the reflection, common to both).

    python scripts/bench_vmf_sampler.py                   # CPU, float32
    python scripts/bench_vmf_sampler.py --device cuda --repeats 50
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Callable, Tuple

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vmf_embeddings.methods import vmf_distribution  # noqa: E402
from vmf_embeddings.methods.vmf_distribution import sample_vmf  # noqa: E402

# (N rows, D, kappa, S samples): the paper's init kappa (~ kc (d-1)/(1-kc^2)) and a class-sampling-sized batch
CASES = [
    (130, 3, 10.0, 10),  # MNIST batch, d = 3 (closed form, no rejection)
    (260, 128, 60.0, 10),  # CIFAR10 batch at init kappa
    (256, 128, 174.0, 10),  # CIFAR100, kappa_confidence 0.7
    (128, 512, 243.0, 10),  # CUB, kc 0.4
    (64, 512, 701.0, 10),  # SOP, kc 0.7
    (12800, 128, 60.0, 1),  # class draws for prediction: rows = batch x S x C
]


def old_cosines(k: torch.Tensor, d: int) -> Tuple[torch.Tensor, int]:
    """w = mu^T x for one draw per entry of k, the original way; returns (w, loop iterations)."""
    m = d - 1
    if d == 3:
        u = torch.rand(k.shape, dtype=k.dtype, device=k.device)
        return 1 + torch.logsumexp(torch.stack([u.log(), (1 - u).log() - 2 * k]), 0) / k, 0
    c = torch.sqrt(4 * k * k + m * m)
    b = (c - 2 * k) / m  # the original's (cancelling) form of the exact b
    a = (m + 2 * k + c) / 4
    delta = 4 * a * b / (1 + b) - m * math.log(m)
    beta = torch.distributions.Beta(torch.tensor(m / 2.0), torch.tensor(m / 2.0))
    w = torch.zeros_like(k)
    pending = torch.ones_like(k, dtype=torch.bool)
    iterations = 0
    while bool(pending.any()):  # one host-device sync per iteration
        iterations += 1
        eps = beta.sample(k.shape).to(k.device, k.dtype)
        u = torch.rand(k.shape, dtype=k.dtype, device=k.device).clamp_min(1e-20)
        w_ = (1 - (1 + b) * eps) / (1 - (1 - b) * eps)
        t = 2 * a * b / (1 - (1 - b) * eps)
        accept = (m * torch.log(t) - t + delta) > torch.log(u)
        w = torch.where(pending & accept, w_, w)
        pending = pending & ~accept
    return w, iterations


def old_sample_vmf(mu: torch.Tensor, kappa: torch.Tensor, n_samples: int) -> torch.Tensor:
    """The original sampler end to end: cosines, clamped tangent radius, Householder reflection."""
    n, d = mu.shape
    w, _ = old_cosines(kappa.unsqueeze(0).expand(n_samples, n).reshape(-1), d)
    v = F.normalize(torch.randn(n_samples * n, d - 1, dtype=mu.dtype, device=mu.device), dim=-1)
    x = torch.cat([w[:, None], torch.sqrt((1 - w * w).clamp_min(1e-7))[:, None] * v], -1).reshape(n_samples, n, d)
    e1 = torch.zeros_like(mu)
    e1[:, 0] = 1
    u_ = F.normalize(e1 - mu, dim=-1, eps=1e-7)
    return x - 2 * (x * u_).sum(-1, keepdim=True) * u_


def timed(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Median milliseconds per call after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - start) * 1e3)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    gen = torch.Generator(device=device).manual_seed(0)
    print(f"device={device} dtype={args.dtype} threads={torch.get_num_threads()} repeats={args.repeats}")
    print(
        f"{'N':>6} {'D':>4} {'kappa':>7} {'S':>3} | {'rounds':>6} {'iters':>5} | "
        f"{'w new':>8} {'w old':>8} {'x':>5} | {'all new':>8} {'all old':>8} {'x':>5}   (ms per call)"
    )
    for n, d, kappa, s in CASES:
        mu = F.normalize(torch.randn(n, d, generator=gen, device=device, dtype=dtype), dim=-1)
        k = torch.full((n,), kappa, device=device, dtype=dtype)
        rows = k.unsqueeze(0).expand(s, n).reshape(-1)
        rounds = vmf_distribution._accepted_proposal(rows, d - 1, gen)[2] if d != 3 else 0
        iters = old_cosines(rows, d)[1]
        w_new = timed(lambda: vmf_distribution._one_minus_w(rows, d, gen), args.repeats, device)
        w_old = timed(lambda: old_cosines(rows, d), args.repeats, device)
        all_new = timed(lambda: sample_vmf(mu, k, s, generator=gen), args.repeats, device)
        all_old = timed(lambda: old_sample_vmf(mu, k, s), args.repeats, device)
        print(
            f"{n:>6} {d:>4} {kappa:>7g} {s:>3} | {rounds:>6} {iters:>5} | "
            f"{w_new:>8.2f} {w_old:>8.2f} {w_old / w_new:>5.2f} | "
            f"{all_new:>8.2f} {all_old:>8.2f} {all_old / all_new:>5.2f}"
        )


if __name__ == "__main__":
    main()
