"""A folder of images in class sub-folders (``root/cat/001.png``), read as float32 [C,H,W] in [0,1].

PNG is read by matplotlib itself; other formats (JPEG, BMP, ...) need Pillow, which matplotlib
uses when it is installed. An alpha channel is dropped. Images are resized only when asked
(``--image-size N``: the short side resized to N, bilinear with antialiasing, then the centre
N x N cropped; :func:`describe_transform` says so in the report), since resizing changes what the
teacher sees; without it every image must have the size of the first.
"""

from __future__ import annotations

import stat
from pathlib import Path

import numpy as np

from edgekd.data.readers.source import Source
from edgekd.data.split import Split
from edgekd.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def describe_transform(image_size: int | None) -> str | None:
    """What ``--image-size`` did to every image, in words (None: nothing)."""
    if image_size is None:
        return None
    return (
        f"short side resized to {image_size} px (bilinear, antialiased), then the centre "
        f"{image_size}x{image_size} cropped"
    )


STREAM_MIN_BYTES = 64 << 20  # decoded size from which a folder is streamed, not held in memory


def read_image_folder(
    root: Path,
    classes: tuple[str, ...] = (),
    image_size: int | None = None,
    workers: int | None = None,
) -> Source:
    """The images under ``root/CLASS/`` with their class labels. Below :data:`STREAM_MIN_BYTES`
    decoded, every image is decoded now into one array; from there on the images stay files,
    decoded batch by batch as training and the teacher use them (``edgekd.data.stream``; by
    ``workers`` worker processes, None: one per spare core)."""
    names, files, labels = list_images(root, classes)
    shape = _decode(files[0], image_size).shape
    y = np.array(labels, dtype=np.int64)
    if len(files) * int(np.prod(shape)) * 4 < STREAM_MIN_BYTES:
        x = np.stack([_decode(file, image_size, shape) for file in files])
        return Source(root.name, Split({"x": x}, y), names)
    from edgekd.data.stream import LazyRows

    if image_size is None:
        _check_sizes(files, shape)
    decode = _Decoder(tuple(files), image_size, shape)
    rows = LazyRows(decode, np.arange(len(files)), shape, np.float32, workers)
    return Source(root.name, Split({"x": rows}, y), names)


def list_images(root: Path, classes: tuple[str, ...] = ()) -> tuple[tuple[str, ...], list, list]:
    """``(class names, image files, their class indices)`` under ``root/CLASS/``, sorted. Only
    regular files are listed (a FIFO named ``x.png`` would block the reader), and no file or
    class folder whose real path leaves ``root`` (a symlink out of the data set); an empty class
    folder is refused (its class could never be learnt or measured)."""
    real_root = root.resolve()
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise DataError(f"{root}: no class sub-folders (expected {root}/CLASS/IMAGE.png)")
    names = classes or tuple(p.name for p in folders)
    index = {n: i for i, n in enumerate(names)}
    files, labels = [], []
    for folder in folders:
        if folder.name not in index:
            raise DataError(
                f"{folder}: class {folder.name!r} is not a class of the training data "
                f"({', '.join(names[:10])})"
            )
        _inside(folder, real_root, root)
        found = [f for f in sorted(folder.iterdir()) if _is_image_name(f)]
        if not found:
            raise DataError(
                f"{folder}: class folder has no images ({', '.join(IMAGE_SUFFIXES)}); "
                "remove it or add images"
            )
        for file in found:
            _inside(file, real_root, root)
            if not stat.S_ISREG(_mode(file)):
                raise DataError(f"{file}: not a regular file (a FIFO, device or socket); remove it")
            files.append(file)
            labels.append(index[folder.name])
    return names, files, labels


def _is_image_name(file: Path) -> bool:
    return file.suffix.lower() in IMAGE_SUFFIXES and not file.name.startswith(".")


def _mode(file: Path) -> int:
    try:
        return file.stat().st_mode  # of what a symlink points to
    except OSError as exc:
        raise DataError(f"{file}: cannot read it ({exc.strerror or exc})") from None


