"""IDX reading, Fashion-MNIST resolution and image-folder datasets, on files the tests write."""

from __future__ import annotations

import gzip
import hashlib
import struct

import numpy as np
import pytest
from PIL import Image

from edge_runtime.files import atomic_path, atomic_write_text
from edgeship.train.datasets import (
    FASHION_MNIST_SHA256,
    find_fashion_mnist,
    load_fashion_mnist,
    load_image_folder,
)
from edgeship.train.errors import DatasetError
from edgeship.train.idx import read_idx


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array in the IDX format."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


@pytest.fixture
def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(7, 5, 4), dtype=np.uint8)


@pytest.mark.parametrize("gzipped", [False, True])
def test_read_idx_round_trips_raw_and_gzipped(tmp_path, images, gzipped):
    data = idx_bytes(images)
    path = tmp_path / ("f.gz" if gzipped else "f")
    path.write_bytes(gzip.compress(data) if gzipped else data)
    out = read_idx(path, expected_sha256=hashlib.sha256(data).hexdigest())
    assert out.dtype == np.uint8 and out.shape == (7, 5, 4)
    np.testing.assert_array_equal(out, images)


def test_read_idx_reads_big_endian_int32(tmp_path):
    values = np.array([1, -2, 70000], dtype=">i4")
    path = tmp_path / "ints"
    path.write_bytes(struct.pack(">BBBBI", 0, 0, 0x0C, 1, 3) + values.tobytes())
    np.testing.assert_array_equal(read_idx(path), [1, -2, 70000])


def test_wrong_magic_is_rejected(tmp_path, images):
    path = tmp_path / "bad"
    path.write_bytes(b"\x12\x34" + idx_bytes(images)[2:])
    with pytest.raises(DatasetError, match="wrong magic number"):
        read_idx(path)


def test_truncated_file_is_rejected(tmp_path, images):
    path = tmp_path / "short"
    path.write_bytes(idx_bytes(images)[:-10])
    with pytest.raises(DatasetError, match="truncated"):
        read_idx(path)


def test_truncated_gzip_is_rejected(tmp_path, images):
    path = tmp_path / "short.gz"
    path.write_bytes(gzip.compress(idx_bytes(images))[:-20])
    with pytest.raises(DatasetError, match="truncated"):
        read_idx(path)


def test_checksum_mismatch_is_rejected(tmp_path, images):
    path = tmp_path / "f"
    path.write_bytes(idx_bytes(images))
    with pytest.raises(DatasetError, match="Checksum mismatch"):
        read_idx(path, expected_sha256="0" * 64)


def make_fashion_dir(directory, *, gz=True):
    """A folder with the four file names (content irrelevant to resolution)."""
    directory.mkdir(parents=True, exist_ok=True)
    for stem in FASHION_MNIST_SHA256:
        (directory / (f"{stem}.gz" if gz else stem)).write_bytes(b"x")
    return directory


@pytest.fixture
def places(tmp_path, monkeypatch):
    monkeypatch.delenv("EDGESHIP_DATA_DIR", raising=False)
    return {
        "system": tmp_path / "system",
        "cache": tmp_path / "keras",
        "explicit": tmp_path / "explicit",
        "env": tmp_path / "env",
    }


def find(places, data_dir=None, download=None):
    return find_fashion_mnist(
        data_dir, system_dir=places["system"], keras_cache=places["cache"], download=download
    )


def test_resolution_order(places, monkeypatch):
    for name in places:
        make_fashion_dir(places[name], gz=name != "cache")
    monkeypatch.setenv("EDGESHIP_DATA_DIR", str(places["env"]))
    assert find(places, places["explicit"]) == places["explicit"]  # --data-dir first
    assert find(places) == places["env"]  # then the environment variable
    monkeypatch.delenv("EDGESHIP_DATA_DIR")
    assert find(places) == places["system"]  # then the Debian path
    for f in places["system"].iterdir():
        f.unlink()
    assert find(places) == places["cache"]  # then Keras's cache (raw files accepted)


