"""Episodic and random batch samplers: batch composition, seeding, resume via state_dict, DataLoader use."""

import io

import numpy as np
import pytest
import torch

from vmf_embeddings.datasets.samplers import EpisodicSampler, RandomSampler

# uneven classes, including ones smaller than n_samples
LABELS = torch.repeat_interleave(torch.arange(7), torch.tensor([1, 3, 5, 20, 20, 8, 40]))


def _epoch(sampler):
    return [b.clone() for b in sampler]


@pytest.mark.parametrize("n_classes, n_samples", [(4, 5), (10, 13), (7, 1), (1, 40)])
def test_episodic_batch_composition(n_classes, n_samples):
    sampler = EpisodicSampler(LABELS, n_episodes=30, n_classes=n_classes, n_samples=n_samples, seed=0)
    sizes = torch.bincount(LABELS)
    batches = _epoch(sampler)
    assert len(sampler) == 30 and len(batches) == 30
    for idx in batches:
        assert idx.dtype == torch.int64 and idx.dim() == 1
        assert len(idx.unique()) == len(idx)  # no duplicate index
        classes, counts = LABELS[idx].unique(return_counts=True)
        assert len(classes) == min(n_classes, 7)
        assert torch.equal(counts, torch.clamp(sizes[classes], max=n_samples))


def test_episodic_covers_classes_and_images_uniformly():
    sampler = EpisodicSampler(LABELS, n_episodes=700, n_classes=2, n_samples=3, seed=1)
    idx = torch.cat(_epoch(sampler))
    per_class = torch.bincount(LABELS[idx], minlength=7)
    chosen = per_class / torch.clamp(torch.bincount(LABELS), max=3)  # times each class was picked
    assert torch.all((chosen - 200).abs() < 60)  # 700 * 2 / 7 = 200 expected per class
    big = idx[LABELS[idx] == 6]  # the 40-image class: every image drawn
    assert len(big.unique()) == 40


def test_samplers_reproducible_from_seed_and_independent_of_global_rng():
    for make in (lambda s: EpisodicSampler(LABELS, 5, 3, 4, seed=s), lambda s: RandomSampler(LABELS, 16, seed=s)):
        torch.manual_seed(0)
        np.random.seed(0)
        a = make(11)
        first = [_epoch(a), _epoch(a)]
        torch.manual_seed(123)
        np.random.seed(123)
        global_state = torch.get_rng_state()
        b = make(11)
        second = [_epoch(b), _epoch(b)]
        assert torch.equal(torch.get_rng_state(), global_state)  # the global RNG was not used
        for ea, eb in zip(first, second):
            assert all(torch.equal(x, y) for x, y in zip(ea, eb))
        assert any(not torch.equal(x, y) for x, y in zip(first[0], first[1]))  # epochs differ
        other = _epoch(make(12))
        assert any(not torch.equal(x, y) for x, y in zip(first[0], other))


@pytest.mark.parametrize("make", [lambda: EpisodicSampler(LABELS, 6, 3, 4, seed=5),
                                  lambda: RandomSampler(LABELS, 10, seed=5, drop_last=True)])
def test_resume_from_state_dict_replays_next_epoch(make):
    reference = make()
    _epoch(reference)
    state = reference.state_dict()
    buffer = io.BytesIO()
    torch.save(state, buffer)  # the checkpoint round trip
    buffer.seek(0)
    expected = _epoch(reference)

    resumed = make()
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    assert resumed.epoch == 1
    got = _epoch(resumed)
    assert all(torch.equal(x, y) for x, y in zip(got, expected))


def test_unconsumed_or_abandoned_epochs_do_not_shift_later_ones():
    a = EpisodicSampler(LABELS, 6, 3, 4, seed=2)
    b = EpisodicSampler(LABELS, 6, 3, 4, seed=2)
    iter(a)  # a DataLoader with workers calls iter() twice on its first epoch
    first_a = _epoch(a)
    first_b = next(iter(b))  # abandon after one batch (smoke runs)
    assert torch.equal(first_a[0], first_b)
    assert all(torch.equal(x, y) for x, y in zip(_epoch(a), _epoch(b)))


def test_random_sampler_is_a_seeded_permutation():
    s = RandomSampler(LABELS, batch_size=16, seed=0)
    batches = _epoch(s)
    assert len(s) == len(batches) == 7 and [len(b) for b in batches] == [16] * 6 + [1]
    assert torch.equal(torch.cat(batches).sort().values, torch.arange(97))
    d = RandomSampler(LABELS, batch_size=16, seed=0, drop_last=True)
    assert len(d) == len(_epoch(d)) == 6


def test_distributed_shares():
    full = _epoch(EpisodicSampler(LABELS, 6, 3, 4, seed=9))
    ranks = [_epoch(EpisodicSampler(LABELS, 3, 3, 4, seed=9, rank=r, world_size=2)) for r in (0, 1)]
    assert all(torch.equal(x, y) for x, y in zip(ranks[0], full[0::2]))
    assert all(torch.equal(x, y) for x, y in zip(ranks[1], full[1::2]))
    parts = [torch.cat(_epoch(RandomSampler(LABELS, 9, seed=9, rank=r, world_size=3))) for r in range(3)]
    assert len({len(p) for p in parts}) == 1  # equal steps on every rank
    assert set(torch.cat(parts).tolist()) == set(range(97))
    # batch_size is the global batch: the ranks' parts of step i make up the one-process batch i
    one = _epoch(RandomSampler(LABELS, 8, seed=9))
    two = [_epoch(RandomSampler(LABELS, 8, seed=9, rank=r, world_size=2)) for r in (0, 1)]
    assert len(two[0]) == len(two[1]) == len(one) and all(len(b) == 4 for b in two[0][:-1])
    for step in range(len(one) - 1):
        assert sorted(torch.cat([two[0][step], two[1][step]]).tolist()) == sorted(one[step].tolist())
    with pytest.raises(ValueError, match="multiple of 3"):
        RandomSampler(LABELS, 8, seed=9, rank=0, world_size=3)


def test_as_dataloader_batch_sampler():
    images = torch.arange(97).float().view(97, 1, 1, 1)
    dataset = torch.utils.data.TensorDataset(images, LABELS)
    sampler = EpisodicSampler(LABELS, n_episodes=4, n_classes=3, n_samples=2, seed=0)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler)
    assert len(loader) == 4
    expected = _epoch(EpisodicSampler(LABELS, n_episodes=4, n_classes=3, n_samples=2, seed=0))
    for (x, y), idx in zip(loader, expected):
        assert torch.equal(x.view(-1).long(), idx) and torch.equal(y, LABELS[idx])
