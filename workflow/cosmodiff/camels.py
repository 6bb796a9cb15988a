"""The CAMELS Multifield Dataset (CMD) on disk: file layout, downloads, readers and writers.

The data this package uses from CMD (Villaescusa-Navarro et al. 2022) are two files of the
IllustrisTNG latin-hypercube (LH) set, both under ``2D_maps/data/`` of the CMD base URL:

- :data:`MAPS_FILENAME`: 15,000 x 256 x 256 float32 ``.npy`` (3.93 GB) of projected CDM
  surface density, units (Msun/h)/(Mpc/h)^2;
- :data:`PARAMS_FILENAME`: a 1000 x 6 text table, no header, whitespace separated, columns
  :data:`cosmodiff.cosmology.PARAM_NAMES` (Omega_m, sigma_8, A_SN1, A_AGN1, A_SN2, A_AGN2),
  five decimals (``0.30900 0.97900 3.11234 1.12194 0.66850 0.53182``).

Each simulation gives :data:`~cosmodiff.cosmology.MAPS_PER_SIM` = 15 maps (5 slabs x 3
axes), stored consecutively: map ``i`` belongs to simulation ``i // 15`` and has the
parameters ``params[i // 15]``.

:func:`download` fetches a file with the standard library only: it streams to
``<dest>.part``, resumes an interrupted transfer with an HTTP ``Range`` request, checks the
size and sha256 and only then renames the file into place, so ``dest`` exists only when it is
complete and verified. Writers (:func:`write_params`, :func:`maps_writer`) are atomic in the
same sense.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import re
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np

from .cosmology import MAPS_PER_SIM, PARAM_NAMES
from .files import atomic_output, commit, temporary_path

__all__ = [
    "BASE_URL",
    "MAPS_SUBDIR",
    "MAPS_FILENAME",
    "PARAMS_FILENAME",
    "MAPS_SHAPE",
    "N_SIMS",
    "DownloadError",
    "file_url",
    "download",
    "sha256sum",
    "read_params",
    "write_params",
    "check_npy",
    "open_maps",
    "create_maps",
    "finalize_maps",
    "maps_writer",
    "sim_index",
    "check_layout",
    "map_params",
]

#: Base URL of CMD at the Flatiron Institute.
BASE_URL = "https://users.flatironinstitute.org/~fvillaescusa/priv/DEPnzxoWlaTQ6CjrXqsm0vYi8L7Jy/CMD"
#: Folder of the 2D maps (and their parameter tables) below :data:`BASE_URL`.
MAPS_SUBDIR = "2D_maps/data"
#: CDM surface-density maps of the IllustrisTNG LH set at z = 0.
MAPS_FILENAME = "Maps_Mcdm_IllustrisTNG_LH_z=0.00.npy"
#: Parameters of the 1000 simulations of the IllustrisTNG LH set.
PARAMS_FILENAME = "params_LH_IllustrisTNG.txt"
#: Number of simulations of the LH set.
N_SIMS = 1000
#: Shape of the array in :data:`MAPS_FILENAME`.
MAPS_SHAPE = (N_SIMS * MAPS_PER_SIM, 256, 256)

_N_PARAMS = len(PARAM_NAMES)
_USER_AGENT = "cosmodiff (python urllib)"
_PARAMS_FMT = "%.5f"


class DownloadError(RuntimeError):
    """A download failed; the message says what went wrong and what to change."""


def file_url(filename: str, base_url: str = BASE_URL, subdir: str = MAPS_SUBDIR) -> str:
    """URL of a CMD file: ``<base_url>/<subdir>/<filename>`` (the filename %-quoted, ``=`` kept)."""
    parts = [base_url.rstrip("/")]
    if subdir:
        parts.append(subdir.strip("/"))
    parts.append(urllib.parse.quote(filename, safe="=+,"))
    return "/".join(parts)


# --------------------------------------------------------------------------------------------
# checksums and downloads
# --------------------------------------------------------------------------------------------


def sha256sum(path, chunk_size: int = 1 << 22) -> str:
    """Hex sha256 digest of a file, read in chunks (constant memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk_size)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def _verify(path: Path, sha256: str | None, size: int | None, kind: str = "") -> str | None:
    """None if ``path`` has the expected size and sha256 (each when given) and holds what its
    ``kind`` (the destination's suffix) announces, else a reason: ``.npy`` a complete array
    file (:func:`check_npy`), ``.txt`` a parameter table (:func:`read_params`)."""
    got_size = path.stat().st_size
    if size is not None and got_size != int(size):
        what = "truncated" if got_size < int(size) else "larger than expected"
        return f"size mismatch: expected {int(size)} bytes, got {got_size} ({what})"
    if sha256 is not None:
        got = sha256sum(path)
        if got.lower() != sha256.strip().lower():
            return f"sha256 mismatch: expected {sha256.strip().lower()}, got {got}"
    check = {".npy": check_npy, ".txt": read_params}.get(kind)
    if check is not None:
        try:
            check(path)
        except ValueError as e:
            return str(e)
    return None


