"""Write a set of files whole or not at all (preview folders, exports, the text archive)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from distributor.errors import StorageError


def write_files(files: dict[str, bytes], folder: Path) -> None:
    """Write every file or none: each goes to a temporary name in `folder` first, flushed to disk,
    and all are renamed into place only once every one was written whole. A folder that cannot
    be made or written (a full disk, a read-only one) is a `StorageError` and leaves nothing."""
    staged: list[tuple[str, Path]] = []
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{name}.")
            staged.append((temporary, folder / name))
            with os.fdopen(handle, "wb") as stream:
                stream.write(data)
                stream.flush()
                os.fsync(stream.fileno())
        for temporary, final in staged:
            os.replace(temporary, final)
    except OSError as exc:
        for temporary, _ in staged:
            Path(temporary).unlink(missing_ok=True)
        raise StorageError(f"cannot write {', '.join(files)}: {exc.strerror or exc}; nothing was written",
                           path=str(folder)) from exc
