"""Tests of cifutils.data against the real MNIST / Fashion-MNIST files.

The real files are read from ``$CIFUTILS_DATA``. Without them the tests that need them are
skipped, or fail when ``CI=true``. No test ever touches the network: ``urlopen`` is replaced
by a function that raises, in every test.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from cifutils import data

FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)

# Label counts per class, from shared/data/README.md.
LABEL_COUNTS = {
    ("mnist", "train"): [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949],
    ("mnist", "test"): [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009],
    ("fashion-mnist", "train"): [6000] * 10,
    ("fashion-mnist", "test"): [1000] * 10,
}

# MD5 of the sorted validation indices of train_val_split(60000, 6000, seed=0). Pinned so
# that a change of the split (e.g. a NumPy RNG change) cannot pass unnoticed: validation
# numbers would no longer be comparable across runs.
VAL_INDEX_MD5 = "d35a24953f6e1988c8d35b58b9998366"


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Make any attempt to download fail loudly."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"a test tried to reach the network: {args}")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


@pytest.fixture(scope="module")
def root() -> Path:
    """The folder named by CIFUTILS_DATA, holding all eight files (else skip, or fail on CI)."""
    env = os.environ.get("CIFUTILS_DATA")
    missing = []
    if env:
        folder = Path(env)
        missing = [
            f"{ds}/{name}"
            for ds in data.DATASETS
            for name in FILES
            if not (folder / ds / name).is_file()
        ]
    if not env or missing:
        why = "CIFUTILS_DATA is not set" if not env else f"{env} lacks {', '.join(missing)}"
        msg = (
            f"MNIST/Fashion-MNIST files not available ({why}). Set "
            "CIFUTILS_DATA=/path/to/folder holding mnist/ and fashion-mnist/ with the canonical "
            'gzip IDX files. With CIFUTILS_DATA set, `python -c "import cifutils.data as d; '
            "d.load_binarized('mnist'); d.load_binarized('fashion-mnist')\"` downloads them."
        )
        if os.environ.get("CI") == "true":
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    return Path(env)


@pytest.fixture(scope="module")
def mnist(root: Path) -> data.BinarizedSplits:
    return data.load_binarized("mnist", root=root, download=False)


# --------------------------------------------------------------------------- loading


@pytest.mark.parametrize("dataset", data.DATASETS)
@pytest.mark.parametrize("split", data.SPLITS)
def test_load_idx_shapes_counts_and_range(root, dataset, split):
    images, labels = data.load_idx(dataset, split, root=root, download=False)
    n = 60000 if split == "train" else 10000
    assert images.shape == (n, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (n,) and labels.dtype == np.uint8
    assert np.bincount(labels, minlength=10).tolist() == LABEL_COUNTS[dataset, split]
    assert images.min() == 0 and images.max() == 255


def test_data_root_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("CIFUTILS_DATA", str(tmp_path))
    assert data.data_root() == tmp_path
    monkeypatch.delenv("CIFUTILS_DATA")
    assert data.data_root() == Path.home() / ".cache" / "cifutils" / "data"


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"dataset": "mnist-fashion", "split": "train"}, "dataset"),
        ({"dataset": "mnist", "split": "val"}, "split"),
    ],
)
def test_invalid_names_raise_value_error(tmp_path, kwargs, name):
    with pytest.raises(ValueError, match=name):
        data.load_idx(root=tmp_path, download=False, **kwargs)
    with pytest.raises(ValueError, match="dataset"):
        data.load_binarized("cifar10", root=tmp_path, download=False)


def test_corrupted_file_raises_integrity_error(root, tmp_path):
    (tmp_path / "mnist").mkdir()
    for name in FILES:  # copyfile: plain writable copies of the read-only originals
        shutil.copyfile(root / "mnist" / name, tmp_path / "mnist" / name)
    target = tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz"
    raw = bytearray(target.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    target.write_bytes(bytes(raw))
    bad_md5 = hashlib.md5(raw).hexdigest()
    with pytest.raises(data.DataIntegrityError) as info:
        data.load_idx("mnist", "test", root=tmp_path, download=False)
    msg = str(info.value)
    assert "t10k-images-idx3-ubyte.gz" in msg
    assert bad_md5 in msg and "9fb629c4189551a2d022fa330f9573f3" in msg
    assert isinstance(info.value, ValueError)
    # The intact training split of the same folder still loads.
    assert data.load_idx("mnist", "train", root=tmp_path, download=False)[0].shape[0] == 60000


def test_missing_file_without_download_is_helpful(tmp_path):
    with pytest.raises(data.DataNotFoundError) as info:
        data.load_idx("fashion-mnist", "test", root=tmp_path, download=False)
    msg = str(info.value)
    assert "t10k-images-idx3-ubyte.gz" in msg and "t10k-labels-idx1-ubyte.gz" in msg
    assert str(tmp_path / "fashion-mnist") in msg and "CIFUTILS_DATA" in msg
    assert isinstance(info.value, FileNotFoundError)
    assert not (tmp_path / "fashion-mnist").exists()  # nothing created


def test_module_switch_and_env_forbid_downloads(monkeypatch, tmp_path):
    monkeypatch.setattr(data, "DOWNLOADS_ALLOWED", False)
    with pytest.raises(data.DataNotFoundError, match="forbidden"):
        data.load_idx("mnist", "train", root=tmp_path, download=True)
    monkeypatch.setattr(data, "DOWNLOADS_ALLOWED", True)
    monkeypatch.setenv("CIFUTILS_NO_DOWNLOAD", "1")
    with pytest.raises(data.DataNotFoundError, match="forbidden"):
        data.load_idx("mnist", "train", root=tmp_path, download=True)


def test_download_verifies_and_moves_atomically(root, tmp_path, monkeypatch):
    """A fake urlopen (no network) serves a corrupt copy from the first mirror and the real
    bytes from the second: the corrupt one must be rejected and the good one land."""
    urls = []

    def fake_urlopen(url, timeout=None):
        urls.append(url)
        raw = (root / "mnist" / url.rsplit("/", 1)[1]).read_bytes()
        if url.startswith(data._MIRRORS["mnist"][0]):
            raw = raw[:-1]
        return io.BytesIO(raw)

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    images, labels = data.load_idx("mnist", "test", root=tmp_path, download=True)
    assert images.shape == (10000, 28, 28) and labels.shape == (10000,)
    assert len(urls) == 4  # two files, each tried on both mirrors
    assert sorted(p.name for p in (tmp_path / "mnist").iterdir()) == sorted(FILES[2:])


def test_failed_download_raises_not_found(tmp_path, monkeypatch):
    def offline(url, timeout=None):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(data.DataNotFoundError, match="download failed"):
        data.load_idx("fashion-mnist", "test", root=tmp_path, download=True)
    assert list((tmp_path / "fashion-mnist").iterdir()) == []  # no partial files left


def _idx(magic: bytes, dims: list[int], body: int) -> bytes:
    return magic + np.array(dims, dtype=">u4").tobytes() + bytes(body)


@pytest.mark.parametrize(
    "raw, match",
    [
        (_idx(b"\x01\x00\x08\x01", [3], 3), "magic"),
        (_idx(b"\x00\x00\x0d\x01", [3], 3), "type"),
        (_idx(b"\x00\x00\x08\x02", [3, 1], 3), "dimensions"),
        (_idx(b"\x00\x00\x08\x01", [3], 2), "body"),
        (b"\x00\x00\x08\x01\x00", "truncated"),
    ],
)
def test_parse_idx_rejects_malformed_headers(raw, match):
    with pytest.raises(data.DataIntegrityError, match=match):
        data.parse_idx(raw, expected_ndim=1)


def test_parse_idx_reads_big_endian_dims():
    raw = _idx(b"\x00\x00\x08\x02", [2, 300], 600)
    assert data.parse_idx(raw, expected_ndim=2).shape == (2, 300)


# --------------------------------------------------------------------------- split


def test_split_is_fixed_disjoint_and_covering():
    train, val = data.train_val_split(60000, 6000, seed=0)
    again_train, again_val = data.train_val_split(60000, 6000, seed=0)
    assert np.array_equal(train, again_train) and np.array_equal(val, again_val)
    assert len(train) == 54000 and len(val) == 6000
    assert len(np.intersect1d(train, val)) == 0
    assert np.array_equal(np.union1d(train, val), np.arange(60000))
    assert hashlib.md5(val.tobytes()).hexdigest() == VAL_INDEX_MD5
    assert not np.array_equal(data.train_val_split(60000, 6000, seed=1)[1], val)


def test_load_binarized_splits(root, mnist):
    images, _ = data.load_idx("mnist", "train", root=root, download=False)
    train_idx, val_idx = data.train_val_split()
    assert (len(mnist.train), len(mnist.val), len(mnist.test)) == (54000, 6000, 10000)
    for part in (mnist.train, mnist.val, mnist.test):
        assert part.probs.shape[1:] == (1, 28, 28) and part.probs.dtype == torch.float32
        assert part.probs.min() == 0 and part.probs.max() == 1
        assert part.labels is not None and part.labels.shape == (len(part),)
    expected = torch.from_numpy(images[val_idx]).float().div(255).unsqueeze(1)
    assert torch.equal(mnist.val.probs, expected)
    small = data.load_binarized("mnist", root=root, download=False, limit=100)
    assert (len(small.train), len(small.val), len(small.test)) == (100, 100, 100)
    assert torch.equal(small.train.probs, mnist.train.probs[:100])


# --------------------------------------------------------------------------- binarization


def test_binarization_has_bernoulli_mean(mnist):
    test = mnist.test
    gen = torch.Generator().manual_seed(0)
    # Whole pass: sum(x) has mean sum(p) and standard error sqrt(sum p(1-p)); allow 5 SE.
    x = torch.cat(list(test.batches(1000, generator=gen)))
    p = test.probs.double()
    assert set(x.unique().tolist()) <= {0.0, 1.0} and x.dtype == torch.float32
    se = (p * (1 - p)).sum().sqrt()
    assert abs(x.double().sum() - p.sum()) < 5 * se
    # Per pixel, R = 400 draws of 20 images: z = (mean - p) / sqrt(p(1-p)/R) per pixel.
    # With ~10^4 non-degenerate pixels a |z| above 6 has probability ~1e-4 even with the
    # skewed small-p tails; the mean z has standard error 1/sqrt(M), allow 5 of them.
    reps = 400
    xs = test.binarize(torch.arange(20).repeat(reps), generator=gen).view(reps, 20, -1)
    p = test.probs[:20].view(20, -1).double()
    mean = xs.double().mean(0)
    inner = (p > 0) & (p < 1)
    z = (mean - p)[inner] / (p * (1 - p) / reps).sqrt()[inner]
    assert z.abs().max() < 6
    assert abs(z.mean()) < 5 / z.numel() ** 0.5
    # Pixels at 0 and 255 are deterministic.
    assert torch.all(mean[p == 0] == 0) and torch.all(mean[p == 1] == 1)


def test_binarization_is_fresh_each_pass_and_seeded(mnist):
    val = mnist.val
    gen = torch.Generator().manual_seed(123)
    first = next(val.batches(500, generator=gen))
    second = next(val.batches(500, generator=gen))
    assert not torch.equal(first, second)
    replay = next(val.batches(500, generator=torch.Generator().manual_seed(123)))
    assert torch.equal(first, replay)


def _coded_images(n: int) -> np.ndarray:
    """Images whose first 8 pixels spell their index in binary, at intensity 0 or 255, so
    binarization returns them unchanged and each batch row reveals which image it is."""
    bits = (np.arange(n)[:, None] >> np.arange(8)) & 1
    images = np.zeros((n, 28, 28), dtype=np.uint8)
    images[:, 0, :8] = 255 * bits
    return images


def _decode(x: torch.Tensor) -> list[int]:
    return (x[:, 0, 0, :8].long() << torch.arange(8)).sum(1).tolist()


@pytest.mark.parametrize("drop_last", [False, True])
def test_batches_shapes_order_and_shuffle(drop_last):
    images = data.BinarizedImages(_coded_images(37))
    batches = list(images.batches(10, drop_last=drop_last))
    sizes = [len(b) for b in batches]
    assert sizes == ([10, 10, 10] if drop_last else [10, 10, 10, 7])
    assert len(batches) == images.num_batches(10, drop_last=drop_last)
    assert all(b.shape[1:] == (1, 28, 28) and b.dtype == torch.float32 for b in batches)
    assert sum((_decode(b) for b in batches), []) == list(range(sum(sizes)))
    gen = torch.Generator().manual_seed(0)
    seen = sum((_decode(b) for b in images.batches(10, shuffle=True, generator=gen)), [])
    assert sorted(seen) == list(range(37)) and seen != list(range(37))
    with pytest.raises(ValueError, match="batch_size"):
        next(images.batches(0))


def test_batches_go_to_requested_device():
    images = data.BinarizedImages(_coded_images(5))
    assert next(images.batches(5, device="cpu")).device.type == "cpu"
    if torch.cuda.is_available():
        assert next(images.batches(5, device="cuda")).device.type == "cuda"
        on_gpu = data.BinarizedImages(_coded_images(5), device="cuda")
        gen = torch.Generator(device="cuda").manual_seed(0)
        x = next(on_gpu.batches(5, shuffle=True, generator=gen))
        assert x.device.type == "cuda" and sorted(_decode(x.cpu())) == list(range(5))
