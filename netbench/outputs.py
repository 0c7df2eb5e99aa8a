"""Where a command writes: every output path checked before any load is sent, and each output
written on its own, so that one that fails at the end (a full disk) loses no other.

A file output's folder must exist (netbench creates no parent folder), the path must not be a
folder, and it must be writable: tried for real (a temporary file in the folder, or an append
of nothing to the file), since permission bits say nothing to root or of a read-only mount.
A folder output (a sweep's run files, report plots) may be created, its parent may not.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from netbench.errors import InputError


def _writable(subject: str, path: str | Path, folder: Path, target: Path | None) -> None:
    try:
        if target is not None and target.is_file():
            with open(target, "ab"):
                pass
        elif target is not None and target.exists():  # a device or a pipe: opening could block
            if not os.access(target, os.W_OK):
                raise PermissionError(13, "Permission denied")
        else:
            with tempfile.TemporaryFile(dir=folder):
                pass
    except OSError as error:
        raise InputError(subject, str(path), f"cannot be written ({error.strerror or error})") from None


def check_file(subject: str, path: str | Path) -> None:
    """An output file: InputError(subject, path, why) unless it can be written."""
    target = Path(path)
    if target.is_dir():
        raise InputError(subject, str(path), "is a folder: give a file name")
    folder = target.parent
    if not folder.is_dir():
        raise InputError(subject, str(path), f"the folder {str(folder)!r} does not exist (netbench creates no folder)")
    _writable(subject, path, folder, target)


def check_folder(subject: str, path: str | Path) -> None:
    """An output folder: it may not exist yet, but its parent must, and it must be writable."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise InputError(subject, str(path), "is a file: this output is a folder of files")
    if not folder.exists():
        if not folder.parent.is_dir():
            raise InputError(subject, str(path), f"the folder {str(folder.parent)!r} does not exist (netbench creates no parent folder)")
        _writable(subject, path, folder.parent, None)
        return
    _writable(subject, path, folder, None)


def check_distinct(outputs: Sequence[tuple[str, str | Path]]) -> None:
    """No two outputs may write one file."""
    seen: dict[str, str] = {}
    for subject, path in outputs:
        target = Path(path)
        if target.exists() and not target.is_file():
            continue  # /dev/null, a pipe: outputs may share it
        key = os.path.realpath(target)
        if key in seen:
            raise InputError(subject, str(path), f"is the file of the {seen[key]} output too: give each output its own")
        seen[key] = subject


def make_folder(path: str | Path) -> Path:
    """An output folder checked by `check_folder`: created when missing, never its parents."""
    folder = Path(path)
    folder.mkdir(exist_ok=True)
    return folder


def write_each(writes: Sequence[tuple[str, str | Path, Callable[[], None]]]) -> tuple[InputError, ...]:
    """Run every (subject, path, write); one that fails does not stop the others. Returns the
    failures, each as the InputError its subject would have raised."""
    failures = []
    for subject, path, write in writes:
        try:
            write()
        except InputError as error:  # e.g. a CSV another netbench rewrote meanwhile
            failures.append(error)
        except OSError as error:
            failures.append(InputError(subject, str(path), f"could not be written: {error.strerror or error}"))
    return tuple(failures)