class _Transient(Exception):
    """A failure worth retrying with a resume (connection drop, timeout, 5xx)."""


class _Restart(Exception):
    """The partial file cannot be resumed; start over from byte 0 (counts as an attempt)."""


class _WriteFailed(Exception):
    """The partial file could not be written (full disk, file-size limit): not worth a retry,
    and the part is deleted so that it does not keep the disk full."""

    def __init__(self, part, error):
        super().__init__(f"cannot write {part}: {error.strerror or error}")


_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)", re.I)
_CONTENT_RANGE_416 = re.compile(r"bytes\s+\*/(\d+)", re.I)


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _progress_bar(total, initial, desc, enabled):
    from tqdm.auto import tqdm

    disable = (not enabled) or not (hasattr(sys.stderr, "isatty") and sys.stderr.isatty())
    return tqdm(
        total=total,
        initial=initial,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=desc,
        disable=disable,
        leave=False,
    )


def _host(url: str) -> str:
    return urllib.parse.urlsplit(url).netloc or url


def _stream(resp, part, mode, url, start, chunk_size, bar):
    """Write the response body to ``part`` (``mode`` "wb" or "ab") and return the bytes
    received: a read error is :class:`_Transient`, a write error (full disk, file-size limit)
    :class:`_WriteFailed`."""
    received = 0
    try:
        with open(part, mode) as f:
            while True:
                try:
                    block = resp.read(chunk_size)
                except (http.client.IncompleteRead, ConnectionError, TimeoutError, socket.timeout,
                        http.client.HTTPException, OSError) as e:
                    raise _Transient(f"connection to {_host(url)} dropped after {start + received} bytes: {e!r}") from None
                if not block:
                    break
                f.write(block)
                received += len(block)
                bar.update(len(block))
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:  # opening, writing or syncing the part: the read errors are _Transient above
        raise _WriteFailed(part, e) from None
    finally:
        bar.close()
    return received


def _fetch_once(url: str, part: Path, chunk_size: int, timeout: float, progress: bool):
    """One HTTP request that appends to (or restarts) ``part``.

    Returns the total size the server announced (or None). Raises :class:`_Transient` on a
    connection drop, :class:`_Restart` when the partial file must be discarded and
    :class:`DownloadError` on a permanent failure.
    """
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
    if have > 0:
        headers["Range"] = f"bytes={have}-"
    req = urllib.request.Request(url, headers=headers)
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        code = e.code
        if code == 416 and have > 0:
            # Requested range starts at or past the end: the partial file should be complete.
            m = _CONTENT_RANGE_416.search(e.headers.get("Content-Range", "") or "")
            e.close()
            if m and int(m.group(1)) != have:
                raise _Restart(f"server reports {m.group(1)} bytes, partial file has {have}")
            return have
        e.close()
        if code == 404:
            raise DownloadError(
                f"HTTP 404 Not Found: {url}\n"
                "The file is not at this address. Check the CMD base URL (and the file name) "
                "in the config, or download the file by other means and point the config's "
                "local data folder option at it."
            ) from None
        if code >= 500 or code in (408, 429):
            raise _Transient(f"HTTP {code} {e.reason} from {_host(url)}")
        raise DownloadError(
            f"HTTP {code} {e.reason}: {url}\n"
            "The server refused the request. Check the CMD base URL in the config, or "
            "download the file by other means and use the local data folder option."
        ) from None
    except urllib.error.URLError as e:
        raise _Transient(f"cannot reach {_host(url)}: {e.reason}") from None
    except (http.client.HTTPException, ConnectionError, TimeoutError, socket.timeout, OSError) as e:
        raise _Transient(f"connection to {_host(url)} failed: {e!r}") from None

    with resp:
        status = getattr(resp, "status", None) or 200
        length = resp.headers.get("Content-Length")
        length = int(length) if length is not None and length.strip().isdigit() else None
        if have > 0 and status == 206:
            m = _CONTENT_RANGE.search(resp.headers.get("Content-Range", "") or "")
            if m is None or int(m.group(1)) != have:
                raise _Restart(
                    f"server answered the range request with Content-Range "
                    f"{resp.headers.get('Content-Range')!r}"
                )
            total = int(m.group(3)) if m.group(3) != "*" else None
            mode = "ab"
            start = have
        else:
            # 200: full body (the server ignored or was not sent a Range header).
            total = length
            mode = "wb"
            start = 0
        if total is None and length is not None:
            total = start + length

        bar = _progress_bar(total, start, part.name[: -len(".part")], progress)
        received = _stream(resp, part, mode, url, start, chunk_size, bar)
        if length is not None and received < length:
            # urllib returns b"" (no exception) when the socket closes early.
            raise _Transient(
                f"connection to {_host(url)} dropped after {start + received} bytes "
                f"(expected {start + length})"
            )
    return total


