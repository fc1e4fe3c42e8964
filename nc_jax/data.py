"""Datasets for the full-network experiments: loaders, subsets, normalisation, augmentation.

Every loader returns :class:`Dataset` pairs ``(train, test)`` of NHWC float32 images and
int32 labels in host memory (numpy). Nothing is downloaded: the files must already be on
disk, and a missing or malformed directory raises :class:`DataError` naming the path and the
expected layout before any model is built.

Supported sources (``name`` in :func:`load_dataset`):

* ``"cifar10"``: the python pickle batches ``data_batch_1`` ... ``data_batch_5`` and
  ``test_batch`` (in ``data_dir`` or ``data_dir/cifar-10-batches-py``).
* ``"mnist"`` / ``"fashion_mnist"``: IDX files ``train-images-idx3-ubyte``,
  ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each
  optionally ``.gz``. Fashion-MNIST defaults to Debian's ``dataset-fashion-mnist`` location
  ``/usr/share/datasets/fashion-mnist``.
* ``"miniimagenet"``: a folder of class subfolders of images (``data_dir/<class>/*.jpg``),
  split per class into train/test (the paper's 500/100 of 600); or ``data_dir/train/<class>``
  and ``data_dir/test/<class>`` (``val`` also accepted). Images are resized to 84x84 with PIL.
* ``"digits"``: scikit-learn's bundled 8x8 digits (no download), a class-balanced subset.
* ``"synthetic"``: class templates plus noise, for tests.

Data order and augmentation are functions of ``(seed, epoch, step)`` only, so a resumed run
sees exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

import gzip
import os
import pickle
from pathlib import Path
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "DataError",
    "Dataset",
    "SubsetSizeError",
    "FASHION_MNIST_DEFAULT_DIR",
    "augment",
    "check_data_dir",
    "epoch_permutation",
    "load_cifar10",
    "load_dataset",
    "load_digits",
    "load_idx",
    "load_miniimagenet",
    "load_mnist",
    "normalize",
    "random_labels",
    "subset_per_class",
    "synthetic",
]

FASHION_MNIST_DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"

_CIFAR_LAYOUT = "data_batch_1 ... data_batch_5 and test_batch (CIFAR-10 python pickle batches)"
_IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_IDX_LAYOUT = ", ".join(f"{v}[.gz]" for v in _IDX_FILES.values()) + " (IDX format)"
_FOLDER_LAYOUT = "<class>/<image files> (one subfolder per class), or train/<class>/... and test/<class>/..."
_IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")


class DataError(ValueError):
    """A data directory or file is missing, malformed, or holds labels outside ``[0, K)``."""


class SubsetSizeError(ValueError):
    """A per-class subset size outside what the dataset has; ``field`` names the config field."""

    def __init__(self, message: str, field: str):
        super().__init__(message)
        self.field = field


class Dataset(NamedTuple):
    """Images (N, H, W, C) float32, labels (N,) int32 in [0, num_classes)."""

    images: np.ndarray
    labels: np.ndarray
    num_classes: int

    @property
    def size(self) -> int:
        return int(self.labels.shape[0])


def _err(name: str, path, detail: str, layout: str) -> DataError:
    return DataError(f"{name}: {detail} at {str(path)!r}; expected layout: {layout}")


# ----------------------------------------------------------------------------- CIFAR-10


def _cifar_dir(data_dir) -> Path:
    root = Path(os.path.expanduser(str(data_dir)))
    for cand in (root, root / "cifar-10-batches-py"):
        if (cand / "test_batch").is_file():
            return cand
    if not root.exists():
        raise _err("cifar10", root, "directory does not exist", _CIFAR_LAYOUT)
    raise _err("cifar10", root, "no test_batch file found", _CIFAR_LAYOUT)


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            d = pickle.load(f, encoding="bytes")
        data = np.asarray(d[b"data"] if b"data" in d else d["data"], dtype=np.uint8)
        labels = d.get(b"labels", d.get("labels"))
        labels = np.asarray(labels, dtype=np.int32)
        images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    except Exception as e:  # noqa: BLE001 - any decode failure is a malformed file
        raise _err("cifar10", path, f"malformed batch file ({type(e).__name__}: {e})", _CIFAR_LAYOUT) from e
    if images.shape[0] != labels.shape[0]:
        raise _err("cifar10", path, "images and labels differ in length", _CIFAR_LAYOUT)
    _check_labels("cifar10", path, labels, 10)
    return images, labels


def _check_labels(name: str, path, labels: np.ndarray, k: int) -> None:
    """Refuse labels outside ``[0, k)`` (they would silently be one-hot encoded as zeros)."""
    bad = (labels < 0) | (labels >= k)
    if np.any(bad):
        i = int(np.argmax(bad))
        raise DataError(f"{name}: label {int(labels[i])} (sample {i}) outside [0, {k}) in {str(path)!r}")


def load_cifar10(data_dir) -> tuple[Dataset, Dataset]:
    """CIFAR-10 from the python pickle batches (uint8 RGB, scaled to [0, 1])."""
    root = _cifar_dir(data_dir)
    missing = [f"data_batch_{i}" for i in range(1, 6) if not (root / f"data_batch_{i}").is_file()]
    if missing:
        raise _err("cifar10", root, f"missing {', '.join(missing)}", _CIFAR_LAYOUT)
    parts = [_read_cifar_batch(root / f"data_batch_{i}") for i in range(1, 6)]
    xtr = np.concatenate([p[0] for p in parts])
    ytr = np.concatenate([p[1] for p in parts])
    xte, yte = _read_cifar_batch(root / "test_batch")
    return _to_float(xtr, ytr, 10), _to_float(xte, yte, 10)


def _to_float(images: np.ndarray, labels: np.ndarray, k: int, scale: float = 255.0) -> Dataset:
    return Dataset(np.asarray(images, np.float32) / np.float32(scale), np.asarray(labels, np.int32), k)


# ----------------------------------------------------------------------------- IDX (MNIST)


def load_idx(path) -> np.ndarray:
    """Read one IDX file (``.gz`` or raw) into a numpy array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    dtypes = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    try:
        with opener(path, "rb") as f:
            raw = f.read()
        if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in dtypes:
            raise ValueError("bad IDX magic number")
        ndim = raw[3]
        shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
        arr = np.frombuffer(raw, dtype=dtypes[raw[2]], offset=4 + 4 * ndim)
        return arr.reshape(shape)
    except Exception as e:  # noqa: BLE001
        raise DataError(f"malformed IDX file {str(path)!r} ({type(e).__name__}: {e}); expected {_IDX_LAYOUT}") from e


