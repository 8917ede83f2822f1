"""Batched on-device augmentation: shapes, exact crop/flip semantics, cutout, normalisation."""

import pytest
import torch
import torch.nn.functional as F

from vmf_embeddings.datasets.augment import DeviceAugment, cutout, eval_transform, random_crop_flip


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_none_scales_and_normalises():
    x = torch.randint(0, 256, (5, 3, 8, 8), dtype=torch.uint8)
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 2.0)
    out = DeviceAugment("none", mean, std)(x, _gen())
    ref = (x.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert out.dtype == torch.float32 and out.shape == x.shape
    assert torch.allclose(out, ref) and torch.allclose(eval_transform(x, mean, std), ref)
    f = torch.rand(2, 1, 4, 4)
    assert torch.allclose(eval_transform(f, (0.0,), (1.0,)), f)  # float input is taken as scaled


def test_cifar_output_shape_dtype_and_determinism():
    x = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    aug = DeviceAugment("cifar", (0.49, 0.48, 0.45), (0.25, 0.24, 0.26))
    a, b = aug(x, _gen(3)), aug(x, _gen(3))
    assert a.shape == x.shape and a.dtype == torch.float32 and torch.equal(a, b)
    assert not torch.equal(a, aug(x, _gen(4)))


def test_crop_flip_is_a_reflect_padded_crop_per_sample():
    """Every output equals one of the 9 x 9 crops (maybe mirrored) of F.pad(x, 4, 'reflect')."""
    x = torch.rand(24, 2, 10, 10)  # unique values
    out = random_crop_flip(x, padding=4, generator=_gen(1))
    padded = F.pad(x, (4, 4, 4, 4), mode="reflect")
    seen_flip, seen_offsets = set(), set()
    for n in range(x.shape[0]):
        matches = [(dy, dx, fl) for dy in range(9) for dx in range(9) for fl in (False, True)
                   if torch.equal(out[n], (lambda c: c.flip(-1) if fl else c)(padded[n, :, dy:dy + 10, dx:dx + 10]))]
        assert matches, f"sample {n} is not a crop of the padded image"
        seen_flip.add(matches[0][2])
        seen_offsets.add(matches[0][:2])
    assert seen_flip == {False, True} and len(seen_offsets) > 5


def test_without_padding_crop_flip_permutes_pixels():
    x = torch.randint(0, 256, (32, 3, 6, 6), dtype=torch.uint8)
    out = random_crop_flip(x, padding=0, generator=_gen(2))
    assert out.dtype == torch.uint8
    flipped = torch.tensor([torch.equal(o, i.flip(-1)) for o, i in zip(out, x)])
    same = torch.tensor([torch.equal(o, i) for o, i in zip(out, x)])
    assert torch.all(flipped | same) and flipped.any() and same.any()
    assert torch.equal(out.flatten(1).sort(1).values, x.flatten(1).sort(1).values)


def test_cutout_zeroes_one_clipped_8x8_square_per_sample():
    x = torch.ones(200, 3, 32, 32)
    out = cutout(x, 8, generator=_gen(5))
    full = 0
    for n in range(out.shape[0]):
        zero = out[n] == 0
        assert torch.equal(zero[0], zero[1]) and torch.equal(zero[0], zero[2])  # same square in every channel
        rows, cols = zero[0].nonzero(as_tuple=True)
        h, w = int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)
        assert zero[0].sum() == h * w and 4 <= h <= 8 and 4 <= w <= 8  # one filled rectangle, clipped at borders
        full += int(h == 8 and w == 8)
    assert full > 60  # centre at least 4 px from both borders: P = (24/32)^2 = 0.56


def test_cifar_pipeline_applies_cutout_after_normalisation():
    x = torch.full((50, 3, 32, 32), 200, dtype=torch.uint8)
    out = DeviceAugment("cifar", (0.1, 0.1, 0.1), (0.5, 0.5, 0.5))(x, _gen(0))
    value = (200 / 255 - 0.1) / 0.5
    zeros = (out == 0).flatten(1).sum(1)
    assert torch.all((zeros >= 3 * 16) & (zeros <= 3 * 64))
    assert torch.allclose(out[out != 0], torch.tensor(value))  # crop/flip of a constant image is constant


def test_unknown_kind_rejected():
    with pytest.raises(ValueError):
        DeviceAugment("autoaugment", (0.0,), (1.0,))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cifar_on_cuda_matches_its_own_generator():
    x = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, device="cuda")
    aug = DeviceAugment("cifar", (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    a = aug(x, torch.Generator(device="cuda").manual_seed(0))
    b = aug(x, torch.Generator(device="cuda").manual_seed(0))
    assert a.device.type == "cuda" and a.dtype == torch.float32 and torch.equal(a, b)


def test_crop_flip_kind_has_no_cutout_and_cifar_kind_has():
    from vmf_embeddings.datasets.augment import DeviceAugment

    x = torch.full((16, 3, 32, 32), 255, dtype=torch.uint8)
    g = torch.Generator().manual_seed(0)
    assert (DeviceAugment("crop_flip", (0.0,) * 3, (1.0,) * 3)(x, generator=g) == 1.0).all()
    assert (DeviceAugment("cifar", (0.0,) * 3, (1.0,) * 3)(x, generator=g) == 0.0).any()
