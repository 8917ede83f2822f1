"""Steps per second of the runner's training loop against a bare PyTorch loop, side by side.

Same model (same initial weights), same loss head, same batch size and the same in-memory data; the bare
loop draws random indices on the device and scales pixels inline, the runner goes through its sampler,
BatchSource (device-side augmentation) and `train_epoch`. Extra overrides are Hydra overrides, e.g.

    python scripts/bench_train.py --steps 200 method=vmf_softmax
    python scripts/bench_train.py --steps 100 arch=resnet18 dataset=synthetic amp=true channels_last=true
    python scripts/bench_train.py method=guided_prototypes cost=ordinal dataset=synthetic dataset.n_train_classes=100

For the vMF softmax (method=vmf_softmax) it then times the runner against a copy of itself with the other
normaliser -- the exact log C_d / A_d (method.params.normalizer=exact) against the paper's closed-form
approximation (paper) -- same weights and batches, alternating every `--chunk` steps so that a shared machine's
load hits both alike, and prints both rates and their ratio:

    python scripts/bench_train.py --steps 200 method=vmf_softmax

`--contended` instead times the runner alone, first on a quiet machine and then while a competing
busy process (one spinning core) runs, and prints the slowdown ratio: with idle OpenMP threads
sleeping (OMP_WAIT_POLICY=PASSIVE, as `python -m vmf_embeddings.main` sets) it stays near the share of
the CPU that was lost; spinning threads made it 10x. `threads=N` picks the intra-op thread count.
"""

from __future__ import annotations

import argparse
import copy
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as vmf_embeddings.main, before torch loads OpenMP

import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