def _gave_up(url, part, attempts, last_error):
    """The DownloadError after the last failed attempt: what failed, what to check, and the
    bytes kept in ``part`` for a resume."""
    have = part.stat().st_size if part.exists() else 0
    kept = f" The {have} bytes received so far are kept in {part}; running again resumes from there." if have else ""
    return DownloadError(
        f"download of {url} failed after {attempts} attempt(s): {last_error}.\n"
        f"Check the network connection to {_host(url)} (or the CMD base URL in the config), or download the file "
        f"by other means and point the config's local data folder option at it.{kept}"
    )


def download(
    url,
    dest,
    sha256=None,
    size=None,
    chunk_size=1 << 20,
    retries=3,
    timeout=60,
    progress=True,
    *,
    backoff=1.0,
) -> Path:
    """Download ``url`` to ``dest`` atomically, resuming and verifying; return ``dest``.

    The body streams to ``<dest>.part``. An existing ``.part`` is resumed with a
    ``Range: bytes=<n>-`` request: 206 appends, 200 (range ignored) starts over, 416 means
    the part is already complete and goes straight to verification. Connection errors,
    timeouts, truncated bodies and HTTP 5xx are retried up to ``retries`` more times, each
    resuming where the last one stopped (waiting ``backoff * 2**k`` seconds only when an
    attempt made no progress). After the body, the size (if ``size`` is given) and the sha256
    (if ``sha256`` is given) are checked, a ``.npy`` ``dest`` must be a complete array file
    (:func:`check_npy`) and a ``.txt`` one a six-column parameter table (:func:`read_params`):
    an HTML error page or half a file is refused even with both checks off. Only then is the
    part renamed onto ``dest``.

    If ``dest`` already exists and verifies it is returned without any request; if it exists
    but fails verification it is deleted and downloaded again.

    Raises :class:`DownloadError` with a message saying what to fix. After any failure
    ``dest`` does not exist; the ``.part`` is kept (for a later resume) only when the failure
    was a connection problem, and deleted otherwise (HTTP errors, size or checksum mismatch).
    """
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    if size is not None:
        size = int(size)
    if sha256 is not None:
        sha256 = str(sha256).strip().lower()

    kind = dest.suffix
    if dest.exists():
        if _verify(dest, sha256, size, kind) is None:
            return dest
        _unlink(dest)  # stale or corrupt: never leave an untrusted dest behind
    dest.parent.mkdir(parents=True, exist_ok=True)

    attempts = max(0, int(retries)) + 1
    attempt = 0
    last_error = ""
    while True:
        attempt += 1
        before = part.stat().st_size if part.exists() else 0
        try:
            _fetch_once(url, part, chunk_size, timeout, progress)
            break
        except DownloadError:
            _unlink(part)
            raise
        except _WriteFailed as e:
            _unlink(part)
            raise DownloadError(
                f"download of {url} failed: {e}. The partial file was deleted; free space in "
                f"{part.parent} (or point the config at another folder) and run again."
            ) from None
        except _Restart as e:
            last_error = str(e)
            _unlink(part)
            if attempt >= attempts:
                raise DownloadError(f"download of {url} failed: {last_error}") from None
        except _Transient as e:
            last_error = str(e)
            if attempt >= attempts:
                raise _gave_up(url, part, attempts, last_error) from None
            after = part.stat().st_size if part.exists() else 0
            if after <= before and backoff > 0:
                time.sleep(backoff * 2 ** (attempt - 1))

    if not part.exists():
        part.touch()  # an empty body: let the size/checksum checks judge it
    problem = _verify(part, sha256, size, kind)
    if problem is not None:
        _unlink(part)
        raise DownloadError(
            f"download of {url} to {dest} failed verification: {problem}. The partial file "
            "was deleted, so running again starts from scratch; if this repeats, the file on "
            "the server differs from the one expected (check the URL and the expected "
            "checksum/size in the config)."
        )
    os.replace(part, dest)
    return dest