def _inside(path: Path, real_root: Path, root: Path) -> None:
    """Refuses ``path`` when its real path (symlinks followed) is not under ``root``'s."""
    try:
        real = path.resolve()
    except (OSError, RuntimeError):  # a symlink loop
        raise DataError(f"{path}: a symlink that cannot be resolved (a loop?)") from None
    if not real.is_relative_to(real_root):
        raise DataError(
            f"{path}: a symlink to {real}, outside the data folder {root}; "
            "copy the file in or remove the link"
        )


def _check_sizes(files: list[Path], shape: tuple[int, ...]) -> None:
    """Without ``--image-size`` every image of a streamed folder must have the first one's size:
    checked from the headers (nothing decoded), so that a large folder is refused before
    anything trains."""
    for file in files[1:]:
        size = _header_size(file)
        if size is not None and size != (shape[2], shape[1]):
            raise DataError(
                f"{file}: image is {size[0]}x{size[1]}, but {_size(shape)} like the first "
                "image (images are not resized; pass --image-size N)"
            )


def _header_size(file: Path) -> tuple[int, int] | None:
    """(width, height) from the file's header, or None when Pillow cannot tell (the decoder
    then says what is wrong)."""
    from PIL import Image

    try:
        with Image.open(file) as img:
            return img.size
    except Exception:  # Pillow raises many types for a bad file; decoding reports it
        return None


class _Decoder:
    """Decodes image ``i`` of a streamed folder (picklable, for DataLoader workers)."""

    def __init__(self, files: tuple[Path, ...], image_size: int | None, shape) -> None:
        self.files, self.image_size, self.shape = files, image_size, tuple(shape)

    def __call__(self, i: int) -> np.ndarray:
        return _decode(self.files[i], self.image_size, self.shape)


def _decode(file: Path, image_size: int | None, shape=None) -> np.ndarray:
    """One image as float32 [C,H,W], resized when asked; refused unless it has ``shape``."""
    img = _read_image(file)
    if image_size is not None:
        img = resize_and_crop(img, image_size)
    if shape is not None and img.shape != tuple(shape):
        how = "not resized; pass --image-size N" if image_size is None else "resized"
        raise DataError(
            f"{file}: image is {_size(img.shape)}, but {_size(shape)} like the first "
            f"image (images are {how})"
        )
    return img


def _read_image(file: Path) -> np.ndarray:
    import matplotlib.image

    try:
        img = np.asarray(matplotlib.image.imread(file))
    except Exception as exc:  # Pillow and matplotlib raise many types for a bad file
        raise DataError(f"{file}: cannot read the image ({type(exc).__name__}: {exc})") from None
    if np.issubdtype(img.dtype, np.integer):
        img = img.astype(np.float32) / np.iinfo(img.dtype).max
    img = img.astype(np.float32)
    if img.ndim == 2:
        return img[None]
    if img.ndim == 3 and img.shape[-1] in (3, 4):
        return np.ascontiguousarray(img[..., :3].transpose(2, 0, 1))
    raise DataError(f"{file}: unsupported image layout {list(img.shape)}")


def resize_and_crop(img: np.ndarray, size: int) -> np.ndarray:
    """``img`` ([C,H,W] float32) with its short side resized to ``size`` and the centre
    ``size`` x ``size`` cropped (channels kept)."""
    from PIL import Image

    _, h, w = img.shape
    scale = size / min(h, w)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    if (new_h, new_w) != (h, w):  # Pillow's resize filters antialias when shrinking
        img = np.stack(
            [np.asarray(Image.fromarray(c).resize((new_w, new_h), Image.BILINEAR))
             for c in img]
        )  # fmt: skip
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return np.ascontiguousarray(img[:, top : top + size, left : left + size], dtype=np.float32)


def _size(shape: tuple[int, ...]) -> str:
    return f"{shape[2]}x{shape[1]} with {shape[0]} channel{'s' if shape[0] > 1 else ''}"