def _idx_path(root: Path, stem: str, name: str) -> Path:
    for cand in (root / stem, root / (stem + ".gz")):
        if cand.is_file():
            return cand
    raise _err(name, root, f"missing {stem}[.gz]", _IDX_LAYOUT)


def load_mnist(data_dir, *, name: str = "mnist") -> tuple[Dataset, Dataset]:
    """MNIST-format IDX files (MNIST, Fashion-MNIST): 28x28x1 in [0, 1]."""
    root = Path(os.path.expanduser(str(data_dir)))
    if not root.is_dir():
        raise _err(name, root, "directory does not exist", _IDX_LAYOUT)
    paths = {k: _idx_path(root, v, name) for k, v in _IDX_FILES.items()}
    out = []
    for split in ("train", "test"):
        x = load_idx(paths[f"{split}_images"])
        y = load_idx(paths[f"{split}_labels"])
        if x.ndim != 3 or y.ndim != 1 or x.shape[0] != y.shape[0]:
            raise _err(name, root, f"{split} images {x.shape} and labels {y.shape} do not match", _IDX_LAYOUT)
        if not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"{name}: labels in {str(paths[f'{split}_labels'])!r} are {y.dtype}, expected integers")
        _check_labels(name, paths[f"{split}_labels"], y, 10)
        out.append(_to_float(x[..., None], y, 10))
    return out[0], out[1]


