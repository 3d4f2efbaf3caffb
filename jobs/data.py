"""Real datasets for the `fit` phase: load, check, resize to the test's input, split, subset, cache.

Sources (`dataset.kind`):
- `folder`: an image folder tree, one sub-folder per class (any name), JPEG/PNG/BMP/GIF/WebP,
  any sizes, grey or colour; labels are the sorted sub-folder names;
- `npz`: a NumPy archive with `x` (N, H, W[, C]) and `y` (N,) labels (ints or strings);
- `tfrecord`: TFRecord files (a path or a glob) in the ImageNet layout (`image/encoded`,
  `image/class/label`), streamed with tf.data where TensorFlow is installed;
- `digits`: scikit-learn's bundled handwritten digits (1,797 8x8 grey images, 10 classes), read
  from the installed package: nothing is downloaded, no folder to prepare.

Every image is decoded with Pillow (threads: decoding releases the GIL), converted to the test's
channels (grey or RGB) and resized (bilinear) to its input, as uint8. Folder and TFRecord images are
decoded in chunks of `DECODE_CHUNK` straight into a file-backed array (numpy's .npy memmap): the
process holds one chunk of decoded images at a time, whatever the dataset's size, and the training
side (jobs/fit.py) reads batches from that array through Keras' PyDataset with prefetch. The file is
the node-local cache when there is one, else an unlinked temporary file (its disk space goes with
the process). `.npz` archives and digits are small arrays held in memory as they come. An image
Pillow cannot read is skipped, counted and named in the result, or fails the cell with
`strict_data`. Bad input (no such path, an empty class, fewer training images than one batch)
raises DataError before any window opens.

The split is stratified and seeded: the same seed gives the same validation set whatever the
train_fraction, and the fractions are nested (the 10 % subset is inside the 25 % one): each class's
training images are shuffled once with the seed and the first ceil(fraction x n) are kept.

The split and subset come from the labels alone, before decoding: only the images a cell uses are
decoded. With `cache` (a folder, normally node-local scratch such as /tmp), the decoded arrays are
kept as one folder (x_train.npy, x_val.npy, meta.json) keyed by the source listing (paths, sizes,
times), the input shape, the split and the fraction, and mapped again by later cells (repetitions,
budgets) on that node.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
KINDS = ("folder", "npz", "digits", "tfrecord")
# The ImageNet TFRecord layout (TF-slim's and the TPU models' build_imagenet_data.py).
TFRECORD_IMAGE, TFRECORD_LABEL = "image/encoded", "image/class/label"
# Images decoded at once: what the process holds of a folder's pixels beyond the file-backed array.
DECODE_CHUNK = 256


class DataError(ValueError):
    """The dataset cannot be used as given; the message says what and where."""


@dataclass
class Dataset:
    x_train: np.ndarray  # uint8 (N, H, W, C); for folders and TFRecords a read-only memmap (file-backed)
    y_train: np.ndarray  # int64 class indices
    x_val: np.ndarray
    y_val: np.ndarray
    classes: list
    skipped: list = field(default_factory=list)  # [{"path", "error"}] unreadable images left out
    info: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def record(self) -> dict:
        """What the result says about the data it was trained and evaluated on."""
        return {**self.info, "classes": list(self.classes), "num_classes": self.num_classes,
                "train_samples": int(len(self.y_train)), "val_samples": int(len(self.y_val)),
                "skipped_count": len(self.skipped), "skipped": self.skipped[:100]}


def load_dataset(spec: dict, input_shape: tuple, train_fraction: float = 1.0, batch_size: int = 1) -> Dataset:
    """The dataset of a cell's `dataset` params, resized to `input_shape` (H, W, C), split and subset.

    The split and the subset are drawn from the labels alone, before any image is decoded, so only
    the images the cell uses are decoded (a 10 % subset of ImageNet decodes 10 % of it), and an
    unreadable image leaves its own split without moving any other image.
    """
    clock = time.perf_counter()
    kind = spec.get("kind", "folder")
    if kind not in KINDS:
        raise DataError(f"dataset kind {kind!r} is not one of {', '.join(KINDS)}")
    height, width, channels = input_shape
    if channels not in (1, 3):
        raise DataError(f"the model takes {channels} channels; image datasets give 1 (grey) or 3 (RGB)")
    shape = (height, width, channels)
    classes, labels, decode, key = _index(spec, shape)
    seed = spec.get("seed", 0)
    train, val = split_indices(labels, len(classes), spec.get("validation_split", 0.2), seed)
    train = nested_subset(train, labels, train_fraction, seed)
    cached = _cache_path(spec, shape, key, train_fraction)
    if cached is not None and (cached / "meta.json").is_file():
        x_train, y_train, x_val, y_val, skipped = _read_cache(cached)
        cache_state = "hit"
    else:
        target = None
        if cached is not None:  # decode into a private folder beside the cache, published whole below
            cached.parent.mkdir(parents=True, exist_ok=True)
            target = Path(tempfile.mkdtemp(prefix=f".{cached.name}.", dir=cached.parent))
        try:
            (x_train, kept_train, skipped_train), (x_val, kept_val, skipped_val) = (
                decode(train, target and target / "x_train.npy"), decode(val, target and target / "x_val.npy"))
            y_train, y_val = labels[train][kept_train], labels[val][kept_val]
            skipped = skipped_train + skipped_val
            cache_state = "off"
            if target is not None:
                _write_meta(target, x_train, y_train, x_val, y_val, skipped)
                try:
                    os.rename(target, cached)  # atomic: a concurrent cell sees no folder or a whole one
                    target = None
                except OSError:  # another cell published the same key first: use ours, drop it after
                    pass
                cache_state = "written"
        finally:
            if target is not None:  # the arrays stay mapped; the files go
                shutil.rmtree(target, ignore_errors=True)
    if skipped and spec.get("strict_data"):
        names = ", ".join(s["path"] for s in skipped[:5])
        raise DataError(f"{len(skipped)} unreadable image(s) and strict_data is set: {names}")
    unreadable = [name for label, name in enumerate(classes) if not np.any(y_train == label)]
    if unreadable:
        raise DataError(f"class(es) with no readable training image: {', '.join(map(repr, unreadable))}")
    if len(y_train) < batch_size:
        raise DataError(f"{len(y_train)} training image(s) at train_fraction {train_fraction:g}: fewer than one "
                        f"batch of {batch_size}; lower batch_size or use more data")
    if len(y_val) == 0:
        raise DataError("no validation image: raise validation_split or use more data")
    return Dataset(x_train, y_train, x_val, y_val, classes, skipped, {
        "kind": kind, "source": _source(spec), "input_shape": list(shape),
        "validation_split": spec.get("validation_split", 0.2), "seed": seed,
        "train_fraction": train_fraction, "total_images": int(len(labels)), "cache": cache_state,
        "cache_path": str(cached) if cached is not None else None, "load_s": time.perf_counter() - clock})


def _index(spec: dict, shape: tuple) -> tuple:
    """(classes, labels of every image, decode(indices) -> (x, kept mask, skipped), cache key part)."""
    kind = spec.get("kind", "folder")
    if kind == "folder":
        root = Path(spec["path"])
        classes, files = list_folder(root)
        labels = np.array([label for _, label in files], dtype=np.int64)

        def decode(indices, path=None):
            return _decode_files(root, [files[i][0] for i in indices], shape, path)
        key = [(str(p), p.stat().st_size, p.stat().st_mtime_ns, label) for p, label in files]
        return classes, labels, decode, key
    if kind == "tfrecord":
        return _index_tfrecord(spec, shape)
    if kind == "npz":
        x, labels, classes = _read_npz(Path(spec["path"]))
        path = Path(spec["path"])
        key = (str(path.resolve()), path.stat().st_size, path.stat().st_mtime_ns)
    else:
        x, labels, classes = _read_digits()
        key = _source(spec)

    def convert(indices, path=None):  # small arrays already in memory: kept there
        kept = np.ones(len(indices), dtype=bool)
        return _arrays_to_input(x[indices], shape), kept, []
    return classes, labels, convert, key


def _tfrecord_files(pattern: str) -> list:
    import glob

    files = sorted(glob.glob(os.path.expanduser(pattern)))
    if not files:
        raise DataError(f"dataset path {pattern} matches no TFRecord file")
    return files


def _index_tfrecord(spec: dict, shape: tuple) -> tuple:
    """TFRecord files (a path or a glob) of `image/encoded` + `image/class/label` examples; TensorFlow only.

    Two streaming passes with tf.data: the labels first (for the split), then only the chosen images,
    decoded by Pillow like a folder's, so the same skip-and-count applies.
    """
    try:
        import tensorflow as tf
    except ImportError:
        raise DataError("dataset kind tfrecord needs TensorFlow (the tensorflow backend)") from None
    files = _tfrecord_files(spec["path"])
    features = {TFRECORD_IMAGE: tf.io.FixedLenFeature([], tf.string, default_value=b""),
                TFRECORD_LABEL: tf.io.FixedLenFeature([], tf.int64, default_value=-1)}

    def records():
        return tf.data.TFRecordDataset(files).map(lambda r: tf.io.parse_single_example(r, features),
                                                   num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
    try:
        raw = np.array([int(r[TFRECORD_LABEL]) for r in records().map(lambda r: {TFRECORD_LABEL: r[TFRECORD_LABEL]})
                        .as_numpy_iterator()], dtype=np.int64)
    except tf.errors.OpError as exc:
        raise DataError(f"{spec['path']}: unreadable TFRecord data: {exc.message}") from None
    if (raw < 0).any():
        raise DataError(f"{spec['path']}: {int((raw < 0).sum())} example(s) without {TFRECORD_LABEL}")
    classes, labels = _labels(raw)

    def decode(indices, path=None):
        from io import BytesIO

        from PIL import Image

        def read(encoded):
            try:
                with Image.open(BytesIO(encoded)) as image:
                    image.load()
                    return _to_input(image, shape), None
            except Exception as exc:  # noqa: BLE001 - any decoder failure: this example is unreadable
                return None, f"{type(exc).__name__}: {exc}"
        wanted = np.zeros(len(labels), dtype=bool)
        wanted[indices] = True  # indices are sorted: the stream visits them in their order
        encoded = (r[TFRECORD_IMAGE] for index, r in enumerate(records().as_numpy_iterator()) if wanted[index])
        return _decode_stream(encoded, read, [f"example {int(i)}" for i in indices], shape, path)
    key = [(f, os.stat(f).st_size, os.stat(f).st_mtime_ns) for f in files]
    return classes, labels, decode, key


# --- splits ---------------------------------------------------------------------------------------

def split_indices(y: np.ndarray, num_classes: int, validation_split: float, seed: int) -> tuple:
    """Stratified, seeded: per class, a shuffled `validation_split` share (at least one) to validation."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for label in range(num_classes):
        members = rng.permutation(np.flatnonzero(y == label))
        n_val = max(1, round(len(members) * validation_split)) if len(members) > 1 else 0
        val.append(members[:n_val])
        train.append(members[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def nested_subset(train: np.ndarray, y: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """The first ceil(fraction x n) of each class in one seeded order: smaller fractions nest in larger."""
    if not 0 < fraction <= 1:
        raise DataError(f"train_fraction must be in (0, 1], got {fraction}")
    if fraction == 1:
        return train
    rng = np.random.default_rng([seed, 1])  # its own stream: independent of the split's
    kept = []
    for label in np.unique(y[train]):
        members = rng.permutation(train[y[train] == label])
        kept.append(members[:math.ceil(fraction * len(members))])
    return np.sort(np.concatenate(kept))


# --- sources --------------------------------------------------------------------------------------

def _source(spec: dict) -> str:
    if spec.get("kind") == "digits":
        import sklearn

        return f"scikit-learn {sklearn.__version__} load_digits (bundled)"
    return str(Path(spec["path"]).resolve())


def list_folder(root: Path) -> tuple:
    """(class names, [(path, label)]) of an image folder tree; DataError on a missing path or empty class."""
    if not root.exists():
        raise DataError(f"dataset path {root} does not exist")
    if not root.is_dir():
        raise DataError(f"dataset path {root} is not a folder (kind: folder wants one sub-folder per class)")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"{root} has no class sub-folder (one sub-folder per class, images inside)")
    files, empty = [], []
    for label, name in enumerate(classes):
        images = sorted(p for p in (root / name).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not images:
            empty.append(name)
        files.extend((p, label) for p in images)
    if empty:
        raise DataError(f"{root}: class folder(s) with no image ({', '.join(map(repr, empty))}); "
                        f"images are files ending in {', '.join(sorted(IMAGE_SUFFIXES))}")
    return classes, files


def _decode_files(root: Path, paths: list, shape: tuple, out: Path | None = None) -> tuple:
    """Decode in threads (Pillow releases the GIL), a chunk at a time, into a file-backed array;
    (images, kept mask, [{path, error}] of the unreadable)."""
    names = [str(path.relative_to(root)) for path in paths]
    with ThreadPoolExecutor(max_workers=min(16, os.cpu_count() or 1)) as pool:
        return _decode_stream(paths, lambda path: _decode(path, shape), names, shape, out, pool)


def _decode_stream(items, read, names: list, shape: tuple, out: Path | None, pool=None) -> tuple:
    """read(item) -> (image or None, error) over `items` (len(names) of them), DECODE_CHUNK at a time.

    The readable images go, in order, into a .npy memmap at `out` (an unlinked temporary file when
    None); the result is a read-only view of the rows written, so only one chunk of decoded pixels
    is ever held in memory.
    """
    total = len(names)
    unlink = out is None
    if unlink:
        handle, name = tempfile.mkstemp(suffix=".npy", dir=os.environ.get("BENCHMARK_TRACKER_SCRATCH"))
        os.close(handle)
        out = Path(name)
    array = np.lib.format.open_memmap(out, mode="w+", dtype=np.uint8, shape=(max(total, 1), *shape))
    if unlink:
        os.unlink(out)  # the mapping keeps the data; the disk space is freed with it
    kept = np.zeros(total, dtype=bool)
    skipped, row, position = [], 0, 0
    iterator = iter(items)
    while position < total:
        chunk = [item for _, item in zip(range(DECODE_CHUNK), iterator)]
        decoded = pool.map(read, chunk) if pool is not None else map(read, chunk)
        for image, error in decoded:
            if image is None:
                skipped.append({"path": names[position], "error": error})
            else:
                array[row], kept[position], row = image, True, row + 1
            position += 1
    array.flush()
    view = array[:row]
    view.flags.writeable = False
    return view, kept, skipped


def _decode(path: Path, shape: tuple) -> tuple:
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
            return _to_input(image, shape), None
    except Exception as exc:  # noqa: BLE001 - any decoder failure: this image is unreadable
        return None, f"{type(exc).__name__}: {exc}"


def _to_input(image, shape: tuple) -> np.ndarray:
    """A Pillow image in the model's channels and size, as uint8 (H, W, C)."""
    from PIL import Image

    height, width, channels = shape
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):  # 16-bit/float grey: scale to 8 bits first
        array = np.asarray(image, dtype=np.float64)
        top = array.max() or 1.0
        image = Image.fromarray((array / top * 255).astype(np.uint8))
    image = image.convert("RGB" if channels == 3 else "L")
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    array = np.asarray(image, dtype=np.uint8)
    return array[..., None] if channels == 1 else array


def _to_uint8(x: np.ndarray) -> np.ndarray:
    """Whole-array scaling to 0-255 (so every subset of one archive scales the same way)."""
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3, 4):
        raise DataError(f"images must be (N, H, W) or (N, H, W, C) with C in 1, 3, 4; got {x.shape}")
    if x.dtype == np.uint8:
        return x
    low, top = float(x.min()), float(x.max())
    if 0 <= low and top <= 1:  # floats in [0, 1]
        return (x * 255).round().astype(np.uint8)
    return ((x.astype(np.float64) - min(low, 0)) / ((top - min(low, 0)) or 1.0) * 255).round().astype(np.uint8)


def _arrays_to_input(x: np.ndarray, shape: tuple) -> np.ndarray:
    from PIL import Image

    out = [_to_input(Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image), shape) for image in x]
    return np.stack(out) if out else np.zeros((0, *shape), np.uint8)


