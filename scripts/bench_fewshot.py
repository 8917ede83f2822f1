"""Training episodes per second of the runner's few-shot loop against a bare PyTorch ProtoNet loop, side by side.

Same data (the in-memory training split), same model (Conv-4 by default, the same initial weights), the same
episodes in the same order, the same optimiser (built by the runner's `build_optimizer`). The runner goes through
its FewShotSampler, BatchSource (device-side scaling / augmentation) and `vmf_embeddings.train.train_epoch` with the
method head's loss; the bare loop indexes the uint8 images on the device with episode index tensors drawn up front,
scales and normalises them, and computes prototypes by reshape + mean, squared distances, cross-entropy, backward,
step. Timed rounds alternate between the two; the best round of each is kept. Extra arguments are Hydra overrides
(after the defaults `method=protonet arch=conv4 dataset=digits_fewshot`), e.g.

    python scripts/bench_fewshot.py --steps 200
    python scripts/bench_fewshot.py --steps 100 dataset=omniglot sampler.n_way=60
    python scripts/bench_fewshot.py --steps 100 dataset=miniimagenet amp=true channels_last=true
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from itertools import islice
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as vmf_embeddings.main, before torch loads OpenMP

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


from vmf_embeddings.build import build_data, build_model, build_optimizer, build_sampler  # noqa: E402
from vmf_embeddings.compose import compose_run_config  # noqa: E402
from vmf_embeddings.data_source import BatchSource  # noqa: E402
from vmf_embeddings.datasets.base import TensorSplit  # noqa: E402
from vmf_embeddings.embedding import TrainContext  # noqa: E402
from vmf_embeddings.runtime import configure_threads, resolve_device  # noqa: E402
from vmf_embeddings.train import HOOK_BATCH, train_epoch  # noqa: E402

DEFAULTS = ["method=protonet", "arch=conv4", "dataset=digits_fewshot"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _episodes_forever(sampler):
    """The sampler's episodes, epoch after epoch (as the runner draws them)."""
    while True:
        yield from sampler


def _bare_loop(backbone, optimizer, images, mean, std, episodes, n_way, k_shot, targets, amp, memory_format):
    """What a researcher would write by hand for ProtoNet; returns the summed loss (on the device)."""
    total = torch.zeros((), device=images.device)
    for idx in episodes:
        x = ((images[idx].float() / 255.0 - mean) / std).contiguous(memory_format=memory_format)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
            embeddings = backbone(x)
        embeddings = embeddings.float()
        prototypes = embeddings[: n_way * k_shot].reshape(n_way, k_shot, -1).mean(1)
        queries = embeddings[n_way * k_shot:]
        distances = (queries[:, None, :] - prototypes[None, :, :]).pow(2).sum(-1)
        loss = F.cross_entropy(-distances, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.detach()
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=100, help="episodes per timed round")
    parser.add_argument("--warmup", type=int, default=10, help="untimed episodes of each loop first")
    parser.add_argument("--repeats", type=int, default=3, help="alternating timed rounds; the best of each is kept")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    if min(args.steps, args.repeats) < 1 or args.warmup < 0:
        parser.error("--steps and --repeats must be >= 1, --warmup >= 0")

    cfg = compose_run_config(DEFAULTS + list(args.overrides))
    configure_threads(cfg.threads)
    device = resolve_device(cfg.device)
    amp = bool(cfg.amp)
    channels_last = bool(cfg.channels_last)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    torch.manual_seed(int(cfg.seed))
    data = build_data(cfg)
    if not isinstance(data.train, TensorSplit):
        sys.exit(f"bench_fewshot.py compares in-memory loops; dataset={cfg.dataset.name} is file-backed")
    runner_model = build_model(cfg).to(device).to(memory_format=memory_format)
    if not getattr(runner_model.head, "episodic", False):
        sys.exit(f"bench_fewshot.py times episodic methods (method=protonet); method={cfg.method.name} is not")
    bare_model = copy.deepcopy(runner_model)  # same initial weights
    runner_opt, bare_opt = build_optimizer(cfg, runner_model), build_optimizer(cfg, bare_model)

    # the runner: sampler -> BatchSource -> train_epoch, drawing episodes epoch after epoch
    sampler = build_sampler(cfg, data.train.labels, int(cfg.seed))
    n_way, k_shot, n_query = sampler.episode_layout
    source = BatchSource(data.train, data, device, data.train_augment, 0, channels_last, int(cfg.seed))
    plain = BatchSource(data.train, data, device, "none", 0, channels_last)
    runner_model.head.on_train_start(TrainContext(runner_model, source, plain, HOOK_BATCH, amp), resumed=False)
    bare_model.head.load_state_dict(runner_model.head.state_dict())
    runner_batches = source.batches(_episodes_forever(sampler))

    # the bare loop: the same episodes, drawn up front from an identical sampler, as index tensors on the device
    total = args.warmup + args.repeats * args.steps
    twin = build_sampler(cfg, data.train.labels, int(cfg.seed))
    episodes = torch.stack([torch.as_tensor(e) for e in islice(_episodes_forever(twin), total)]).to(device)
    images = data.train.images.to(device)
    stats = dict(dtype=torch.float32, device=device)
    mean = torch.as_tensor(data.mean, **stats).view(1, -1, 1, 1)
    std = torch.as_tensor(data.std, **stats).view(1, -1, 1, 1)
    targets = torch.arange(n_way, device=device).repeat_interleave(n_query)
    bare_position = 0

    def run_runner(steps: int) -> torch.Tensor:
        runner_model.train()
        loss_sum, _, _ = train_epoch(runner_model, runner_opt, islice(runner_batches, steps), amp)
        return loss_sum

    def run_bare(steps: int) -> torch.Tensor:
        nonlocal bare_position
        bare_model.train()
        chunk = episodes[bare_position: bare_position + steps]
        bare_position += steps
        return _bare_loop(bare_model.backbone, bare_opt, images, mean, std, chunk, n_way, k_shot, targets, amp,
                          memory_format)

    warm = {"runner": float(run_runner(args.warmup)), "bare": float(run_bare(args.warmup))}
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
          f"episode={n_way}-way {k_shot}-shot {n_query}-query ({n_way * (k_shot + n_query)} images) "
          f"steps={args.steps} repeats={args.repeats} amp={amp} channels_last={channels_last}")
    if args.warmup:
        print(f"warm-up mean loss (same episodes, same start): runner {warm['runner'] / args.warmup:.6f}   "
              f"bare {warm['bare'] / args.warmup:.6f}")
    print(f"runner: {runner_rate:.1f} episodes/s   bare PyTorch loop: {bare_rate:.1f} episodes/s   "
          f"ratio runner/bare: {runner_rate / bare_rate:.3f}")


if __name__ == "__main__":
    main()
