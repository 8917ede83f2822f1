"""Time per call of `sample_vmf` against the original loop-until-accepted sampler, side by side.

"old" re-implements the structure of the original (s-vae-pytorch as adapted by vmf_embeddings, reference note
§2.3): every iteration draws one Beta proposal per row from the global RNG, pending rows take it if accepted, and
the loop runs until every row has accepted (one host-device sync per iteration). It uses the exact b, not the
biased large-kappa shortcut, so both samplers draw from the same distribution and only the loop differs.
"new" is `vmf_embeddings.methods.vmf_distribution.sample_vmf` (a block of candidates per row, first accepted one).

    python scripts/bench_vmf_sampler.py                   # CPU, float32
    python scripts/bench_vmf_sampler.py --device cuda --repeats 50
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable, Tuple

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vmf_embeddings.methods import vmf_distribution  # noqa: E402
from vmf_embeddings.methods.vmf_distribution import sample_vmf  # noqa: E402

# (N rows, D, kappa, S samples): the paper's settings at init (note §2.2) and a class-sampling-sized batch
CASES = [
    (130, 3, 10.0, 10),  # MNIST batch, d = 3 (closed form, no rejection)
    (260, 128, 60.0, 10),  # CIFAR10 batch at init kappa
    (256, 128, 174.0, 10),  # CIFAR100, kappa_confidence 0.7
    (128, 512, 243.0, 10),  # CUB, kc 0.4
    (64, 512, 701.0, 10),  # SOP, kc 0.7
    (12800, 128, 60.0, 1),  # class draws for prediction: rows = batch x S x C
]


def old_sample_vmf(mu: torch.Tensor, kappa: torch.Tensor, n_samples: int) -> Tuple[torch.Tensor, int]:
    """The original loop (one proposal per row per iteration, until all accepted); returns (samples, iterations)."""
    n, d = mu.shape
    m = d - 1
    k = kappa.unsqueeze(0).expand(n_samples, n).reshape(-1)
    if d == 3:
        u = torch.rand(k.shape, dtype=mu.dtype, device=mu.device)
        w = 1 + torch.logsumexp(torch.stack([u.log(), (1 - u).log() - 2 * k]), 0) / k
        iterations = 0
    else:
        c = torch.sqrt(4 * k * k + m * m)
        b = (c - 2 * k) / m  # the original's (cancelling) form of the exact b
        a = (m + 2 * k + c) / 4
        delta = 4 * a * b / (1 + b) - m * torch.log(torch.tensor(float(m), dtype=mu.dtype))
        beta = torch.distributions.Beta(torch.tensor(m / 2.0), torch.tensor(m / 2.0))
        w = torch.zeros_like(k)
        pending = torch.ones_like(k, dtype=torch.bool)
        iterations = 0
        while bool(pending.any()):
            iterations += 1
            eps = beta.sample(k.shape).to(mu.device, mu.dtype)
            u = torch.rand(k.shape, dtype=mu.dtype, device=mu.device).clamp_min(1e-20)
            w_ = (1 - (1 + b) * eps) / (1 - (1 - b) * eps)
            t = 2 * a * b / (1 - (1 - b) * eps)
            accept = (m * torch.log(t) - t + delta) > torch.log(u)
            take = pending & accept
            w = torch.where(take, w_, w)
            pending = pending & ~accept
    v = F.normalize(torch.randn(n_samples * n, m, dtype=mu.dtype, device=mu.device), dim=-1)
    x = torch.cat([w[:, None], torch.sqrt((1 - w * w).clamp_min(1e-7))[:, None] * v], -1).reshape(n_samples, n, d)
    e1 = torch.zeros_like(mu)
    e1[:, 0] = 1
    u_ = F.normalize(e1 - mu, dim=-1, eps=1e-7)
    return x - 2 * (x * u_).sum(-1, keepdim=True) * u_, iterations


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
    args = parser.parse_args()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    gen = torch.Generator(device=device).manual_seed(0)
    print(f"device={device} dtype={args.dtype} threads={torch.get_num_threads()} repeats={args.repeats}")
    print(f"{'N':>6} {'D':>4} {'kappa':>7} {'S':>3} | {'new ms':>8} {'rounds':>6} | {'old ms':>8} {'iters':>5} | speed-up")
    for n, d, kappa, s in CASES:
        mu = F.normalize(torch.randn(n, d, generator=gen, device=device, dtype=dtype), dim=-1)
        k = torch.full((n,), kappa, device=device, dtype=dtype)
        rounds = 1
        if d != 3:
            rows = k.unsqueeze(0).expand(s, n).reshape(-1)
            rounds = vmf_distribution._accepted_beta(rows, d - 1, gen)[1]
        new_ms = timed(lambda: sample_vmf(mu, k, s, generator=gen), args.repeats, device)
        old_iters = old_sample_vmf(mu, k, s)[1]
        old_ms = timed(lambda: old_sample_vmf(mu, k, s), args.repeats, device)
        print(
            f"{n:>6} {d:>4} {kappa:>7g} {s:>3} | {new_ms:>8.2f} {rounds:>6} | {old_ms:>8.2f} {old_iters:>5} | "
            f"{old_ms / new_ms:>5.2f}x"
        )


if __name__ == "__main__":
    main()
