"""Tests of nc_jax.data: loaders on small files in the real formats, errors, transforms."""

import gzip
import pickle
import struct

import jax
import numpy as np
import pytest

from nc_jax import data


def _write_cifar(root, n=4, rng=None):
    rng = rng or np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        d = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": list(rng.integers(0, 10, n))}
        with open(root / name, "wb") as f:
            pickle.dump(d, f)
    return d


def test_cifar10_loader(tmp_path):
    last = _write_cifar(tmp_path / "cifar-10-batches-py")
    train, test = data.load_cifar10(tmp_path)  # finds the standard subfolder
    assert train.images.shape == (20, 32, 32, 3) and test.images.shape == (4, 32, 32, 3)
    assert train.images.dtype == np.float32 and train.labels.dtype == np.int32
    # CHW row-major bytes -> HWC
    np.testing.assert_array_equal(test.images[1, 2, 3] * 255, last[b"data"][1].reshape(3, 32, 32)[:, 2, 3])
    np.testing.assert_array_equal(test.labels, last[b"labels"])


def _idx_bytes(arr):
    code = {np.uint8: 0x08}[arr.dtype.type]
    return bytes([0, 0, code, arr.ndim]) + b"".join(struct.pack(">I", s) for s in arr.shape) + arr.tobytes()


@pytest.mark.parametrize("gz", [True, False])
def test_idx_loader(tmp_path, gz):
    rng = np.random.default_rng(1)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (6, 28, 28), dtype=np.uint8),
              "train-labels-idx1-ubyte": rng.integers(0, 10, 6).astype(np.uint8),
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (3, 28, 28), dtype=np.uint8),
              "t10k-labels-idx1-ubyte": rng.integers(0, 10, 3).astype(np.uint8)}
    for name, a in arrays.items():
        raw = _idx_bytes(a)
        if gz:
            with gzip.open(tmp_path / (name + ".gz"), "wb") as f:
                f.write(raw)
        else:
            (tmp_path / name).write_bytes(raw)
    train, test = data.load_mnist(tmp_path)
    assert train.images.shape == (6, 28, 28, 1) and test.labels.shape == (3,)
    np.testing.assert_allclose(train.images[..., 0] * 255, arrays["train-images-idx3-ubyte"], atol=1e-3)
    np.testing.assert_array_equal(test.labels, arrays["t10k-labels-idx1-ubyte"])


def test_image_folder_loader(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(2)
    for c in ("cat", "dog"):
        (tmp_path / c).mkdir()
        for i in range(6):
            Image.fromarray(rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)).save(tmp_path / c / f"{i}.png")
    train, test = data.load_miniimagenet(tmp_path, image_size=16)
    assert train.images.shape == (10, 16, 16, 3) and test.images.shape == (2, 16, 16, 3)
    np.testing.assert_array_equal(np.bincount(train.labels), [5, 5])


def test_bad_data_dirs(tmp_path):
    missing = tmp_path / "nope"
    for name in ("cifar10", "mnist", "miniimagenet"):
        with pytest.raises(data.DataError, match="nope") as e:
            data.check_data_dir(name, missing)
        assert "expected layout" in str(e.value)
    with pytest.raises(data.DataError, match="required"):
        data.check_data_dir("cifar10", None)
    _write_cifar(tmp_path / "c")
    (tmp_path / "c" / "data_batch_3").unlink()
    with pytest.raises(data.DataError, match="data_batch_3"):
        data.load_cifar10(tmp_path / "c")
    (tmp_path / "c" / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(data.DataError, match="malformed"):
        data.load_cifar10(tmp_path / "c")
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "train-images-idx3-ubyte").write_bytes(b"\x01\x02")
    with pytest.raises(data.DataError, match="train-labels"):
        data.load_mnist(tmp_path / "m")
    with pytest.raises(data.DataError, match="malformed IDX"):
        data.load_idx(tmp_path / "m" / "train-images-idx3-ubyte")


def test_digits_balanced_and_normalized():
    train, test = data.load_dataset("digits", samples_per_class=20)
    assert train.images.shape == (200, 8, 8, 1)
    np.testing.assert_array_equal(np.bincount(train.labels), np.full(10, 20))
    assert test.size == 1797 - 200
    np.testing.assert_allclose(train.images.mean(), 0.0, atol=1e-5)
    np.testing.assert_allclose(train.images.std(), 1.0, atol=1e-4)
    shuffled = data.random_labels(train, seed=3)
    np.testing.assert_array_equal(np.bincount(shuffled.labels), np.bincount(train.labels))
    assert np.any(shuffled.labels != train.labels)


