"""Transforms: each does what its name says, deterministically; a whole Task build is a pure
function of its spec (same tensors, same fingerprint, in another process too)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from pydantic import ValidationError

from tasks.pool import PoolSpec, build_pool
from tasks.transforms import Blur, Classes, Invert, Noise, Permute, Rotate, n_classes_after

Y = torch.zeros(4, dtype=torch.int64)


def images(n: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.rand((n, 28, 28), generator=torch.Generator().manual_seed(seed))


def blob(cy: float = 13.5, cx: float = 13.5, s: float = 2.5) -> torch.Tensor:
    """One smooth Gaussian spot, as a batch of one image."""
    r = torch.arange(28, dtype=torch.float32)
    return torch.exp(-((r[:, None] - cy) ** 2 + (r[None, :] - cx) ** 2) / (2 * s**2)).unsqueeze(0)


# ---------------------------------------------------------------------------------------------
# permute
# ---------------------------------------------------------------------------------------------
def test_permute_is_a_seeded_bijection_of_pixels() -> None:
    x = torch.arange(2 * 28 * 28, dtype=torch.float32).reshape(2, 28, 28)
    a, y = Permute(seed=3).apply(x, Y[:2], seed=0)
    b, _ = Permute(seed=3).apply(x, Y[:2], seed=99)  # the task seed does not matter: the permutation is the task
    c, _ = Permute(seed=4).apply(x, Y[:2], seed=0)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(y, Y[:2])
    # A bijection: the same multiset of pixel values per image, and the same permutation for every image.
    assert torch.equal(a[0].flatten().sort().values, x[0].flatten())
    perm = a[0].flatten().long()
    assert torch.equal(a[1].flatten(), x[1].flatten()[perm])
    assert not torch.equal(a, x)


# ---------------------------------------------------------------------------------------------
# rotate
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("angle, k", [(90, 1), (180, 2), (270, 3), (-90, 3), (450, 1)])
def test_right_angles_are_exact_rot90(angle: float, k: int) -> None:
    x = images()
    out, _ = Rotate(angle=angle).apply(x, Y, 0)
    assert torch.equal(out, torch.rot90(x, k, dims=(1, 2)))


@pytest.mark.parametrize("angle", [0, 360, -720])
def test_full_turns_are_identity(angle: float) -> None:
    x = images()
    assert torch.equal(Rotate(angle=angle).apply(x, Y, 0)[0], x)


def test_interpolated_rotation_turns_the_same_way_as_rot90() -> None:
    x = blob(cy=6.0, cx=20.0)  # off-centre, so the direction shows
    near, _ = Rotate(angle=89.999).apply(x, Y[:1], 0)
    assert torch.allclose(near, torch.rot90(x, 1, dims=(1, 2)), atol=1e-3)
    half, _ = Rotate(angle=45).apply(x, Y[:1], 0)
    twice, _ = Rotate(angle=45).apply(half, Y[:1], 0)
    quarter = torch.rot90(x, 1, dims=(1, 2))
    assert (twice - quarter).abs().sum() < 0.1 * quarter.sum()


def test_45_degrees_is_a_real_interpolation_that_keeps_a_centred_blob() -> None:
    x = blob(s=3.0)
    out, _ = Rotate(angle=45).apply(x, Y[:1], 0)
    assert not torch.equal(out, x)
    assert abs(float(out.sum()) - float(x.sum())) < 0.02 * float(x.sum())  # mass roughly preserved
    # Interpolated values: not just a shuffle of the input pixels.
    assert len(set(out.flatten().tolist()) - set(x.flatten().tolist())) > 100
    # An asymmetric shape really turns: a horizontal bar becomes diagonal.
    bar = torch.zeros(1, 28, 28)
    bar[0, 13:15, 4:24] = 1.0
    diag, _ = Rotate(angle=45).apply(bar, Y[:1], 0)
    assert diag[0, 13:15, 4:24].sum() < 0.5 * bar.sum()
    assert diag[0, 7, 20] > 0.5 and diag[0, 20, 7] > 0.5  # counter-clockwise: up-right and down-left


# ---------------------------------------------------------------------------------------------
# noise, invert, blur
# ---------------------------------------------------------------------------------------------
def test_noise_is_seeded_and_clamped() -> None:
    x = images()
    a, _ = Noise(sigma=0.5).apply(x, Y, seed=1)
    b, _ = Noise(sigma=0.5).apply(x, Y, seed=1)
    c, _ = Noise(sigma=0.5).apply(x, Y, seed=2)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert float(a.min()) == 0.0 and float(a.max()) == 1.0  # sigma 0.5 pushes many pixels past both ends
    assert 0.2 < float((a - x).std()) < 0.5
    assert torch.equal(x, images())  # the input is not modified in place


def test_invert() -> None:
    x = images()
    out, _ = Invert().apply(x, Y, 0)
    assert torch.equal(out, 1.0 - x)
    assert torch.equal(Invert().apply(out, Y, 0)[0], x)


def test_blur_keeps_a_constant_image_and_smooths_an_impulse() -> None:
    const = torch.full((1, 28, 28), 0.3)
    out, _ = Blur(sigma=1.5).apply(const, Y[:1], 0)
    assert torch.allclose(out, const, atol=1e-6)
    impulse = torch.zeros(1, 28, 28)
    impulse[0, 14, 14] = 1.0
    out, _ = Blur(sigma=1.0).apply(impulse, Y[:1], 0)
    assert float(out.max()) < 0.2 and abs(float(out.sum()) - 1.0) < 1e-5
    assert out[0, 14, 14] == out.max() and out[0, 14, 13] == out[0, 13, 14] > out[0, 14, 12] > 0
    assert torch.allclose(out[0], out[0].T, atol=1e-7)  # isotropic


# ---------------------------------------------------------------------------------------------
# classes
# ---------------------------------------------------------------------------------------------
def test_classes_filter_and_relabel() -> None:
    y = torch.tensor([0, 1, 2, 3, 7, 3, 9, 7])
    x = torch.arange(8, dtype=torch.float32).reshape(8, 1, 1).expand(8, 28, 28)
    kx, ky = Classes(keep=[7, 3]).apply(x, y, 0)
    assert kx[:, 0, 0].tolist() == [3, 4, 5, 7] and ky.tolist() == [1, 0, 1, 0]  # 7 → 0, 3 → 1: order given
    kx, ky = Classes(keep=[7, 3], relabel=False).apply(x, y, 0)
    assert ky.tolist() == [3, 7, 3, 7]
    assert n_classes_after([Classes(keep=[7, 3])]) == 2
    assert n_classes_after([Classes(keep=[7, 3], relabel=False)]) == 10
    assert n_classes_after([Rotate(angle=10)]) == 10


@pytest.mark.parametrize(
    "model, data",
    [
        (Classes, {"keep": []}),
        (Classes, {"keep": [1, 1]}),
        (Classes, {"keep": [-1]}),
        (Noise, {"sigma": 0}),
        (Blur, {"sigma": -1}),
        (Rotate, {"angle": float("nan")}),
        (Rotate, {"angle": 10, "extra": 1}),
    ],
)
def test_bad_parameters_are_rejected(model, data) -> None:
    with pytest.raises(ValidationError):
        model.model_validate(data)


# ---------------------------------------------------------------------------------------------
# a whole task build
# ---------------------------------------------------------------------------------------------
SPEC = {
    "name": "det",
    "train_per_task": 100,
    "test_per_task": 50,
    "seed": 3,
    "tasks": [
        {"name": "clean"},
        {"name": "mix", "transforms": [{"type": "rotate", "angle": 30}, {"type": "noise", "sigma": 0.3}]},
        {"name": "same-noise", "transforms": [{"type": "noise", "sigma": 0.3, "seed": 5}]},
        {"name": "same-noise-2", "transforms": [{"type": "noise", "sigma": 0.3, "seed": 5}]},
        {"name": "odd", "transforms": [{"type": "classes", "keep": [1, 3, 5]}, {"type": "blur", "sigma": 1}]},
    ],
}


def test_task_build_is_deterministic() -> None:
    a = build_pool(PoolSpec.model_validate(SPEC))
    b = build_pool(PoolSpec.model_validate(SPEC))
    for name in a.names:
        for part in ("x_train", "y_train", "x_test", "y_test"):
            assert torch.equal(getattr(a[name], part), getattr(b[name], part)), (name, part)
        assert a[name].fingerprint() == b[name].fingerprint()
    assert a.fingerprint() == b.fingerprint()
    other = build_pool(PoolSpec.model_validate({**SPEC, "seed": 4}))
    assert other.fingerprint() != a.fingerprint()
    assert not torch.equal(other["clean"].x_train, a["clean"].x_train)


def test_noise_differs_between_train_and_test_but_follows_its_seed() -> None:
    pool = build_pool(PoolSpec.model_validate(SPEC))
    clean = pool["clean"]
    # Tasks without a class filter share their images, so the difference is the noise itself.
    for name in ("same-noise", "same-noise-2"):
        assert torch.equal(pool[name].y_train, clean.y_train)
    noise_train = pool["same-noise"].x_train - clean.x_train
    noise_test = pool["same-noise"].x_test - clean.x_test
    assert not torch.allclose(noise_train[:50], noise_test)  # independent draws for train and test
    assert torch.equal(pool["same-noise"].x_train, pool["same-noise-2"].x_train)  # same noise seed, same noise
    assert pool["odd"].n_classes == 3 and set(pool["odd"].y_train.tolist()) == {0, 1, 2}


def test_fingerprint_is_stable_across_processes() -> None:
    code = (
        "import json, sys; from tasks.pool import PoolSpec, build_pool; "
        "p = build_pool(PoolSpec.model_validate(json.loads(sys.argv[1]))); "
        "print(json.dumps([p.fingerprint(), {n: t.fingerprint() for n, t in p.tasks.items()}, "
        "float(p['mix'].x_train.double().sum())]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, json.dumps(SPEC)], capture_output=True, text=True, timeout=120, check=True
    )
    fp, task_fps, total = json.loads(done.stdout)
    pool = build_pool(PoolSpec.model_validate(SPEC))
    assert fp == pool.fingerprint()
    assert task_fps == {n: t.fingerprint() for n, t in pool.tasks.items()}
    assert total == float(pool["mix"].x_train.double().sum())  # the same tensors, bit for bit