def test_download_is_the_last_resort(places):
    calls = []

    def download():
        calls.append(1)
        make_fashion_dir(places["cache"])

    assert find(places, download=download) == places["cache"]
    assert calls == [1]
    assert find(places, download=download) == places["cache"]  # now cached: no second call
    assert calls == [1]


def test_nothing_found_names_every_place_and_the_fix(places):
    def offline():
        raise OSError("network unreachable")

    with pytest.raises(DatasetError) as info:
        find(places, download=offline)
    message = str(info.value)
    for place in (places["system"], places["cache"]):
        assert str(place) in message
    assert "EDGESHIP_DATA_DIR" in message and "network unreachable" in message
    assert "apt-get install dataset-fashion-mnist" in message


def test_explicit_dir_missing_or_empty_is_an_error(places):
    make_fashion_dir(places["system"])  # would be found, but an explicit dir wins and fails
    with pytest.raises(DatasetError, match="does not exist"):
        find(places, places["explicit"])
    places["explicit"].mkdir()
    with pytest.raises(DatasetError, match="lacks Fashion-MNIST file"):
        find(places, places["explicit"])


def test_fake_fashion_mnist_fails_the_checksum(tmp_path, images):
    for stem in FASHION_MNIST_SHA256:
        (tmp_path / stem).write_bytes(idx_bytes(images))
    with pytest.raises(DatasetError, match="Checksum mismatch"):
        load_fashion_mnist(tmp_path)


def write_image(path, mode, size, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    channels = {"L": (), "RGB": (3,), "RGBA": (4,)}[mode]
    array = np.full((size[1], size[0], *channels), value, dtype=np.uint8)
    Image.fromarray(array, mode=mode).save(path)


def test_image_folder_rgb_split_and_sizes(tmp_path):
    root = tmp_path / "pets"
    for i in range(10):
        write_image(root / "cat" / f"{i}.png", "RGB", (20, 16), 30 + i)
        write_image(root / "dog" / f"{i}.jpg", "RGB", (20, 16), 200 - i)
    write_image(root / "dog" / "odd.png", "RGBA", (40, 32), 100)  # resized to the common size
    (root / "dog" / "notes.txt").write_text("not an image: ignored")
    data = load_image_folder(root)
    assert data.class_names == ("cat", "dog")
    assert data.color_mode == "rgb"
    assert data.image_shape == (16, 20, 3)
    assert len(data.x_train) + len(data.x_test) == 21
    assert set(data.y_test.tolist()) == {0, 1}  # every class is held out
    assert load_image_folder(root).sha256 == data.sha256  # the split and hash are stable
    np.testing.assert_array_equal(load_image_folder(root).y_test, data.y_test)


def test_image_folder_grayscale_and_large_images_scaled_down(tmp_path):
    root = tmp_path / "gray"
    for label in ("a", "b"):
        for i in range(3):
            write_image(root / label / f"{i}.png", "L", (300, 150), 10 * i)
    data = load_image_folder(root)
    assert data.color_mode == "grayscale"
    assert data.image_shape == (48, 96, 1)


def test_image_folder_needs_two_classes(tmp_path):
    write_image(tmp_path / "only" / "one" / "0.png", "L", (8, 8), 0)
    with pytest.raises(DatasetError, match="at least two class"):
        load_image_folder(tmp_path / "only")


def test_unreadable_image_is_named(tmp_path):
    write_image(tmp_path / "d" / "a" / "0.png", "L", (8, 8), 0)
    (tmp_path / "d" / "b").mkdir()
    (tmp_path / "d" / "b" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DatasetError, match="broken.png"):
        load_image_folder(tmp_path / "d")


def test_atomic_path_leaves_old_file_on_failure(tmp_path):
    target = tmp_path / "model.json"
    atomic_write_text(target, "old")
    with pytest.raises(KeyboardInterrupt), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise KeyboardInterrupt
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.json"]