# ----------------------------------------------------------------------------- miniImageNet


def _class_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _image_files(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if p.suffix.lower() in _IMAGE_EXTS)


def _read_images(files: list[Path], size: int) -> np.ndarray:
    try:
        from PIL import Image
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("miniimagenet needs Pillow to read images: pip install pillow") from e
    out = np.empty((len(files), size, size, 3), np.uint8)
    for i, f in enumerate(files):
        try:
            with Image.open(f) as im:
                out[i] = np.asarray(im.convert("RGB").resize((size, size), Image.BILINEAR))
        except Exception as e:  # noqa: BLE001
            raise DataError(f"miniimagenet: cannot read image {str(f)!r} ({type(e).__name__}: {e})") from e
    return out


def load_miniimagenet(data_dir, *, image_size: int = 84, test_fraction: float = 1 / 6) -> tuple[Dataset, Dataset]:
    """miniImageNet from a folder of class subfolders (see the module docstring)."""
    root = Path(os.path.expanduser(str(data_dir)))
    if not root.is_dir():
        raise _err("miniimagenet", root, "directory does not exist", _FOLDER_LAYOUT)
    test_name = next((n for n in ("test", "val") if (root / n).is_dir()), None)
    if (root / "train").is_dir() and test_name is not None:
        classes = [p.name for p in _class_dirs(root / "train")]
        splits = {"train": [], "test": []}
        for k, c in enumerate(classes):
            for split, sub in (("train", "train"), ("test", test_name)):
                files = _image_files(root / sub / c) if (root / sub / c).is_dir() else []
                if not files:
                    raise _err("miniimagenet", root / sub / c, "no images for class", _FOLDER_LAYOUT)
                splits[split] += [(f, k) for f in files]
    else:
        classes = [p.name for p in _class_dirs(root)]
        splits = {"train": [], "test": []}
        for k, c in enumerate(classes):
            files = _image_files(root / c)
            if len(files) < 2:
                raise _err("miniimagenet", root / c, "fewer than 2 images in class folder", _FOLDER_LAYOUT)
            n_test = max(1, int(round(len(files) * test_fraction)))
            splits["train"] += [(f, k) for f in files[: len(files) - n_test]]
            splits["test"] += [(f, k) for f in files[len(files) - n_test:]]
    if len(classes) < 2:
        raise _err("miniimagenet", root, f"found {len(classes)} class folders, need >= 2", _FOLDER_LAYOUT)
    out = []
    for split in ("train", "test"):
        files = [f for f, _ in splits[split]]
        labels = np.asarray([k for _, k in splits[split]], np.int32)
        out.append(_to_float(_read_images(files, image_size), labels, len(classes)))
    return out[0], out[1]


# ----------------------------------------------------------------------------- digits, synthetic


def load_digits(samples_per_class: Optional[int] = 100) -> tuple[Dataset, Dataset]:
    """scikit-learn's 8x8 digits: the first ``samples_per_class`` of each class train, the rest test."""
    try:
        from sklearn.datasets import load_digits as _sk_load
    except ImportError as e:  # pragma: no cover
        raise ImportError("the digits dataset needs scikit-learn: pip install scikit-learn") from e
    d = _sk_load()
    images = (d.images.astype(np.float32) / np.float32(16.0))[..., None]
    labels = d.target.astype(np.int32)
    full = Dataset(images, labels, 10)
    n_min = int(np.bincount(labels).min())
    n = n_min // 2 if samples_per_class is None else int(samples_per_class)
    if not 1 <= n < n_min:
        raise SubsetSizeError(f"samples_per_class must be in [1, {n_min - 1}] for digits (its smallest class has "
                              f"{n_min} images; at least one per class is kept for testing), got {samples_per_class}",
                              "samples_per_class")
    idx_train = _first_per_class(labels, 10, n)
    mask = np.ones(labels.shape[0], bool)
    mask[idx_train] = False
    return _take(full, idx_train), _take(full, np.nonzero(mask)[0])


