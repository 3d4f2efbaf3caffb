"""The dataset loader on real image files: generated folders (odd names, mixed sizes and modes, a
corrupt file), the digits folder the CLI writes, .npz archives, nested fractions, bad input."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from jobs.data import DataError, load_dataset, nested_subset, split_indices
from tests.conftest import run_cli

ODD = ["ünï cødé", "with space", "a.b-c"]


@pytest.fixture
def folder(tmp_path):
    """Three classes with odd names; grey, RGB, RGBA, palette, 16-bit and CMYK images of assorted sizes."""
    root = tmp_path / "images"
    rng = np.random.default_rng(0)
    makers = [lambda: Image.fromarray(rng.integers(0, 255, (20, 30), dtype=np.uint8), "L"),
              lambda: Image.fromarray(rng.integers(0, 255, (64, 48, 3), dtype=np.uint8), "RGB"),
              lambda: Image.fromarray(rng.integers(0, 255, (9, 9, 4), dtype=np.uint8), "RGBA"),
              lambda: Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8), "RGB").convert("P"),
              lambda: Image.fromarray(rng.integers(0, 65535, (16, 16), dtype=np.uint16)),
              lambda: Image.fromarray(rng.integers(0, 255, (33, 17, 3), dtype=np.uint8), "RGB").convert("CMYK")]
    for c, name in enumerate(ODD):
        (root / name).mkdir(parents=True)
        for i, make in enumerate(makers):
            image = make()
            suffix = ".jpg" if image.mode == "CMYK" else ".png"
            image.save(root / name / f"img {i}{suffix}")
    (root / ODD[1] / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    (root / ODD[0] / "notes.txt").write_text("not an image: ignored")
    return root


def test_folder_of_mixed_images_resized_with_corrupt_file_named(folder):
    data = load_dataset({"kind": "folder", "path": str(folder), "validation_split": 0.34}, (12, 10, 3), 1.0, 2)
    assert data.classes == sorted(ODD)
    assert data.x_train.shape[1:] == (12, 10, 3) and data.x_train.dtype == np.uint8
    assert len(data.y_train) + len(data.y_val) == 18  # 3 classes x 6 readable images
    record = data.record()
    assert record["skipped_count"] == 1
    assert record["skipped"][0]["path"] == f"{ODD[1]}/broken.jpg" and record["skipped"][0]["error"]
    grey = load_dataset({"kind": "folder", "path": str(folder)}, (8, 8, 1), 1.0, 2)
    assert grey.x_train.shape[1:] == (8, 8, 1)


def test_strict_data_fails_on_the_corrupt_file(folder):
    with pytest.raises(DataError, match="broken.jpg"):
        load_dataset({"kind": "folder", "path": str(folder), "strict_data": True}, (8, 8, 3), 1.0, 2)


def test_bad_input_is_a_clear_error(tmp_path, folder):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset({"kind": "folder", "path": str(tmp_path / "nowhere")}, (8, 8, 3))
    (folder / "empty class").mkdir()
    with pytest.raises(DataError, match="'empty class'"):
        load_dataset({"kind": "folder", "path": str(folder)}, (8, 8, 3))
    (folder / "empty class").rmdir()
    with pytest.raises(DataError, match="fewer than one batch of 64"):
        load_dataset({"kind": "folder", "path": str(folder)}, (8, 8, 3), 1.0, 64)


@pytest.fixture(scope="module")
def digits_folder(tmp_path_factory):
    """The packaged digits as an image folder, written once by the CLI (1,797 PNGs in 10 class folders)."""
    out = tmp_path_factory.mktemp("digits") / "digits"
    done = run_cli("dataset", "digits", out, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "1797 images in 10 class folders" in done.stdout
    return out


def test_packaged_digits_folder_matches_the_bundled_arrays(tmp_path, digits_folder):
    out = digits_folder
    from_folder = load_dataset({"kind": "folder", "path": str(out), "cache": str(tmp_path / "cache")}, (8, 8, 1))
    bundled = load_dataset({"kind": "digits"}, (8, 8, 1))
    # PNG is lossless and labels are the folder names: the same images, split the same way.
    def content(d):  # the folder lists class by class: compare (label, pixels) pairs, not positions
        return sorted(zip(d.y_train.tolist(), map(bytes, d.x_train))), sorted(zip(d.y_val.tolist(), map(bytes, d.x_val)))
    assert content(from_folder) == content(bundled)
    assert from_folder.info["cache"] == "written"
    again = load_dataset({"kind": "folder", "path": str(out), "cache": str(tmp_path / "cache")}, (8, 8, 1))
    assert again.info["cache"] == "hit" and np.array_equal(again.x_val, from_folder.x_val)
    assert isinstance(again.x_train, np.memmap)  # mapped from the node-local cache, not read into memory


def test_a_folder_is_decoded_a_chunk_at_a_time_into_a_file_backed_array(digits_folder, monkeypatch):
    """Streaming, counted not timed: numpy's allocations (tracemalloc) peak at about one chunk of
    decoded images, not at the dataset's size; the pixels live in a file-backed array."""
    import tracemalloc

    from jobs import data as data_module

    monkeypatch.setattr(data_module, "DECODE_CHUNK", 64)
    shape = (48, 48, 3)  # 6.9 kB an image: 1,438 training images are 9.9 MB decoded
    tracemalloc.start()
    try:
        data = load_dataset({"kind": "folder", "path": str(digits_folder)}, shape)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    whole = data.x_train.nbytes + data.x_val.nbytes
    assert len(data.y_train) == 1438 and isinstance(data.x_train, np.memmap)
    # One chunk is 64 x 6.9 kB = 0.44 MB; the old loader held every image twice (list, then stack): 2 x 12 MB.
    assert peak < whole / 4, (peak, whole)
    assert data.x_train[-1].any() and data.x_val[-1].any()  # the last chunk was written too