# --------------------------------------------------------------------------------------------
# parameter tables
# --------------------------------------------------------------------------------------------


def _check_params_array(params, what="params") -> np.ndarray:
    arr = np.asarray(params, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != _N_PARAMS:
        raise ValueError(
            f"{what} must be a 2D table of shape (n_sims, {_N_PARAMS}) with columns "
            f"{', '.join(PARAM_NAMES)}; got shape {arr.shape}"
        )
    return arr


def read_params(path) -> np.ndarray:
    """Read a CAMELS parameter table: (n_sims, 6) float64, columns :data:`PARAM_NAMES`.

    Whitespace separated, lines starting with ``#`` ignored. ValueError if the table is not
    2D with exactly six columns (or has ragged / non-numeric rows).
    """
    path = Path(path)
    if path.is_file() and path.stat().st_size == 0:
        raise ValueError(f"{path}: empty parameter table")
    try:
        with open(path) as f:
            arr = np.loadtxt(f, dtype=np.float64, comments="#", ndmin=2)
    except ValueError as e:
        raise ValueError(f"{path}: not a table of numbers with {_N_PARAMS} columns: {e}") from None
    if arr.size == 0:
        raise ValueError(f"{path}: empty parameter table")
    return _check_params_array(arr, what=str(path))


def write_params(path, params) -> Path:
    """Write a (n_sims, 6) table in the CMD text format (``%.5f``, space separated, no
    header), atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    arr = _check_params_array(params)
    if not np.all(np.isfinite(arr)):
        raise ValueError("params contain non-finite values")
    text = "".join(" ".join(_PARAMS_FMT % v for v in row) + "\n" for row in arr)
    with atomic_output(path, durable=True) as tmp:
        tmp.write_bytes(text.encode("ascii"))
    return path


# --------------------------------------------------------------------------------------------
# map files
# --------------------------------------------------------------------------------------------


def check_npy(path):
    """(shape, dtype) of a .npy file after checking that it is one, complete.

    ValueError naming the file if it is not in numpy.save format (a text file, an HTML
    page), holds Python objects, or is shorter or longer than its header announces (a
    truncated download). Only the header is read.
    """
    path = Path(path)
    fmt = np.lib.format
    with open(path, "rb") as f:
        head = f.read(len(fmt.MAGIC_PREFIX))
        if head != fmt.MAGIC_PREFIX:
            raise ValueError(f"{path} is not a .npy array file (it starts with {head!r}); write maps with numpy.save")
        f.seek(0)
        try:
            version = fmt.read_magic(f)
            read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            shape, _, dtype = read(f)
        except (ValueError, OSError, EOFError) as e:
            raise ValueError(f"{path} has a damaged .npy header ({e}); write or download it again") from None
        offset = f.tell()
    if dtype.hasobject:
        raise ValueError(f"{path} holds Python objects, not numbers; write a numeric array with numpy.save")
    expected = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    size = path.stat().st_size
    if size != expected:
        what = "is truncated" if size < expected else "is longer than its header says"
        raise ValueError(f"{path} {what}: the header announces {shape} {dtype} ({expected} bytes), the file has "
                         f"{size} bytes; write or download it again")
    return shape, dtype


def open_maps(path) -> np.ndarray:
    """Memory-map a maps ``.npy`` read-only: (n_maps, N, N) floating array (np.memmap).

    Nothing is read into memory beyond the header. ValueError unless the file holds a 3D
    floating array with square maps.
    """
    path = Path(path)
    check_npy(path)
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as e:
        raise ValueError(f"{path}: not a memory-mappable .npy array: {e}") from None
    if not isinstance(arr, np.ndarray):  # e.g. an .npz archive
        with contextlib.suppress(Exception):
            arr.close()
        raise ValueError(f"{path}: expected a .npy array of maps, got {type(arr).__name__}")
    if arr.ndim != 3 or arr.shape[1] != arr.shape[2]:
        raise ValueError(f"{path}: expected maps of shape (n_maps, N, N), got {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"{path}: expected floating-point maps, got dtype {arr.dtype}")
    return arr


def create_maps(path, n_maps, resolution) -> np.memmap:
    """Create a writable float32 ``.npy`` memmap of shape (n_maps, resolution, resolution).

    The file is created at the temporary path ``<path>.tmp`` (``path`` itself is not
    touched); fill it in pieces, then call :func:`finalize_maps` to flush it and rename it
    onto ``path`` atomically. :func:`maps_writer` does both and cleans up on errors.
    """
    path = Path(path)
    n_maps, resolution = int(n_maps), int(resolution)
    if n_maps < 0 or resolution < 1:
        raise ValueError(f"need n_maps >= 0 and resolution >= 1, got {n_maps}, {resolution}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    try:
        maps = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n_maps, resolution, resolution))
        # reserve the blocks now: on a full disk a memmap would fail later, at a page write,
        # with SIGBUS; this way the failure is an OSError here, before any work is done
        with open(tmp, "r+b") as f:
            os.posix_fallocate(f.fileno(), 0, os.path.getsize(tmp))
    except OSError as e:
        _unlink(tmp)
        raise OSError(e.errno, f"cannot create {path} ({n_maps} maps of {resolution}^2, "
                               f"{4 * n_maps * resolution**2 / 1e6:.0f} MB): {e.strerror or e}") from None
    return maps


def finalize_maps(maps: np.memmap, path) -> Path:
    """Flush a memmap from :func:`create_maps` and rename ``<path>.tmp`` onto ``path``."""
    path = Path(path)
    maps.flush()
    commit(temporary_path(path), path, durable=True)
    return path


@contextlib.contextmanager
def maps_writer(path, n_maps, resolution):
    """Context manager yielding a writable (n_maps, N, N) float32 memmap for ``path``.

    On a clean exit the file is flushed and renamed onto ``path``; if the block raises, the
    temporary file is deleted and ``path`` is left as it was (absent or the old file)::

        with maps_writer("maps.npy", 30, 64) as out:
            for i, m in enumerate(generate()):
                out[i] = m
    """
    path = Path(path)
    maps = create_maps(path, n_maps, resolution)
    try:
        yield maps
    except BaseException:
        del maps
        _unlink(temporary_path(path))
        raise
    finalize_maps(maps, path)


# --------------------------------------------------------------------------------------------
# map <-> simulation layout
# --------------------------------------------------------------------------------------------


def sim_index(map_index):
    """Simulation of a map: ``map_index // MAPS_PER_SIM`` (int, or int array for arrays)."""
    if np.ndim(map_index) == 0:
        i = int(map_index)
        if i < 0:
            raise ValueError(f"map index must be >= 0, got {i}")
        return i // MAPS_PER_SIM
    idx = np.asarray(map_index)
    if not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"map indices must be integers, got dtype {idx.dtype}")
    if np.any(idx < 0):
        raise ValueError("map indices must be >= 0")
    return idx // MAPS_PER_SIM


def check_layout(maps, params) -> None:
    """ValueError unless ``len(maps) == MAPS_PER_SIM * len(params)``.

    ``maps`` may be the maps array (only its length is used) or a number of maps.
    """
    n_maps = int(maps) if np.ndim(maps) == 0 and not hasattr(maps, "__len__") else len(maps)
    params = _check_params_array(params)
    n_sims = len(params)
    expected = MAPS_PER_SIM * n_sims
    if n_maps != expected:
        raise ValueError(
            f"maps and parameter table do not match: {n_maps} maps, but {n_sims} simulations "
            f"x {MAPS_PER_SIM} maps per simulation = {expected}. CMD stores {MAPS_PER_SIM} "
            f"consecutive maps per simulation (map i has params[i // {MAPS_PER_SIM}]); check "
            f"that the maps file and the parameter table are of the same set (e.g. "
            f"{MAPS_FILENAME} with {PARAMS_FILENAME}) and that neither is truncated."
        )


def map_params(params) -> np.ndarray:
    """Parameters of every map: each row repeated :data:`MAPS_PER_SIM` times,
    shape (n_sims * 15, 6)."""
    return np.repeat(_check_params_array(params), MAPS_PER_SIM, axis=0)
