"""A folder of images in class sub-folders (``root/cat/001.png``), read as float32 [C,H,W] in [0,1].

PNG is read by matplotlib itself; other formats (JPEG, BMP, ...) need Pillow, which matplotlib
uses when it is installed. An alpha channel is dropped. Images are resized only when asked
(``--image-size N``: the short side resized to N, bilinear with antialiasing, then the centre
N x N cropped; :func:`describe_transform` says so in the report), since resizing changes what the
teacher sees; without it every image must have the size of the first.
"""

from __future__ import annotations

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


def read_image_folder(
    root: Path, classes: tuple[str, ...] = (), image_size: int | None = None
) -> Source:
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise DataError(f"{root}: no class sub-folders (expected {root}/CLASS/IMAGE.png)")
    names = classes or tuple(p.name for p in folders)
    index = {n: i for i, n in enumerate(names)}
    images, labels = [], []
    shape = None
    for folder in folders:
        if folder.name not in index:
            raise DataError(
                f"{folder}: class {folder.name!r} is not a class of the training data "
                f"({', '.join(names[:10])})"
            )
        for file in sorted(folder.iterdir()):
            if file.suffix.lower() not in IMAGE_SUFFIXES or file.name.startswith("."):
                continue
            img = _read_image(file)
            if image_size is not None:
                img = resize_and_crop(img, image_size)
            if shape is None:
                shape = img.shape
            elif img.shape != shape:
                how = "not resized; pass --image-size N" if image_size is None else "resized"
                raise DataError(
                    f"{file}: image is {_size(img.shape)}, but {_size(shape)} like the first "
                    f"image (images are {how})"
                )
            images.append(img)
            labels.append(index[folder.name])
    if not images:
        raise DataError(f"{root}: no images ({', '.join(IMAGE_SUFFIXES)}) in its sub-folders")
    x = np.stack(images)
    return Source(root.name, Split({"x": x}, np.array(labels, dtype=np.int64)), names)


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