from vmf_embeddings.build import build_data, build_model, build_optimizer, build_sampler  # noqa: E402
from vmf_embeddings.compose import compose_run_config  # noqa: E402
from vmf_embeddings.costs import build_cost  # noqa: E402
from vmf_embeddings.data_source import BatchSource  # noqa: E402
from vmf_embeddings.embedding import TrainContext  # noqa: E402
from vmf_embeddings.runtime import configure_threads, resolve_device  # noqa: E402
from vmf_embeddings.train import HOOK_BATCH, train_epoch  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _bare_loop(model, optimizer, images, labels, batch_size, steps, amp, memory_format):
    """What a researcher would write by hand: random batch, scale, forward, loss, backward, step."""
    head = model.head
    for _ in range(steps):
        idx = torch.randint(0, images.shape[0], (batch_size,), device=images.device)
        x = (images[idx].float() / 255.0).contiguous(memory_format=memory_format)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
            features = model(x)
        loss = head.loss(features.float(), labels[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3, help="alternating timed rounds; the best of each is kept")
    parser.add_argument("--chunk", type=int, default=20,
                        help="vMF normaliser comparison: steps per alternating chunk (exact, approximation, ...)")
    parser.add_argument("--contended", action="store_true",
                        help="time the runner quiet, then beside a busy process; print the slowdown")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()

    cfg = compose_run_config(args.overrides)
    threads = configure_threads(cfg.threads)
    device = resolve_device(cfg.device)
    amp = bool(cfg.amp)
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    torch.manual_seed(0)
    data = build_data(cfg)
    runner_model = build_model(cfg).to(device).to(memory_format=memory_format)
    bare_model = copy.deepcopy(runner_model)
    runner_opt, bare_opt = build_optimizer(cfg, runner_model), build_optimizer(cfg, bare_model)
    source = BatchSource(data.train, data, device, data.train_augment, 0, memory_format == torch.channels_last)
    sampler = build_sampler(cfg, data.train.labels, int(cfg.seed))
    batch_size = len(next(iter(sampler)))
    images, labels = data.train.images.to(device), data.train.labels.to(device)
    plain = BatchSource(data.train, data, device, "none", 0, memory_format == torch.channels_last)
    context = TrainContext(runner_model, source, plain, HOOK_BATCH, amp, sampler=sampler, cost_matrix=build_cost(cfg))
    runner_model.head.on_train_start(context, resumed=False)
    bare_model.head.load_state_dict(runner_model.head.state_dict())

    def _stream(steps: int):
        produced = 0
        while produced < steps:
            for batch in source.batches(sampler):
                yield batch
                produced += 1
                if produced >= steps:
                    return

    def run_runner(steps: int) -> None:
        runner_model.train()
        train_epoch(runner_model, runner_opt, _stream(steps), amp)

    def run_bare(steps: int) -> None:
        bare_model.train()
        _bare_loop(bare_model, bare_opt, images, labels, batch_size, steps, amp, memory_format)

    run_runner(args.warmup)
    if args.contended:
        contended(run_runner, device, args, cfg, threads)
        return
    run_bare(args.warmup)
    best = {"runner": float("inf"), "bare": float("inf")}
    for _ in range(args.repeats):
        for name, function in (("runner", run_runner), ("bare", run_bare)):
            _sync(device)
            start = time.perf_counter()
            function(args.steps)
            _sync(device)
            best[name] = min(best[name], time.perf_counter() - start)
    runner_rate, bare_rate = args.steps / best["runner"], args.steps / best["bare"]
    print(f"device={device} method={cfg.method.name} arch={cfg.arch.name} dataset={cfg.dataset.name} "
          f"batch={batch_size} steps={args.steps} amp={amp} channels_last={memory_format == torch.channels_last}")
    print(f"runner: {runner_rate:.1f} steps/s   bare PyTorch loop: {bare_rate:.1f} steps/s   "
          f"ratio runner/bare: {runner_rate / bare_rate:.3f}")
    normalizer = str(OmegaConf.select(cfg, "method.params.normalizer", default=""))
    other = {"exact": "paper", "paper": "exact"}.get(normalizer) if cfg.method.get("uses_vmf", False) else None
    if other:
        compare_normalizers(cfg, runner_model, run_runner, normalizer, other, _stream, device, memory_format, amp,
                            args)


def compare_normalizers(cfg, runner_model, run_runner, normalizer, other, stream, device, memory_format, amp,
                        args) -> None:
    """vMF: the runner against a copy of itself with the other method.params.normalizer (exact log C_d / A_d vs
    the paper's approximation): same weights, z_kappa_mult and batch stream, timed in alternating chunks."""
    other_cfg = copy.deepcopy(cfg)
    other_cfg.method.params.normalizer = other
    other_model = build_model(other_cfg).to(device).to(memory_format=memory_format)
    other_model.load_state_dict(runner_model.state_dict())
    other_opt = build_optimizer(other_cfg, other_model)

    def run_other(steps: int) -> None:
        other_model.train()
        train_epoch(other_model, other_opt, stream(steps), amp)

    run_other(args.warmup)
    best = _interleaved({normalizer: run_runner, other: run_other}, args.steps, args.chunk, args.repeats, device)
    exact, paper = args.steps / best["exact"], args.steps / best["paper"]
    print(f"vMF normaliser (runner, alternating chunks of {args.chunk} steps): exact {exact:.1f} steps/s   "
          f"paper approximation {paper:.1f} steps/s   ratio exact/approximation: {exact / paper:.3f} "
          f"(exact costs {100 * (paper / exact - 1):+.1f}% time per step)")


def _interleaved(functions, steps: int, chunk: int, repeats: int, device: torch.device) -> dict:
    """Best-of-repeats seconds for `steps` steps of each function, run in alternating chunks of `chunk` steps, so
    that on a shared machine every function runs under the same load."""
    best = {name: float("inf") for name in functions}
    for _ in range(repeats):
        total = dict.fromkeys(functions, 0.0)
        done = 0
        while done < steps:
            n = min(chunk, steps - done)
            for name, function in functions.items():
                _sync(device)
                start = time.perf_counter()
                function(n)
                _sync(device)
                total[name] += time.perf_counter() - start
            done += n
        best = {name: min(best[name], total[name]) for name in functions}
    return best


def _timed(function, steps: int, device: torch.device, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        function(steps)
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return best


def contended(run_runner, device, args, cfg, threads: int) -> None:
    """Runner steps/s on a quiet machine, then with one busy competing process; their ratio."""
    quiet = _timed(run_runner, args.steps, device, args.repeats)
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        loaded = _timed(run_runner, args.steps, device, args.repeats)
    finally:
        busy.kill()
        busy.wait()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"device={device} method={cfg.method.name} arch={cfg.arch.name} threads={threads} cores={cores} "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')} steps={args.steps}")
    bound = f"<= {cores / (cores - 1):.2f}x" if cores > 1 else "2x (time-shared)"
    print(f"quiet: {args.steps / quiet:.1f} steps/s   beside a busy process: {args.steps / loaded:.1f} steps/s   "
          f"slowdown: {loaded / quiet:.2f}x (one of {cores} cores lost: proportional is {bound})")


if __name__ == "__main__":
    main()
