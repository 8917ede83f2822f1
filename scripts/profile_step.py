"""Where a training step's time goes: data, forward, loss, backward, optimiser, from torch.profiler.

Builds the run exactly as `python -m vmf_embeddings.main` would (same sampler, BatchSource, augmentation,
model and head hooks; nothing is written), runs `--warmup` steps, then profiles `--steps` steps with each
phase in a `torch.profiler.record_function` region and prints one line per phase (ms per step and share of
the step). On CUDA every region ends with a synchronize, so a phase's time is its device time too (this
costs a little throughput; the training loop itself never synchronises). Extra arguments are Hydra overrides:

    python scripts/profile_step.py                                    # the default job (digits, in memory)
    python scripts/profile_step.py --steps 30 dataset=cub200 arch=resnet18 sampler=random sampler.batch_size=32
    python scripts/profile_step.py --ops 10 ...                       # also the 10 costliest operators

`--ops N` adds torch.profiler's own table of the N operators with the most self time.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as vmf_embeddings.main, before torch loads OpenMP
os.environ.setdefault("KINETO_LOG_LEVEL", "5")  # the profiler library's start/stop chatter

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile, record_function  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


from vmf_embeddings.compose import compose_run_config  # noqa: E402
from vmf_embeddings.costs import build_cost  # noqa: E402
from vmf_embeddings.embedding import TrainContext  # noqa: E402
from vmf_embeddings.runtime import autocast_dtype, configure_threads, seed_everything  # noqa: E402
from vmf_embeddings.train import HOOK_BATCH, build_run  # noqa: E402

PHASES = ("data", "forward", "loss", "backward", "optimizer")


def endless_batches(run):
    """The run's training batches, epoch after epoch (the sampler reshuffles each pass)."""
    while True:
        yield from run.train_source.batches(run.sampler)


def profiled_steps(run, steps: int, batches) -> None:
    model, head, optimizer, amp = run.model, run.model.head, run.optimizer, run.amp
    cuda = run.device.type == "cuda"

    @contextmanager
    def phase(name: str):
        with record_function(f"phase/{name}"):
            yield
            if cuda:
                torch.cuda.synchronize(run.device)

    model.train()
    for step in range(steps):
        with phase("data"):
            x, y, t = next(batches)
        with phase("forward"):
            with torch.autocast(x.device.type, dtype=autocast_dtype(amp), enabled=bool(amp)):
                embeddings = model(x)
        with phase("loss"):
            loss = head.loss(embeddings.float(), y, t)
        with phase("backward"):
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
        with phase("optimizer"):
            optimizer.step()
            head.after_step(step)


def phase_table(prof, steps: int) -> list:
    """[(phase, ms per step, share of the step)] from the profiler's region totals (wall time of each region)."""
    totals = {name: 0.0 for name in PHASES}
    for event in prof.key_averages():
        if event.key.startswith("phase/"):
            totals[event.key.split("/", 1)[1]] += event.cpu_time_total / 1000.0  # us -> ms
    whole = sum(totals.values()) or 1.0
    return [(name, totals[name] / steps, totals[name] / whole) for name in PHASES]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--ops", type=int, default=0, help="also print the N operators with the most self time")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()

    cfg = compose_run_config(args.overrides)
    threads = configure_threads(cfg.threads)
    seed_everything(int(cfg.seed))
    with tempfile.TemporaryDirectory() as scratch:
        run = build_run(cfg, Path(scratch))  # writes nothing; the dir is only where checkpoints would go
        context = TrainContext(run.model, run.train_source, run.plain_train_source, HOOK_BATCH, run.amp,
                               run.sampler, build_cost(cfg))
        run.model.head.on_train_start(context, resumed=False)
        batches = endless_batches(run)
        profiled_steps(run, args.warmup, batches)
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if run.device.type == "cuda" else [])
        with profile(activities=activities) as prof:
            profiled_steps(run, args.steps, batches)
    rows = phase_table(prof, args.steps)
    step_ms = sum(ms for _, ms, _ in rows)
    x, _, _ = next(endless_batches(run))
    print(f"device={run.device} threads={threads} dataset={cfg.dataset.name} arch={cfg.arch.name} "
          f"method={cfg.method.name} batch={x.shape[0]} input={tuple(x.shape[1:])} amp={bool(run.amp)} "
          f"steps={args.steps}")
    print(f"{'phase':<10} {'ms/step':>9} {'share':>7}")
    for name, ms, share in rows:
        print(f"{name:<10} {ms:>9.2f} {share:>7.1%}")
    print(f"{'step':<10} {step_ms:>9.2f} {1:>7.1%}   ({1000 / step_ms:.1f} steps/s while profiled)")
    if args.ops:
        sort = "self_cuda_time_total" if run.device.type == "cuda" else "self_cpu_time_total"
        print(prof.key_averages().table(sort_by=sort, row_limit=args.ops))


if __name__ == "__main__":
    main()