def synthetic(*, num_classes: int = 4, samples_per_class: int = 8, test_samples_per_class: int = 4,
              image_size: int = 8, channels: int = 3, noise: float = 0.5, seed: int = 0) -> tuple[Dataset, Dataset]:
    """Class templates plus Gaussian noise (learnable, for tests). Deterministic in ``seed``."""
    rng = np.random.default_rng(seed)
    templates = rng.normal(size=(num_classes, image_size, image_size, channels))

    def make(n):
        labels = np.repeat(np.arange(num_classes), n)
        x = templates[labels] + noise * rng.normal(size=(labels.size, image_size, image_size, channels))
        return Dataset(x.astype(np.float32), labels.astype(np.int32), num_classes)

    return make(samples_per_class), make(test_samples_per_class)


# ----------------------------------------------------------------------------- transforms


def _take(ds: Dataset, idx) -> Dataset:
    return Dataset(ds.images[idx], ds.labels[idx], ds.num_classes)


def _first_per_class(labels: np.ndarray, k: int, n: int) -> np.ndarray:
    idx = [np.nonzero(labels == c)[0][:n] for c in range(k)]
    short = [c for c, i in enumerate(idx) if i.size < n]
    if short:
        raise ValueError(f"classes {short} have fewer than {n} samples")
    return np.sort(np.concatenate(idx))


def subset_per_class(ds: Dataset, n: Optional[int], *, field: str = "samples_per_class",
                     what: str = "the dataset") -> Dataset:
    """The first ``n`` samples of every class (class-balanced, like the official ``sample_size``).

    Raises:
      SubsetSizeError: ``n`` outside ``[1, smallest class size]`` (``field`` names the setting).
    """
    if n is None:
        return ds
    n_min = int(np.bincount(ds.labels, minlength=ds.num_classes).min()) if ds.size else 0
    if not 1 <= int(n) <= n_min:
        raise SubsetSizeError(f"{field} must be in [1, {n_min}] for {what} (its smallest class has {n_min} "
                              f"samples), got {n}", field)
    return _take(ds, _first_per_class(ds.labels, ds.num_classes, int(n)))


def random_labels(ds: Dataset, seed: int) -> Dataset:
    """Replace labels by a seeded random permutation of them (class sizes are kept)."""
    perm = np.random.default_rng([int(seed), 7919]).permutation(ds.size)
    return Dataset(ds.images, ds.labels[perm], ds.num_classes)


def normalize(train: Dataset, test: Dataset) -> tuple[Dataset, Dataset, np.ndarray, np.ndarray]:
    """Per-channel standardisation with the training set's mean and std (Appendix A)."""
    mean = train.images.mean(axis=(0, 1, 2), dtype=np.float64)
    std = train.images.std(axis=(0, 1, 2), dtype=np.float64)
    std = np.where(std > 0, std, 1.0)
    f = lambda ds: Dataset(((ds.images - mean) / std).astype(np.float32), ds.labels, ds.num_classes)  # noqa: E731
    return f(train), f(test), mean, std


def epoch_permutation(n: int, *, seed: int, epoch: int) -> np.ndarray:
    """The sample order of one epoch: a function of ``(seed, epoch)`` only (exact resume)."""
    return np.random.default_rng([int(seed), int(epoch)]).permutation(n)


