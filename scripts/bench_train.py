"""Steps per second of the runner's training loop against a bare PyTorch loop, side by side.

Same model (same initial weights), same loss head, same batch size and the same in-memory data; the bare
loop draws random indices on the device and scales pixels inline, the runner goes through its sampler,
BatchSource (device-side augmentation) and `train_epoch`. Extra overrides are Hydra overrides, e.g.

    python scripts/bench_train.py --steps 200 method=vmf_softmax
    python scripts/bench_train.py --steps 100 arch=resnet18 dataset=synthetic amp=true channels_last=true
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hydra import compose, initialize_config_dir  # noqa: E402

from vmf_embeddings.build import build_data, build_model, build_optimizer, build_sampler  # noqa: E402
from vmf_embeddings.data_source import BatchSource  # noqa: E402
from vmf_embeddings.rundir import register_resolvers  # noqa: E402
from vmf_embeddings.runtime import resolve_device  # noqa: E402
from vmf_embeddings.train import calibrate_head, train_epoch  # noqa: E402


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
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()

    register_resolvers()
    conf = str(Path(__file__).resolve().parents[1] / "conf")
    with initialize_config_dir(config_dir=conf, version_base="1.3"):
        cfg = compose(config_name="config", overrides=args.overrides)
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
    if runner_model.head.needs_calibration:
        calibrate_head(runner_model, source)
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


if __name__ == "__main__":
    main()