def require_fashion_mnist():
    """Skip on a developer machine without Debian's dataset-fashion-mnist; fail in CI, which installs it."""
    import os

    if not os.path.isdir(data.FASHION_MNIST_DEFAULT_DIR):
        if os.environ.get("CI"):
            pytest.fail("CI must install Debian's dataset-fashion-mnist (.ci/run does)")
        pytest.skip("Debian package dataset-fashion-mnist not installed")


def test_fashion_mnist_default_dir():
    require_fashion_mnist()
    train, test = data.load_dataset("fashion_mnist", samples_per_class=3, test_samples_per_class=2)
    assert train.images.shape == (30, 28, 28, 1) and test.size == 20
    # class-balanced subsets of the real files: every class present, standardised pixels
    np.testing.assert_array_equal(np.bincount(train.labels, minlength=10), 3)
    np.testing.assert_array_equal(np.bincount(test.labels, minlength=10), 2)
    assert abs(float(train.images.mean())) < 1e-4 and 0.99 < float(train.images.std()) < 1.01


def test_epoch_permutation_and_augment():
    p1 = data.epoch_permutation(50, seed=1, epoch=3)
    np.testing.assert_array_equal(p1, data.epoch_permutation(50, seed=1, epoch=3))
    assert not np.array_equal(p1, data.epoch_permutation(50, seed=1, epoch=4))
    x = np.arange(2 * 6 * 6 * 1, dtype=np.float32).reshape(2, 6, 6, 1)
    key = jax.random.key(0)
    np.testing.assert_array_equal(data.augment(key, x, pad=0, flip=False), x)
    y = np.asarray(data.augment(key, x, pad=2))
    assert y.shape == x.shape and y.dtype == np.float32
    np.testing.assert_array_equal(y, np.asarray(data.augment(key, x, pad=2)))
    # Every crop+flip output is a window of the zero-padded, possibly flipped image.
    padded = np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)))
    for i in range(2):
        ok = any(np.array_equal(y[i], img[r:r + 6, c:c + 6]) for img in (padded[i], padded[i][:, ::-1])
                 for r in range(5) for c in range(5))
        assert ok


def test_corrupt_files_and_bad_labels(tmp_path):
    rng = np.random.default_rng(3)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (4, 28, 28), dtype=np.uint8),
              "train-labels-idx1-ubyte": np.array([0, 1, 2, 10], np.uint8),
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (2, 28, 28), dtype=np.uint8),
              "t10k-labels-idx1-ubyte": np.array([0, 1], np.uint8)}
    for name, a in arrays.items():
        with gzip.open(tmp_path / (name + ".gz"), "wb") as f:
            f.write(_idx_bytes(a))
    with pytest.raises(data.DataError, match=r"label 10 \(sample 3\) outside \[0, 10\) in .*train-labels-idx1"):
        data.load_mnist(tmp_path)
    # a truncated .gz (an interrupted download)
    raw = (tmp_path / "t10k-images-idx3-ubyte.gz").read_bytes()
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(data.DataError, match=r"malformed IDX file .*t10k-images-idx3-ubyte.gz.*EOFError"):
        data.load_idx(tmp_path / "t10k-images-idx3-ubyte.gz")
    # a truncated raw file: fewer bytes than the header's shape
    (tmp_path / "raw").write_bytes(_idx_bytes(arrays["train-images-idx3-ubyte"])[:-5])
    with pytest.raises(data.DataError, match="malformed IDX file .*raw.*reshape"):
        data.load_idx(tmp_path / "raw")
    c = tmp_path / "c"
    _write_cifar(c)
    with open(c / "test_batch", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 3072), np.uint8), b"labels": [3, -1]}, f)
    with pytest.raises(data.DataError, match=r"label -1 \(sample 1\) outside \[0, 10\) in .*test_batch"):
        data.load_cifar10(c)


def test_subset_size_errors_name_the_range():
    ds = data.Dataset(np.zeros((5, 2, 2, 1), np.float32), np.array([0, 0, 1, 1, 1], np.int32), 2)
    assert data.subset_per_class(ds, 2).size == 4
    for n in (0, 3):
        with pytest.raises(data.SubsetSizeError, match=r"samples_per_class must be in \[1, 2\]") as e:
            data.subset_per_class(ds, n)
        assert e.value.field == "samples_per_class"
    with pytest.raises(data.SubsetSizeError, match=r"\[1, 173\] for digits") as e:
        data.load_digits(174)
    with pytest.raises(data.SubsetSizeError, match="test_samples_per_class") as e:
        data.load_dataset("synthetic", test_samples_per_class=9,
                          synthetic_kwargs=dict(num_classes=2, samples_per_class=4, test_samples_per_class=2))
    assert e.value.field == "test_samples_per_class"
