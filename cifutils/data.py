"""MNIST and Fashion-MNIST, dynamically binarized, for the VAE experiments.

The eight canonical gzip IDX files are read from ``data_root()/<dataset>/``. Every file's
MD5 is checked before use; missing files are downloaded from the canonical mirrors (to a
temporary file, checked, then moved into place) unless downloads are forbidden.

Images are kept as intensities ``pixel / 255`` in [0, 1]; every pass over a split draws a
fresh binary image ``x ~ Bernoulli(pixel / 255)`` (dynamic binarization), for training,
validation and test alike.

Example (with the files present):

>>> splits = load_binarized("mnist", limit=1000)                      # doctest: +SKIP
>>> x = next(splits.train.batches(100, shuffle=True))                 # doctest: +SKIP
>>> x.shape, x.dtype                                                  # doctest: +SKIP
(torch.Size([100, 1, 28, 28]), torch.float32)

References: LeCun et al. (1998), MNIST; Xiao et al. (2017), Fashion-MNIST; Salakhutdinov &
Murray (2008) for dynamic binarization; Nielsen et al./Cornish et al. (2020) Experiment 2.
"""

from __future__ import annotations

import gzip
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .results import download, note_read

__all__ = [
    "DOWNLOADS_ALLOWED",
    "DataIntegrityError",
    "DataNotFoundError",
    "BinarizedImages",
    "BinarizedSplits",
    "data_root",
    "load_idx",
    "parse_idx",
    "train_val_split",
    "load_binarized",
]

#: Set to False (or set env ``CIFUTILS_NO_DOWNLOAD=1``) to forbid every download.
DOWNLOADS_ALLOWED: bool = True

DATASETS = ("mnist", "fashion-mnist")
SPLITS = ("train", "test")

# (images file, labels file) of each split; the names are the same for both datasets.
_FILENAMES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}

# MD5 of each gzip file, as published with the datasets (see shared/data/README.md).
_MD5 = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
}

# Canonical sources, tried in order.
_MIRRORS = {
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
    "fashion-mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
}

_IDX_UBYTE = 0x08  # IDX type code of unsigned bytes, the only type these files use


class DataIntegrityError(ValueError):
    """A data file has the wrong checksum or a malformed IDX header/body."""


class DataNotFoundError(FileNotFoundError):
    """Data files are missing and could not (or may not) be downloaded."""


def data_root() -> Path:
    """Folder holding ``mnist/`` and ``fashion-mnist/``: ``$CIFUTILS_DATA`` if set, else
    ``~/.cache/cifutils/data``."""
    env = os.environ.get("CIFUTILS_DATA")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "cifutils" / "data"


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _verify(path: Path, expected: str) -> None:
    actual = _md5(path)
    if actual != expected:
        raise DataIntegrityError(
            f"{path}: MD5 {actual} does not match the expected {expected}; the file is "
            "corrupt or not the canonical one. Delete it and download it again."
        )


def _downloads_allowed() -> bool:
    return DOWNLOADS_ALLOWED and os.environ.get("CIFUTILS_NO_DOWNLOAD", "") in ("", "0")


def _download(dataset: str, filename: str, dest: Path) -> None:
    """Fetch ``filename`` into ``dest`` from the first mirror that serves it with the right
    MD5 (:func:`cifutils.results.download`: a temporary file, checked, then moved into place,
    so a half-written file is never seen)."""
    errors = []
    for base in _MIRRORS[dataset]:
        url = base + filename
        try:
            download(url, dest, check=lambda tmp: _verify(tmp, _MD5[dataset][filename]))
            return
        except (OSError, DataIntegrityError) as err:  # URLError and timeouts are OSErrors
            errors.append(f"{url}: {err}")
    raise DataNotFoundError(f"could not download {filename} to {dest}:\n  " + "\n  ".join(errors))


