"""A folder of images in class sub-folders (``root/cat/001.png``), read as float32 [C,H,W] in [0,1].

PNG is read by matplotlib itself; other formats (JPEG, BMP, ...) need Pillow, which matplotlib
uses when it is installed. Images are not resized: every image must have the size of the first
(resizing would change what the teacher sees without saying so). An alpha channel is dropped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekd.data.readers.source import Source
from edgekd.data.split import Split
from edgekd.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def read_image_folder(root: Path, classes: tuple[str, ...] = ()) -> Source:
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
            if shape is None:
                shape = img.shape
            elif img.shape != shape:
                raise DataError(
                    f"{file}: image is {_size(img.shape)}, but {_size(shape)} like the first "
                    "image (images are not resized; resize them beforehand)"
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


def _size(shape: tuple[int, ...]) -> str:
    return f"{shape[2]}x{shape[1]} with {shape[0]} channel{'s' if shape[0] > 1 else ''}"
