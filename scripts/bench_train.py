"""Steps per second of the runner's training loop against a bare PyTorch loop, side by side.

Same model (same initial weights), same loss head, same batch size and the same in-memory data; the bare
loop draws random indices on the device and scales pixels inline, the runner goes through its sampler,
BatchSource (device-side augmentation) and `train_epoch`. Extra overrides are Hydra overrides, e.g.

    python scripts/bench_train.py --steps 200 method=vmf_softmax
    python scripts/bench_train.py --steps 100 arch=resnet18 dataset=synthetic amp=true channels_last=true
    python scripts/bench_train.py method=guided_prototypes cost=ordinal dataset=synthetic dataset.n_train_classes=100

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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hydra import compose, initialize_config_dir  # noqa: E402

from vmf_embeddings.build import build_data, build_model, build_optimizer, build_sampler  # noqa: E402
from vmf_embeddings.costs import build_cost  # noqa: E402
from vmf_embeddings.data_source import BatchSource  # noqa: E402
from vmf_embeddings.rundir import register_resolvers  # noqa: E402
from vmf_embeddings.embedding import TrainContext  # noqa: E402
from vmf_embeddings.legacy import apply_legacy_keys  # noqa: E402
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
    parser.add_argument("--contended", action="store_true",
                        help="time the runner quiet, then beside a busy process; print the slowdown")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()

    register_resolvers()
    conf = str(Path(__file__).resolve().parents[1] / "conf")
    with initialize_config_dir(config_dir=conf, version_base="1.3"):
        cfg = compose(config_name="config", overrides=args.overrides)
    apply_legacy_keys(cfg)
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
