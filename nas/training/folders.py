"""Image folder trees: the one scanner (classes and image files, found without opening any image).

`DataError` lives here, at the bottom of the data modules, because every data source raises it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from nas.errors import UserError

__all__ = ["IMAGE_SUFFIXES", "DataError", "FolderIndex", "index_folder"]

IMAGE_SUFFIXES = frozenset((".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm",
                            ".pgm"))
_LAYOUT = "expected a directory with one subfolder of images per class"


class DataError(UserError):
    """Data that are missing, malformed, too small, or hold an image that cannot be decoded."""


@dataclass(frozen=True)
class FolderIndex:
    """A folder tree's classes and image files."""

    root: str
    classes: tuple[str, ...]
    # (path relative to root, label), by class, then by path within the class
    samples: tuple[tuple[str, int], ...] = field(repr=False)

    def __len__(self) -> int:
        return len(self.samples)

    def counts(self) -> dict[str, int]:
        """Images per class, in class order (a class may hold a single image)."""
        labels = np.fromiter((label for _, label in self.samples), dtype=np.int64, count=len(self.samples))
        return dict(zip(self.classes, np.bincount(labels, minlength=len(self.classes)).tolist(),
                        strict=True))


def _scan_class(top: str, prefix: str) -> list[str]:
    """Relative paths of the image files under `top` (any depth), sorted."""
    found: list[str] = []
    stack = [(top, prefix)]
    seen: set[tuple[int, int]] = set()  # (device, inode) of visited folders: symlink loops end here
    while stack:
        folder, rel = stack.pop()
        try:
            st = os.stat(folder)
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            with os.scandir(folder) as entries:
                for entry in entries:
                    if entry.name.startswith("."):
                        continue
                    if entry.is_dir():
                        stack.append((entry.path, f"{rel}{entry.name}/"))
                    elif os.path.splitext(entry.name)[1].lower() in IMAGE_SUFFIXES:
                        found.append(rel + entry.name)
        except OSError as err:
            raise DataError(f"cannot list {folder!r}: {err.strerror or err}") from None
    found.sort()
    return found


def _class_names(top: str) -> list[str]:
    if not os.path.exists(top):
        raise DataError(f"image folder {top!r} does not exist; {_LAYOUT}")
    if not os.path.isdir(top):
        raise DataError(f"image folder {top!r} is not a directory; {_LAYOUT}")
    try:
        with os.scandir(top) as entries:
            classes = sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))
    except OSError as err:
        raise DataError(f"cannot list image folder {top!r}: {err.strerror or err}") from None
    if len(classes) < 2:
        found = f" ({', '.join(map(repr, classes))})" if classes else ""
        raise DataError(f"image folder {top!r} has {len(classes)} class folders{found}; expected at "
                        "least 2 (one subfolder of images per class)")
    return classes


def index_folder(root: str | os.PathLike[str]) -> FolderIndex:
    """Index a tree with one subfolder per class (sorted names give the labels); opens no image.

    Hidden entries (names starting with ".") are skipped; images may sit at any depth inside
    their class folder; files at the top level are ignored.
    """
    top = os.path.expanduser(os.fspath(root))
    classes = _class_names(top)
    samples: list[tuple[str, int]] = []
    empty = []
    for label, name in enumerate(classes):
        files = _scan_class(os.path.join(top, name), f"{name}/")
        if not files:
            empty.append(name)
        samples += [(f, label) for f in files]
    if empty:
        shown = ", ".join(map(repr, empty[:5])) + (f" and {len(empty) - 5} more" if len(empty) > 5 else "")
        raise DataError(f"class folder {shown} in {top!r} holds no images; valid suffixes: "
                        f"{' '.join(sorted(IMAGE_SUFFIXES))}")
    return FolderIndex(top, tuple(classes), tuple(samples))
