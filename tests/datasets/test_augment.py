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


# ---------------------------------------------------------------- kind="affine": RandomAffine(degrees, scale)
def _digit_images(n=8, size=28):
    """Real digits (sklearn's, upscaled to `size` px as the default dataset): uint8 N x 1 x S x S."""
    from sklearn.datasets import load_digits

    from vmf_embeddings.datasets.digits import _upscale

    return _upscale(load_digits().data[:n], size)


def _tv_affine(x, angle, scale):
    """torchvision's RandomAffine with these drawn parameters (no translation, no shear, NEAREST, fill 0)."""
    import torchvision.transforms.functional as TF
    from torchvision.transforms import InterpolationMode

    return TF.affine(x, angle=float(angle), translate=[0, 0], scale=float(scale), shear=[0.0, 0.0],
                     interpolation=InterpolationMode.NEAREST, fill=0)


def _mismatch(a, b):
    """Fraction of differing pixels: nearest-neighbour ties (a source point exactly between two pixels) may
    round either way, so the comparisons allow a few border pixels."""
    assert a.shape == b.shape
    return float((a != b).float().mean())


def test_affine_rotation_by_a_known_angle_matches_torchvision():
    x = _digit_images()
    aug = DeviceAugment("affine", (0.0,), (1.0,), degrees=(30.0, 30.0), scale=(1.0, 1.0))  # a one-point range
    out = aug(x, _gen(0))
    assert out.shape == x.shape and out.dtype == torch.float32
    ref = _tv_affine(x.float() / 255, 30.0, 1.0)
    assert _mismatch(out, ref) < 0.01
    assert not torch.equal(out, x.float() / 255)  # it did rotate
    # clockwise, as torchvision's F.affine (RandomAffine's angles are symmetric): right of the centre moves down
    dot = torch.zeros(1, 1, 28, 28)
    dot[0, 0, 14, 24] = 1.0
    from vmf_embeddings.datasets.augment import affine_transform

    moved = affine_transform(dot, torch.tensor([90.0]), torch.tensor([1.0]))
    assert moved[0, 0].nonzero().tolist() == [[24, 13]] and torch.equal(moved, _tv_affine(dot, 90.0, 1.0))
    # non-square images: the grid is rescaled per axis
    wide = torch.rand(3, 2, 20, 32, generator=_gen(1))
    turned = affine_transform(wide, torch.full((3,), -25.0), torch.ones(3))
    assert _mismatch(turned, _tv_affine(wide, -25.0, 1.0)) < 0.01


def test_affine_zoom_by_1_3_matches_torchvision():
    x = torch.zeros(1, 1, 28, 28, dtype=torch.uint8)
    x[..., 9:19, 9:19] = 255  # a centred 10 x 10 square
    aug = DeviceAugment("affine", (0.0,), (1.0,), degrees=0, scale=(1.3, 1.3))
    out = aug(x, _gen(0))
    assert _mismatch(out, _tv_affine(x.float() / 255, 0.0, 1.3)) < 0.01
    side = int(out[0, 0, 14].sum())
    assert side in (12, 13, 14) and int(out.sum()) == side * int(out[0, 0, :, 14].sum())  # ~13 x 13: zoomed in
    digits = _digit_images()
    assert _mismatch(aug(digits, _gen(0)), _tv_affine(digits.float() / 255, 0.0, 1.3)) < 0.01


def test_affine_random_draws_are_random_affine_per_sample():
    """Each sample gets its own angle ~ U(-40, 40) and zoom 1.3 from the generator, and its output is
    torchvision's affine with exactly those parameters."""
    from vmf_embeddings.datasets.augment import sample_affine_params

    x = _digit_images(16)
    aug = DeviceAugment("affine", (0.0,), (1.0,))  # defaults: the notebook's RandomAffine(degrees=40, scale=(1.3, 1.3))
    assert aug.degrees == (-40.0, 40.0) and aug.scale == (1.3, 1.3)
    out = aug(x, _gen(7))
    angles, scales = sample_affine_params(16, aug.degrees, aug.scale, _gen(7))
    assert len(set(angles.tolist())) == 16 and torch.all(scales == torch.tensor(1.3))
    for n in range(16):
        assert _mismatch(out[n], _tv_affine(x[n].float() / 255, angles[n], scales[n])) < 0.01, n


