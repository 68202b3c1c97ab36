"""The recordings directory as a call needs it: writable, with free space above recorder.min_free_mb. One probe,
read by /healthz (a reason when something is wrong) and by ``doctor`` (its two steps)."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

MIB = 1024 * 1024
PROBE_PREFIX = ".fsctl-probe-"


@dataclass(frozen=True)
class DirectoryState:
    directory: Path
    existed: bool  # before the probe (the probe creates a missing directory, as the recorder would)
    error: OSError | None  # why no file can be written there; None: a file was written and removed
    free_mb: int | None  # None: the free space could not be read

    def problem(self, min_free_mb: int) -> str | None:
        """Why recordings cannot be written there now, or None."""
        if self.error is not None:
            return f"the recordings directory {self.directory} is not writable: {self.error.strerror or self.error}"
        if self.free_mb is None:
            return f"the recordings directory {self.directory}: its free space cannot be read"
        if self.free_mb < min_free_mb:
            return (f"the recordings directory {self.directory} has {self.free_mb} MB free, below the floor of "
                    f"{min_free_mb} MB")
        return None


def probe_directory(directory: os.PathLike | str) -> DirectoryState:
    """Create ``directory`` if missing, write a small file there and remove it, and read the free space."""
    path = Path(directory)
    existed = path.is_dir()
    error = None
    try:
        path.mkdir(parents=True, exist_ok=True)
        descriptor, probe = tempfile.mkstemp(dir=path, prefix=PROBE_PREFIX)
        try:
            os.write(descriptor, b"probe")
        finally:
            os.close(descriptor)
            os.unlink(probe)
    except OSError as exc:
        error = exc
    try:
        st = os.statvfs(path)
        free_mb = st.f_bavail * st.f_frsize // MIB
    except OSError:
        free_mb = None
    return DirectoryState(path, existed, error, free_mb)