def _missing_message(missing: list[Path], folder: Path, reason: str) -> str:
    names = ", ".join(p.name for p in missing)
    return (
        f"missing {names} in {folder} ({reason}). To get them, either set "
        f"CIFUTILS_DATA=/path/to/folder holding {folder.name}/ with the canonical gzip IDX "
        "files, or call with download=True (and cifutils.data.DOWNLOADS_ALLOWED = True, "
        "CIFUTILS_NO_DOWNLOAD unset) to fetch them from the canonical mirrors."
    )


def parse_idx(raw: bytes, expected_ndim: int) -> np.ndarray:
    """Decode an uncompressed IDX file of unsigned bytes.

    Layout: magic ``0x00 0x00 <type> <ndim>``, then ``ndim`` big-endian uint32 sizes, then
    ``prod(sizes)`` bytes. Returns a (writable) uint8 array of shape ``sizes``; raises
    :class:`DataIntegrityError` on a bad magic, type, rank or length.
    """
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataIntegrityError("not an IDX file: the magic number must start with 0x0000")
    if raw[2] != _IDX_UBYTE:
        raise DataIntegrityError(f"IDX type code {raw[2]:#04x}, expected {_IDX_UBYTE:#04x}")
    ndim = raw[3]
    if ndim != expected_ndim:
        raise DataIntegrityError(f"IDX file has {ndim} dimensions, expected {expected_ndim}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataIntegrityError("IDX header is truncated")
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    if len(raw) - header != int(np.prod(shape)):
        raise DataIntegrityError(
            f"IDX body has {len(raw) - header} bytes, header {shape} needs {int(np.prod(shape))}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape).copy()


def load_idx(
    dataset: str, split: str, root: str | os.PathLike | None = None, download: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Load one official split of MNIST or Fashion-MNIST.

    Args:
        dataset: ``"mnist"`` or ``"fashion-mnist"``.
        split: ``"train"`` (60,000 images) or ``"test"`` (10,000 images).
        root: data root holding ``<dataset>/``; defaults to :func:`data_root`.
        download: fetch missing files from the canonical mirrors (if allowed module-wide).

    Returns:
        ``(images, labels)``: uint8 arrays of shapes ``(N, 28, 28)`` and ``(N,)``.
    """
    _check_choice("dataset", dataset, DATASETS)
    _check_choice("split", split, SPLITS)
    folder = Path(root).expanduser() if root is not None else data_root()
    folder = folder / dataset
    paths = [folder / name for name in _FILENAMES[split]]
    missing = [p for p in paths if not p.is_file()]
    if missing and not (download and _downloads_allowed()):
        why = "download=False" if not download else "downloads are forbidden"
        raise DataNotFoundError(_missing_message(missing, folder, why))
    for path in missing:
        try:
            _download(dataset, path.name, path)
        except DataNotFoundError as err:
            raise DataNotFoundError(
                _missing_message(missing, folder, "the download failed") + f"\n{err}"
            ) from err
    arrays = []
    for path, ndim in zip(paths, (3, 1), strict=True):
        _verify(path, _MD5[dataset][path.name])
        note_read("data", path)
        with gzip.open(path, "rb") as f:
            raw = f.read()
        try:
            arrays.append(parse_idx(raw, ndim))
        except DataIntegrityError as err:
            raise DataIntegrityError(f"{path}: {err}") from err
    images, labels = arrays
    if images.shape[1:] != (28, 28) or images.shape[0] != labels.shape[0]:
        raise DataIntegrityError(f"{folder}: images {images.shape} vs labels {labels.shape}")
    if labels.max(initial=0) > 9:
        raise DataIntegrityError(f"{paths[1]}: labels outside 0..9")
    return images, labels


class BinarizedImages:
    """Images as intensities in [0, 1], binarized afresh at every pass.

    ``probs`` has shape ``(N, 1, 28, 28)`` (float32, ``pixel / 255``); each batch is
    ``x = 1[U < probs]`` with ``U ~ Uniform(0, 1)``, i.e. ``x ~ Bernoulli(pixel / 255)``.
    Randomness (shuffling and binarization) comes from the given ``torch.Generator``, which
    must live on the same device as ``probs``.
    """

    def __init__(
        self,
        images: np.ndarray | Tensor,
        labels: np.ndarray | Tensor | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        """``images``: uint8 ``(N, 28, 28)`` or ``(N, 1, 28, 28)``; ``labels``: ``(N,)``."""
        if not torch.is_tensor(images):
            images = torch.tensor(np.asarray(images))  # copies: input may be read-only
        if images.dtype != torch.uint8:
            raise TypeError(f"images must be uint8, got {images.dtype}")
        if images.dim() == 3:
            images = images.unsqueeze(1)
        self.probs = images.to(device=device, dtype=torch.float32).div_(255.0)
        self.labels = None if labels is None else torch.tensor(np.asarray(labels)).long()

    def __len__(self) -> int:
        return self.probs.shape[0]

    @property
    def device(self) -> torch.device:
        return self.probs.device

    def binarize(
        self, index: Tensor | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """One fresh binary draw of the images at ``index`` (all if None): ``(B, 1, 28, 28)``."""
        probs = self.probs if index is None else self.probs[index]
        u = torch.rand(probs.shape, generator=generator, device=probs.device)
        return (u < probs).to(torch.float32)

    def batches(
        self,
        batch_size: int,
        shuffle: bool = False,
        drop_last: bool = False,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> Iterator[Tensor]:
        """Iterate once over the images in minibatches of binary ``(B, 1, 28, 28)`` float32.

        With ``shuffle`` the order is a fresh permutation; ``drop_last`` drops a final batch
        smaller than ``batch_size``; batches are moved to ``device`` (default: storage).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        n = len(self)
        if shuffle:
            order = torch.randperm(n, generator=generator, device=self.device)
        else:
            order = torch.arange(n, device=self.device)
        stop = n - n % batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            x = self.binarize(order[start : start + batch_size], generator)
            yield x if device is None else x.to(device, non_blocking=True)

    def num_batches(self, batch_size: int, drop_last: bool = False) -> int:
        """Number of batches :meth:`batches` yields."""
        n = len(self)
        return n // batch_size if drop_last else -(-n // batch_size)


@dataclass
class BinarizedSplits:
    """The train (54k), validation (6k) and test (10k) splits of one dataset."""

    train: BinarizedImages
    val: BinarizedImages
    test: BinarizedImages


def train_val_split(n: int = 60000, val_size: int = 6000, seed: int = 0):
    """Fixed split of ``range(n)``: ``(train_idx, val_idx)``, sorted int64 arrays of sizes
    ``n - val_size`` and ``val_size``, from a seeded NumPy PCG64 permutation."""
    if not 0 <= val_size <= n:
        raise ValueError(f"val_size must be in [0, {n}], got {val_size}")
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[val_size:]), np.sort(perm[:val_size])


def load_binarized(
    dataset: str,
    root: str | os.PathLike | None = None,
    download: bool = True,
    val_size: int = 6000,
    split_seed: int = 0,
    limit: int | None = None,
    device: torch.device | str = "cpu",
) -> BinarizedSplits:
    """Train/validation/test splits of ``dataset`` for dynamic binarization.

    The validation set is ``val_size`` images of the official 60k training set chosen by a
    fixed seeded permutation (:func:`train_val_split`); the test set is the official 10k.
    ``limit`` keeps only the first ``limit`` images of each split (for smoke runs).
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be non-negative, got {limit}")
    images, labels = load_idx(dataset, "train", root, download)
    test_images, test_labels = load_idx(dataset, "test", root, download)
    train_idx, val_idx = train_val_split(len(images), val_size, split_seed)

    def make(idx: np.ndarray | slice, imgs: np.ndarray, labs: np.ndarray) -> BinarizedImages:
        imgs, labs = imgs[idx][:limit], labs[idx][:limit]
        return BinarizedImages(imgs, labs, device=device)

    return BinarizedSplits(
        train=make(train_idx, images, labels),
        val=make(val_idx, images, labels),
        test=make(slice(None), test_images, test_labels),
    )