def test_affine_parameters_follow_random_affine_distribution():
    from scipy import stats

    from vmf_embeddings.datasets.augment import affine_ranges, sample_affine_params

    angles, scales = sample_affine_params(20_000, (-40.0, 40.0), (1.3, 1.3), _gen(3))
    assert float(angles.min()) >= -40.0 and float(angles.max()) < 40.0
    assert stats.kstest(angles.numpy(), stats.uniform(loc=-40, scale=80).cdf).pvalue > 1e-3
    assert torch.all(scales == torch.tensor(1.3))
    _, zooms = sample_affine_params(20_000, (0.0, 0.0), (0.8, 1.2), _gen(4))
    assert stats.kstest(zooms.numpy(), stats.uniform(loc=0.8, scale=0.4).cdf).pvalue > 1e-3
    # RandomAffine's reading of the parameters: d -> (-d, d), a pair as is
    assert affine_ranges(40, (1.3, 1.3)) == ((-40.0, 40.0), (1.3, 1.3))
    assert affine_ranges([-10, 20], [0.9, 1.1]) == ((-10.0, 20.0), (0.9, 1.1))
    for degrees, scale in ((-1, (1.0, 1.0)), ((20, 10), (1.0, 1.0)), (10, (1.2, 1.1)), (10, (0.0, 1.0)), (10, 1.3)):
        with pytest.raises(ValueError) as info:
            affine_ranges(degrees, scale)
        assert "\n" not in str(info.value)


def test_affine_is_deterministic_per_generator_seed_and_normalises_after():
    x = _digit_images(12)
    aug = DeviceAugment("affine", (0.25,), (0.5,))
    a, b = aug(x, _gen(5)), aug(x, _gen(5))
    assert a.shape == x.shape and a.dtype == torch.float32 and torch.equal(a, b)
    assert not torch.equal(a, aug(x, _gen(6)))
    assert torch.equal(a, aug(x.float() / 255, _gen(5)))  # float input is taken as already scaled
    # the zero fill is black before normalisation, as RandomAffine(fill=0) -> ToTensor -> Normalize
    white = torch.full((4, 1, 28, 28), 255, dtype=torch.uint8)
    out = DeviceAugment("affine", (0.25,), (0.5,), degrees=(45, 45), scale=(1.0, 1.0))(white, _gen(0))
    assert set(out.unique().tolist()) == {(0 - 0.25) / 0.5, (1 - 0.25) / 0.5}
    assert torch.all(out[:, :, 0, 0] == -0.5) and torch.all(out[:, :, 14, 14] == 1.5)  # corners filled, centre kept
    assert "degrees=(-40.0, 40.0)" in repr(DeviceAugment("affine", (0.0,), (1.0,)))


def test_affine_kind_is_refused_for_bad_parameters_and_unknown_kinds_in_one_line():
    from vmf_embeddings.datasets.digits import load_digits
    from vmf_embeddings.errors import ConfigError

    with pytest.raises(ValueError) as info:
        DeviceAugment("rotation", (0.0,), (1.0,))
    assert "affine" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ValueError, match="scale"):
        DeviceAugment("affine", (0.0,), (1.0,), scale=(2.0, 1.0))
    for kwargs, key in (({"augment": "rotation"}, "dataset.loader.augment='rotation'"),
                        ({"augment": "affine", "affine_degrees": -5}, "dataset.loader.affine_degrees=-5"),
                        ({"augment": "affine", "affine_scale": [1.3]}, "dataset.loader.affine_scale=[1.3]")):
        with pytest.raises(ConfigError) as info:
            load_digits(**kwargs)
        assert str(info.value).startswith(key) and "\n" not in str(info.value), str(info.value)