def augment(key, images, *, pad: int = 4, flip: bool = True):
    """Random crop with zero padding ``pad`` and random horizontal flip (the paper's, [18]).

    Padding is applied to the normalised images, i.e. with the per-channel mean (torchvision
    pads the raw image with black before normalising: a negligible difference).

    Args:
      key: a JAX PRNG key.
      images: (B, H, W, C).
    """
    b, h, w, c = images.shape
    k_crop, k_flip = jax.random.split(key)
    padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    offsets = jax.random.randint(k_crop, (b, 2), 0, 2 * pad + 1)

    def crop(img, off):
        return jax.lax.dynamic_slice(img, (off[0], off[1], 0), (h, w, c))

    out = jax.vmap(crop)(padded, offsets)
    if flip:
        do_flip = jax.random.bernoulli(k_flip, 0.5, (b,))
        out = jnp.where(do_flip[:, None, None, None], out[:, :, ::-1, :], out)
    return out


# ----------------------------------------------------------------------------- dispatch

DATASETS = ("digits", "synthetic", "cifar10", "mnist", "fashion_mnist", "miniimagenet")


def check_data_dir(name: str, data_dir) -> None:
    """Cheap check that ``data_dir`` has the layout ``name`` needs (raises :class:`DataError`)."""
    if name not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASETS}, got {name!r}")
    if name in ("digits", "synthetic"):
        return
    if name == "fashion_mnist" and data_dir is None:
        data_dir = FASHION_MNIST_DEFAULT_DIR
    if data_dir is None:
        raise DataError(f"{name}: a data directory is required (--data-dir); nothing is downloaded")
    root = Path(os.path.expanduser(str(data_dir)))
    if name == "cifar10":
        r = _cifar_dir(root)
        missing = [f"data_batch_{i}" for i in range(1, 6) if not (r / f"data_batch_{i}").is_file()]
        if missing:
            raise _err(name, r, f"missing {', '.join(missing)}", _CIFAR_LAYOUT)
    elif name in ("mnist", "fashion_mnist"):
        if not root.is_dir():
            raise _err(name, root, "directory does not exist", _IDX_LAYOUT)
        for stem in _IDX_FILES.values():
            _idx_path(root, stem, name)
    elif name == "miniimagenet":
        if not root.is_dir():
            raise _err(name, root, "directory does not exist", _FOLDER_LAYOUT)
        if not _class_dirs(root):
            raise _err(name, root, "no class subfolders", _FOLDER_LAYOUT)


def load_dataset(name: str, data_dir=None, *, samples_per_class: Optional[int] = None,
                 test_samples_per_class: Optional[int] = None, random_labels_seed: Optional[int] = None,
                 image_size: Optional[int] = None, synthetic_kwargs: Optional[dict] = None,
                 standardize: bool = True) -> tuple[Dataset, Dataset]:
    """Load, subset, optionally randomise labels and standardise per channel.

    Args:
      name: one of ``DATASETS``.
      data_dir: the local directory (unused for digits and synthetic).
      samples_per_class: class-balanced training subset (``None``: all; digits default 100).
      test_samples_per_class: class-balanced test subset.
      random_labels_seed: if not ``None``, training labels are randomly permuted with it.
      image_size: miniImageNet resize (default 84).
      synthetic_kwargs: keyword arguments of :func:`synthetic`.
      standardize: per-channel mean/std from the training set.
    """
    check_data_dir(name, data_dir)
    if name == "digits":
        train, test = load_digits(samples_per_class if samples_per_class is not None else 100)
    elif name == "synthetic":
        train, test = synthetic(**(synthetic_kwargs or {}))
    elif name == "cifar10":
        train, test = load_cifar10(data_dir)
    elif name == "mnist":
        train, test = load_mnist(data_dir)
    elif name == "fashion_mnist":
        train, test = load_mnist(data_dir or FASHION_MNIST_DEFAULT_DIR, name="fashion_mnist")
    else:
        train, test = load_miniimagenet(data_dir, image_size=image_size or 84)
    if name not in ("digits", "synthetic"):
        train = subset_per_class(train, samples_per_class, what=f"the {name} training set")
    test = subset_per_class(test, test_samples_per_class, field="test_samples_per_class", what=f"the {name} test set")
    if random_labels_seed is not None:
        train = random_labels(train, random_labels_seed)
    if standardize:
        train, test, _, _ = normalize(train, test)
    return train, test
