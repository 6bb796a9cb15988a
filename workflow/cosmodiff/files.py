"""Output files that never lose data: checked before work starts, written atomically.

:func:`check_output` is the guard of every user-named output (``python -m cosmodiff sample``
and ``infer``): it refuses an output that is one of the inputs, a directory, an existing file
(unless forced) or a place that cannot be written, before any sampling or scan starts.
:func:`atomic_output` is the one temporary-then-rename writer of the library: a failed write
(a full disk, a kill, an exception) removes its ``.tmp`` and leaves the old file untouched.
:func:`atomic_copy` copies a file that way; :func:`temporary_path` and :func:`commit` are its
two halves, for a writer that opens its file in one call and finishes it in another
(:func:`cosmodiff.camels.create_maps` / :func:`~cosmodiff.camels.finalize_maps`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import shutil
import tempfile
from pathlib import Path


def check_output(path, inputs=(), force=False):
    """Raise ValueError (one line, what to change) unless ``path`` can take a new result.

    path:   the output file.
    inputs: files the command reads (an output resolving to one of them is refused).
    force:  allow replacing an existing file (never an input or a directory).
    The output's folder is created if needed and a probe file is written and removed there,
    so that a read-only or missing place fails now, not after the work.
    """
    path = Path(path)
    target = path.resolve()
    for inp in inputs:
        if Path(inp).resolve() == target:
            raise ValueError(f"output {path} is the input {inp}: choose another output file")
    if path.is_dir():
        raise ValueError(f"output {path} is a directory: give a file name, e.g. {path / 'out.h5'}")
    if path.exists() and not force:
        raise ValueError(f"output {path} exists: pass --force to replace it, or choose another output file")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".probe"):
            pass
    except OSError as err:
        raise ValueError(f"cannot write {path}: {err.strerror or err}; choose a writable folder") from None
    return path


def temporary_path(path):
    """Where an atomic writer builds ``path``: ``<path>.tmp`` beside it (same file system, so
    the final rename is atomic)."""
    path = Path(path)
    return path.with_name(path.name + ".tmp")


def commit(tmp, path, durable=False):
    """Rename the complete file ``tmp`` onto ``path``; with ``durable`` its data are first
    forced to disk (fsync), so a crash right after cannot leave an empty ``path``."""
    if durable:
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
    os.replace(tmp, path)


def check_space(path, nbytes):
    """OSError (ENOSPC, or EFBIG under a file-size limit) naming ``path`` when ``nbytes`` (plus
    5% and 64 KiB for metadata) will not fit beside it. HDF5 does not survive a full disk: it
    raises a RuntimeError or crashes mid-write and leaves its temporary file, so the writers
    that know their size ask first."""
    need = int(1.05 * int(nbytes)) + (1 << 16)
    free = shutil.disk_usage(Path(path).parent).free
    if need > free:
        raise OSError(errno.ENOSPC, f"not enough space for {path}: it needs about {need / 1e6:.0f} MB, "
                                    f"{free / 1e6:.0f} MB are free; free space or write elsewhere")
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit != resource.RLIM_INFINITY and need > limit:
        raise OSError(errno.EFBIG, f"{path} would need about {need / 1e6:.1f} MB, above this process's file-size "
                                   f"limit of {limit / 1e6:.1f} MB (ulimit -f)")


@contextlib.contextmanager
def atomic_output(path, durable=False, nbytes=None):
    """Yield a temporary path next to ``path``; rename it onto ``path`` when the block ends
    cleanly (see :func:`commit` for ``durable``), delete it when the block raises (``path``
    is then left as it was); with ``nbytes``, first check that they fit (:func:`check_space`)::

        with atomic_output("s.h5") as tmp:
            with h5py.File(tmp, "w") as f:
                ...
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if nbytes is not None:
        check_space(path, nbytes)
    tmp = temporary_path(path)
    try:
        yield tmp
        commit(tmp, path, durable)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise

def atomic_copy(src, dst):
    """Put a copy of ``src`` at ``dst`` atomically. A real copy, never a hard link: a file
    damaged in place at ``dst`` must not damage ``src`` (a resume restores from it)."""
    with atomic_output(dst) as tmp:
        shutil.copyfile(src, tmp)