def test_loaders_default_to_no_augmentation_and_carry_the_affine_parameters(tmp_path):
    import dataset_fakes
    from tests.conftest import compose_config
    from vmf_embeddings.data_source import BatchSource
    from vmf_embeddings.datasets.digits import load_digits
    from vmf_embeddings.datasets.torchvision_sets import load_fashion_mnist, load_mnist

    for name in ("digits", "mnist", "fashion_mnist"):
        assert compose_config([f"dataset={name}"]).dataset.loader.augment == "none"
    plain = load_digits()
    assert plain.train_augment == "none" and plain.train_augment_params == {}
    source = BatchSource(plain.train, plain, torch.device("cpu"), plain.train_augment)
    x, _, _ = next(source.batches([torch.arange(10)]))
    assert torch.equal(x, eval_transform(plain.train.images[:10], (0.0,), (1.0,)))  # unchanged default path
    assert torch.equal(source.generator.get_state(), torch.Generator().manual_seed(0).get_state())  # draws nothing

    data = load_digits(augment="affine", affine_degrees=10, affine_scale=[1.1, 1.2])
    assert data.train_augment == "affine" and data.train_augment_params == {"degrees": (-10.0, 10.0),
                                                                           "scale": (1.1, 1.2)}
    source = BatchSource(data.train, data, torch.device("cpu"), data.train_augment, seed=3)
    assert (source.augment.kind, source.augment.degrees, source.augment.scale) == ("affine", (-10.0, 10.0), (1.1, 1.2))
    x, _, _ = next(source.batches([torch.arange(10)]))
    assert x.shape == (10, 1, 28, 28) and not torch.equal(x, eval_transform(data.train.images[:10], (0.0,), (1.0,)))
    # validation / extraction sources ask for "none" and stay plain
    assert BatchSource(data.val, data, torch.device("cpu"), "none").augment.kind == "none"

    for loader, folder in ((load_mnist, "MNIST"), (load_fashion_mnist, "FashionMNIST")):
        dataset_fakes.write_mnist(tmp_path, folder, n_train=100, n_test=10)
        assert loader(str(tmp_path), download=False).train_augment == "none"
        data = loader(str(tmp_path), download=False, augment="affine")
        assert data.train_augment == "affine" and data.train_augment_params == {"degrees": (-40.0, 40.0),
                                                                               "scale": (1.3, 1.3)}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_affine_on_cuda_matches_cpu_and_its_own_generator():
    from vmf_embeddings.datasets.augment import affine_transform

    x = _digit_images(64).cuda()
    aug = DeviceAugment("affine", (0.0,), (1.0,))
    a = aug(x, torch.Generator(device="cuda").manual_seed(0))
    b = aug(x, torch.Generator(device="cuda").manual_seed(0))
    assert a.device.type == "cuda" and a.dtype == torch.float32 and torch.equal(a, b)
    angles = torch.linspace(-40, 40, 64)
    on_gpu = affine_transform(x.float() / 255, angles.cuda(), torch.full((64,), 1.3, device="cuda"))
    on_cpu = affine_transform(x.cpu().float() / 255, angles, torch.full((64,), 1.3))
    assert _mismatch(on_gpu.cpu(), on_cpu) < 0.01


def test_crop_flip_rotate_rotates_within_15_degrees_after_crop_and_flip():
    from vmf_embeddings.datasets.augment import DeviceAugment, random_crop_flip, sample_affine_params

    aug = DeviceAugment("crop_flip_rotate", mean=(0.0,), std=(1.0,))
    assert aug.degrees == (-15.0, 15.0) and aug.scale == (1.0, 1.0)
    x = (torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    out = aug(x, torch.Generator().manual_seed(5))
    again = aug(x, torch.Generator().manual_seed(5))
    assert out.shape == (6, 3, 32, 32) and out.dtype == torch.float32 and torch.equal(out, again)
    g = torch.Generator().manual_seed(5)
    cropped = random_crop_flip(x, 4, g)  # the same draws in the same order: crop/flip first, then the angles
    angles, _ = sample_affine_params(6, (-15.0, 15.0), (1.0, 1.0), g)
    assert float(angles.abs().max()) <= 15.0
    from vmf_embeddings.datasets.augment import affine_transform

    expected = affine_transform(cropped.float() / 255, angles, torch.ones(6))
    torch.testing.assert_close(out, expected)