def _labels(y: np.ndarray) -> tuple:
    classes, indices = np.unique(y, return_inverse=True)
    return [str(c) for c in classes], indices.astype(np.int64)


def _read_npz(path: Path) -> tuple:
    if not path.is_file():
        raise DataError(f"dataset path {path} does not exist (kind: npz wants a .npz file with x and y)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [k for k in ("x", "y") if k not in archive]
            if missing:
                raise DataError(f"{path}: missing array(s) {', '.join(missing)} (wants x: images, y: labels)")
            x, y = archive["x"], archive["y"]
    except (OSError, ValueError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"{path}: not a readable .npz archive: {exc}") from None
    if len(x) != len(y):
        raise DataError(f"{path}: {len(x)} images but {len(y)} labels")
    classes, labels = _labels(y)
    return _to_uint8(x), labels, classes


def _read_digits() -> tuple:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images / 16.0 * 255).round().astype(np.uint8)  # 0-16 grey levels to 0-255
    return images[..., None], digits.target.astype(np.int64), [str(n) for n in digits.target_names]


def write_digits_folder(out: Path) -> dict:
    """scikit-learn's bundled digits as an image folder tree (out/<digit>/<index>.png); nothing downloaded."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    out = Path(out)
    counts = {}
    for index, (image, label) in enumerate(zip(digits.images, digits.target)):
        folder = out / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{index:04d}.png"
        tmp = folder / f".{index:04d}.png.tmp"
        Image.fromarray((image / 16.0 * 255).round().astype(np.uint8), mode="L").save(tmp, format="PNG")
        os.replace(tmp, path)
        counts[str(label)] = counts.get(str(label), 0) + 1
    return counts


# --- cache ----------------------------------------------------------------------------------------

def _cache_path(spec: dict, shape: tuple, source_key, train_fraction: float) -> Path | None:
    """One folder per source listing (paths, sizes, times: any change is a new key), shape, split and subset."""
    # A launcher that knows the node's local scratch exports it; the sweep's `cache` wins.
    folder = spec.get("cache") or os.environ.get("BENCHMARK_TRACKER_SCRATCH")
    if not folder:
        return None
    folder = Path(os.path.expandvars(os.path.expanduser(str(folder))))
    key = {"kind": spec.get("kind"), "shape": list(shape), "source": source_key, "fraction": train_fraction,
           "split": spec.get("validation_split", 0.2), "seed": spec.get("seed", 0)}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return folder / f"benchmark-tracker-data-{digest}"


def _write_meta(folder: Path, x_train, y_train, x_val, y_val, skipped: list) -> None:
    """Labels, row counts and the skipped list beside the arrays; arrays not file-backed are saved here."""
    for name, x in (("x_train", x_train), ("x_val", x_val)):
        if not isinstance(x, np.memmap):
            np.save(folder / f"{name}.npy", x)
    meta = {"rows": {"x_train": len(x_train), "x_val": len(x_val)}, "y_train": y_train.tolist(),
            "y_val": y_val.tolist(), "skipped": skipped}
    (folder / "meta.json").write_text(json.dumps(meta))


def _read_cache(folder: Path) -> tuple:
    meta = json.loads((folder / "meta.json").read_text())
    x_train, x_val = (np.load(folder / f"{name}.npy", mmap_mode="r")[:meta["rows"][name]]
                      for name in ("x_train", "x_val"))
    return (x_train, np.array(meta["y_train"], np.int64), x_val, np.array(meta["y_val"], np.int64),
            meta["skipped"])


def peek_classes(spec: dict) -> list:
    """The class names without decoding any image: checks the source exists before a window opens."""
    kind = spec.get("kind", "folder")
    if kind == "folder":
        return list_folder(Path(spec["path"]))[0]
    if kind == "npz":
        path = Path(spec["path"])
        if not path.is_file():
            raise DataError(f"dataset path {path} does not exist (kind: npz wants a .npz file with x and y)")
        with np.load(path, allow_pickle=False) as archive:
            if "y" not in archive:
                raise DataError(f"{path}: missing array y (labels)")
            return _labels(archive["y"])[0]
    if kind == "digits":
        return [str(n) for n in range(10)]
    if kind == "tfrecord":
        _tfrecord_files(spec["path"])
        return _index_tfrecord(spec, (1, 1, 1))[0]
    raise DataError(f"dataset kind {kind!r} is not one of {', '.join(KINDS)}")