def test_npz_with_string_labels(tmp_path):
    rng = np.random.default_rng(1)
    path = tmp_path / "d.npz"
    np.savez(path, x=rng.random((30, 5, 5)), y=np.array(["cat", "dog", "eel"] * 10))
    data = load_dataset({"kind": "npz", "path": str(path)}, (4, 4, 3), 1.0, 4)
    assert data.classes == ["cat", "dog", "eel"] and data.x_train.shape[1:] == (4, 4, 3)


def test_fractions_are_nested_and_validation_is_fixed():
    y = np.repeat(np.arange(4), 50)
    train, val = split_indices(y, 4, 0.2, seed=7)
    assert not set(train) & set(val) and len(val) == 40
    subsets = [set(nested_subset(train, y, f, seed=7)) for f in (0.1, 0.25, 0.5, 1.0)]
    assert all(small < large for small, large in zip(subsets, subsets[1:]))
    assert len(subsets[0]) == 4 * 4  # ceil(0.1 x 40) per class
    assert subsets[1] != set(nested_subset(train, y, 0.25, seed=8))  # the seed matters
    small = load_dataset({"kind": "digits"}, (8, 8, 1), 0.25)
    full = load_dataset({"kind": "digits"}, (8, 8, 1), 1.0)
    assert np.array_equal(small.x_val, full.x_val) and len(small.y_train) < len(full.y_train) / 3


def test_tfrecord_in_the_imagenet_layout_streams_with_a_corrupt_example(tmp_path):
    import io

    import tensorflow as tf
    from sklearn.datasets import load_digits

    digits = load_digits()
    path = tmp_path / "train-00000-of-00002"
    examples = []
    for image, label in zip(digits.images[:120], digits.target[:120]):
        png = io.BytesIO()
        Image.fromarray((image / 16 * 255).astype(np.uint8), "L").save(png, format="PNG")
        examples.append((png.getvalue(), int(label) + 1))  # ImageNet TFRecords count labels from 1
    examples[5] = (b"not an image", examples[5][1])
    for shard, part in enumerate((examples[:60], examples[60:])):
        with tf.io.TFRecordWriter(str(tmp_path / f"train-0000{shard}-of-00002")) as writer:
            for encoded, label in part:
                feature = {"image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[encoded])),
                           "image/class/label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label]))}
                writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    data = load_dataset({"kind": "tfrecord", "path": str(tmp_path / "train-*")}, (16, 16, 3), 1.0, 8)
    assert data.classes == [str(n) for n in range(1, 11)] and data.x_train.shape[1:] == (16, 16, 3)
    assert len(data.y_train) + len(data.y_val) == 119
    assert data.record()["skipped"] == [{"path": "example 5", "error": data.skipped[0]["error"]}]
    assert path.exists()
    with pytest.raises(DataError, match="matches no TFRecord file"):
        load_dataset({"kind": "tfrecord", "path": str(tmp_path / "val-*")}, (8, 8, 1))
