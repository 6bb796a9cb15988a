"""Tests of cosmodiff.camels: downloads (against a local HTTP server), readers, writers, layout."""

from __future__ import annotations

import contextlib
import io
import os
import re
import resource
import socket
import time
from pathlib import Path

import numpy as np
import pytest

from cosmodiff import camels
from cosmodiff.camels import (
    MAPS_FILENAME,
    PARAMS_FILENAME,
    DownloadError,
    check_layout,
    create_maps,
    download,
    finalize_maps,
    map_params,
    maps_writer,
    open_maps,
    read_params,
    sha256sum,
    sim_index,
    write_params,
)
from cosmodiff.cosmology import MAPS_PER_SIM, PARAM_NAMES, PRIOR

# --------------------------------------------------------------------------------------------
# real CAMELS tables (skipped when ../shared is absent)
# --------------------------------------------------------------------------------------------


def _tables_dir() -> Path | None:
    env = os.environ.get("COSMODIFF_CAMELS_TABLES")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[2] / "shared/data/camels")
    for c in candidates:
        if (c / PARAMS_FILENAME).is_file():
            return c
    return None


TABLES = _tables_dir()
needs_tables = pytest.mark.skipif(
    TABLES is None,
    reason="real CAMELS tables not found (../shared/data/camels or $COSMODIFF_CAMELS_TABLES)",
)
PARAMS_SHA256 = "83ec62cceb81547b8940d8ed77371834171648d5c8e8d99990cf012e71a5b2b8"

def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


@pytest.fixture
def payloads(server):
    """Serve a 30 x 16 x 16 float32 .npy and a 2 x 6 params table in the CMD format."""
    rng = np.random.default_rng(0)
    maps = rng.lognormal(size=(30, 16, 16)).astype(np.float32)
    params = np.array(
        [[0.30900, 0.97900, 3.11234, 1.12194, 0.66850, 0.53182],
         [0.30260, 0.93940, 3.42001, 3.96137, 1.03311, 1.16070]]
    )
    text = "".join(" ".join(f"{v:.5f}" for v in row) + "\n" for row in params).encode()
    server.files["/2D_maps/data/" + MAPS_FILENAME] = _npy_bytes(maps)
    server.files["/2D_maps/data/" + PARAMS_FILENAME] = text
    return {"maps": maps, "params": params}


def _url(server, name):
    return camels.file_url(name, base_url=server.base)


def _digest(b: bytes) -> str:
    import hashlib

    return hashlib.sha256(b).hexdigest()


# --------------------------------------------------------------------------------------------
# download
# --------------------------------------------------------------------------------------------


def test_file_url_layout():
    url = camels.file_url(MAPS_FILENAME)
    assert url == camels.BASE_URL + "/2D_maps/data/Maps_Mcdm_IllustrisTNG_LH_z=0.00.npy"
    assert camels.file_url(PARAMS_FILENAME, base_url="http://x/CMD/").endswith(
        "/CMD/2D_maps/data/params_LH_IllustrisTNG.txt"
    )


def test_full_download_verified(server, payloads, tmp_path):
    data = server.files["/2D_maps/data/" + MAPS_FILENAME]
    dest = tmp_path / "sub" / MAPS_FILENAME
    out = download(_url(server, MAPS_FILENAME), dest, sha256=_digest(data), size=len(data),
                   progress=False)
    assert out == dest and dest.read_bytes() == data
    assert not dest.with_name(dest.name + ".part").exists()
    np.testing.assert_array_equal(open_maps(dest), payloads["maps"])
    # the params table too, and it reads back
    pdest = download(_url(server, PARAMS_FILENAME), tmp_path / PARAMS_FILENAME, progress=False)
    np.testing.assert_allclose(read_params(pdest), payloads["params"])


def test_interrupted_download_resumes_with_range(server, payloads, tmp_path):
    path = "/2D_maps/data/" + MAPS_FILENAME
    data = server.files[path]
    server.drop_after[path] = 5000
    dest = tmp_path / MAPS_FILENAME
    download(_url(server, MAPS_FILENAME), dest, sha256=_digest(data), size=len(data),
             chunk_size=1024, retries=3, progress=False, backoff=0)
    assert dest.read_bytes() == data
    ranges = [h.get("Range") for p, h in server.requests if p == path]
    assert len(ranges) == 2
    assert ranges[0] is None and ranges[1] == "bytes=5000-"
    assert not dest.with_name(dest.name + ".part").exists()


def test_partial_file_kept_after_drop_then_resumed(server, payloads, tmp_path):
    path = "/2D_maps/data/" + MAPS_FILENAME
    data = server.files[path]
    server.drop_after[path] = 3000
    dest = tmp_path / MAPS_FILENAME
    part = dest.with_name(dest.name + ".part")
    with pytest.raises(DownloadError, match="resum"):
        download(_url(server, MAPS_FILENAME), dest, size=len(data), retries=0, progress=False)
    assert not dest.exists()
    assert part.read_bytes() == data[:3000]
    # a later call resumes from the kept part
    download(_url(server, MAPS_FILENAME), dest, sha256=_digest(data), progress=False)
    assert dest.read_bytes() == data
    assert server.requests[-1][1].get("Range") == "bytes=3000-"


def test_complete_part_gets_416_and_is_verified(server, payloads, tmp_path):
    path = "/2D_maps/data/" + MAPS_FILENAME
    data = server.files[path]
    dest = tmp_path / MAPS_FILENAME
    dest.with_name(dest.name + ".part").write_bytes(data)
    download(_url(server, MAPS_FILENAME), dest, sha256=_digest(data), size=len(data), progress=False)
    assert dest.read_bytes() == data
    assert server.requests[-1][1].get("Range") == f"bytes={len(data)}-"


def test_wrong_sha256(server, payloads, tmp_path):
    dest = tmp_path / MAPS_FILENAME
    with pytest.raises(DownloadError, match="sha256") as exc:
        download(_url(server, MAPS_FILENAME), dest, sha256="0" * 64, progress=False)
    assert "0" * 64 in str(exc.value)
    assert not dest.exists()
    assert not dest.with_name(dest.name + ".part").exists()


def test_wrong_size(server, payloads, tmp_path):
    data = server.files["/2D_maps/data/" + MAPS_FILENAME]
    dest = tmp_path / MAPS_FILENAME
    with pytest.raises(DownloadError, match="size") as exc:
        download(_url(server, MAPS_FILENAME), dest, size=len(data) + 100, progress=False)
    assert str(len(data) + 100) in str(exc.value) and str(len(data)) in str(exc.value)
    assert not dest.exists()
    assert not dest.with_name(dest.name + ".part").exists()


def test_404(server, payloads, tmp_path):
    url = camels.file_url("no_such_file.npy", base_url=server.base)
    dest = tmp_path / "no_such_file.npy"
    t0 = time.monotonic()
    with pytest.raises(DownloadError, match="404") as exc:
        download(url, dest, progress=False)
    assert url in str(exc.value) and "base URL" in str(exc.value)
    assert time.monotonic() - t0 < 5  # not retried
    assert not dest.exists() and not dest.with_name(dest.name + ".part").exists()
    assert len(server.requests) == 1


def test_unreachable_server_fails_quickly(tmp_path):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there any more
    dest = tmp_path / PARAMS_FILENAME
    t0 = time.monotonic()
    with pytest.raises(DownloadError) as exc:
        download(f"http://127.0.0.1:{port}/x.txt", dest, timeout=2, retries=1, progress=False,
                 backoff=0)
    assert time.monotonic() - t0 < 5
    msg = str(exc.value)
    assert f"127.0.0.1:{port}" in msg and "network" in msg
    assert not dest.exists()


def test_server_ignoring_range_restarts(server, payloads, tmp_path):
    path = "/2D_maps/data/" + MAPS_FILENAME
    data = server.files[path]
    server.ignore_range = True
    dest = tmp_path / MAPS_FILENAME
    part = dest.with_name(dest.name + ".part")
    part.write_bytes(data[:4000])  # a stale part: the server will answer 200 with everything
    download(_url(server, MAPS_FILENAME), dest, sha256=_digest(data), size=len(data), progress=False)
    assert dest.read_bytes() == data
    assert server.requests[-1][1].get("Range") == "bytes=4000-"
    assert not part.exists()


def test_server_ignoring_range_after_drop(server, payloads, tmp_path):
    path = "/2D_maps/data/" + MAPS_FILENAME
    data = server.files[path]
    server.ignore_range = True
    server.drop_after[path] = 2500
    dest = tmp_path / MAPS_FILENAME
    download(_url(server, MAPS_FILENAME), dest, sha256=_digest(data), progress=False, backoff=0)
    assert dest.read_bytes() == data


def test_present_verified_file_not_downloaded(server, payloads, tmp_path):
    data = server.files["/2D_maps/data/" + MAPS_FILENAME]
    dest = tmp_path / MAPS_FILENAME
    dest.write_bytes(data)
    download(_url(server, MAPS_FILENAME), dest, sha256=_digest(data), size=len(data), progress=False)
    assert server.requests == []
    assert dest.read_bytes() == data


def test_present_corrupt_file_is_replaced(server, payloads, tmp_path):
    data = server.files["/2D_maps/data/" + MAPS_FILENAME]
    dest = tmp_path / MAPS_FILENAME
    dest.write_bytes(b"garbage")
    download(_url(server, MAPS_FILENAME), dest, sha256=_digest(data), progress=False)
    assert dest.read_bytes() == data
    assert len(server.requests) == 1


def test_sha256sum(tmp_path):
    p = tmp_path / "f.bin"
    payload = os.urandom(10_000)
    p.write_bytes(payload)
    assert sha256sum(p, chunk_size=777) == _digest(payload)


# --------------------------------------------------------------------------------------------
# real tables
# --------------------------------------------------------------------------------------------


@needs_tables
def test_real_params_table():
    params = read_params(TABLES / PARAMS_FILENAME)
    assert params.shape == (1000, 6) and params.dtype == np.float64
    np.testing.assert_allclose(params[0], [0.309, 0.979, 3.11234, 1.12194, 0.66850, 0.53182])
    lo, hi = PRIOR["omega_m"]
    assert np.all((params[:, 0] >= lo) & (params[:, 0] <= hi))
    lo, hi = PRIOR["sigma_8"]
    assert np.all((params[:, 1] >= lo) & (params[:, 1] <= hi))


@needs_tables
def test_real_params_sha256_matches_sources():
    sources = (TABLES / "SOURCES.md").read_text()
    row = next(line for line in sources.splitlines() if line.startswith(f"| {PARAMS_FILENAME}"))
    listed = re.search(r"sha256 ([0-9a-f]{64})", row).group(1)
    assert listed == PARAMS_SHA256
    assert sha256sum(TABLES / PARAMS_FILENAME) == PARAMS_SHA256


@needs_tables
def test_real_params_agree_with_official_table():
    lines = (TABLES / "CosmoAstroSeed_IllustrisTNG_L25n256_LH.txt").read_text().splitlines()
    assert lines[0].startswith("#")
    header = lines[0].lstrip("#").split()
    assert [h.lower() for h in header] == ["name", *(n.lower() for n in PARAM_NAMES), "seed"]
    rows = [ln.split() for ln in lines[1:] if ln.strip()]
    assert [r[0] for r in rows] == [f"LH_{i}" for i in range(1000)]
    official = np.array([[float(x) for x in r[1:7]] for r in rows])
    np.testing.assert_array_equal(read_params(TABLES / PARAMS_FILENAME), official)


@needs_tables
def test_real_params_round_trip_is_byte_identical(tmp_path):
    src = TABLES / PARAMS_FILENAME
    out = write_params(tmp_path / PARAMS_FILENAME, read_params(src))
    assert out.read_bytes() == src.read_bytes()


# --------------------------------------------------------------------------------------------
# readers and writers
# --------------------------------------------------------------------------------------------


def test_write_read_params_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    params = np.round(rng.uniform(0.1, 4.0, size=(7, 6)), 5)
    p = write_params(tmp_path / "p.txt", params)
    text = p.read_text()
    assert text.splitlines()[0] == " ".join(f"{v:.5f}" for v in params[0])
    assert not text.startswith("#") and text.endswith("\n")
    np.testing.assert_array_equal(read_params(p), params)
    assert sorted(x.name for x in tmp_path.iterdir()) == ["p.txt"]  # no temp files left


def test_write_params_rejects_bad_shape(tmp_path):
    with pytest.raises(ValueError, match="6"):
        write_params(tmp_path / "p.txt", np.zeros((3, 5)))
    assert not (tmp_path / "p.txt").exists()


def test_read_params_rejects_bad_tables(tmp_path):
    five = tmp_path / "five.txt"
    five.write_text("0.1 0.2 0.3 0.4 0.5\n0.1 0.2 0.3 0.4 0.5\n")
    with pytest.raises(ValueError, match="6"):
        read_params(five)
    column = tmp_path / "column.txt"
    column.write_text("\n".join(["0.3"] * 6) + "\n")
    with pytest.raises(ValueError):
        read_params(column)
    ragged = tmp_path / "ragged.txt"
    ragged.write_text("0.1 0.2 0.3 0.4 0.5 0.6\n0.1 0.2\n")
    with pytest.raises(ValueError):
        read_params(ragged)
    # a '#' header line (as in the SIMBA table) is fine
    hdr = tmp_path / "hdr.txt"
    hdr.write_text("# Om sigma8 SN1 AGN1 SN2 AGN2\n0.1 0.6 1 1 1 1\n")
    assert read_params(hdr).shape == (1, 6)


def test_maps_writer_and_open_maps(tmp_path):
    path = tmp_path / "maps.npy"
    rng = np.random.default_rng(2)
    data = rng.normal(size=(30, 16, 16)).astype(np.float32)
    with maps_writer(path, 30, 16) as out:
        assert isinstance(out, np.memmap) and out.shape == (30, 16, 16) and out.dtype == np.float32
        assert not path.exists()  # nothing at the final path until finished
        for i in range(0, 30, 7):
            out[i:i + 7] = data[i:i + 7]
    assert path.exists() and not path.with_name("maps.npy.tmp").exists()
    maps = open_maps(path)
    assert isinstance(maps, np.memmap)
    assert maps.shape == (30, 16, 16) and not maps.flags.writeable
    np.testing.assert_array_equal(maps[5], data[5])
    check_layout(maps, np.zeros((2, 6)))


def test_maps_writer_exception_leaves_nothing(tmp_path):
    path = tmp_path / "maps.npy"
    with pytest.raises(RuntimeError, match="boom"):
        with maps_writer(path, 30, 16) as out:
            out[0] = 1.0
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_maps_writer_exception_keeps_old_file(tmp_path):
    path = tmp_path / "maps.npy"
    np.save(path, np.ones((15, 4, 4), np.float32))
    with pytest.raises(KeyError):
        with maps_writer(path, 15, 4):
            raise KeyError("x")
    np.testing.assert_array_equal(np.load(path), 1.0)
    assert sorted(x.name for x in tmp_path.iterdir()) == ["maps.npy"]


def test_create_and_finalize_maps(tmp_path):
    path = tmp_path / "maps.npy"
    out = create_maps(path, 15, 8)
    out[:] = 3.0
    assert not path.exists()
    finalize_maps(out, path)
    np.testing.assert_array_equal(open_maps(path), 3.0)


def test_open_maps_rejects_non_maps(tmp_path):
    np.save(tmp_path / "two_d.npy", np.zeros((4, 4), np.float32))
    np.save(tmp_path / "ints.npy", np.zeros((2, 4, 4), np.int32))
    np.save(tmp_path / "rect.npy", np.zeros((2, 4, 5), np.float32))
    for name in ("two_d.npy", "ints.npy", "rect.npy"):
        with pytest.raises(ValueError):
            open_maps(tmp_path / name)


def test_open_maps_does_not_read_data(tmp_path, monkeypatch):
    path = tmp_path / "maps.npy"
    with maps_writer(path, 15, 8) as out:
        out[:] = 2.0
    calls = []
    real_load = np.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("mmap_mode"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(camels.np, "load", spy)
    maps = open_maps(path)
    assert calls == ["r"] and isinstance(maps, np.memmap)


# --------------------------------------------------------------------------------------------
# layout
# --------------------------------------------------------------------------------------------


def test_sim_index():
    assert MAPS_PER_SIM == 15
    assert sim_index(0) == 0 and sim_index(14) == 0
    assert sim_index(15) == 1 and sim_index(14999) == 999
    np.testing.assert_array_equal(sim_index(np.array([0, 14, 15, 29, 30, 14999])), [0, 0, 1, 1, 2, 999])
    with pytest.raises(ValueError):
        sim_index(-1)


def test_check_layout():
    params = np.zeros((3, 6))
    check_layout(np.zeros((45, 2, 2)), params)
    check_layout(45, params)
    with pytest.raises(ValueError, match=r"44 maps.*3 simulations.*45"):
        check_layout(np.zeros((44, 2, 2)), params)
    with pytest.raises(ValueError, match="15"):
        check_layout(np.zeros((60, 2, 2)), params)
    with pytest.raises(ValueError):
        check_layout(np.zeros((45, 2, 2)), np.zeros((3, 5)))


def test_map_params_matches_sim_index():
    params = np.arange(18, dtype=float).reshape(3, 6)
    per_map = map_params(params)
    assert per_map.shape == (45, 6)
    idx = np.arange(45)
    np.testing.assert_array_equal(per_map, params[sim_index(idx)])
    np.testing.assert_array_equal(per_map[14], params[0])
    np.testing.assert_array_equal(per_map[15], params[1])


# --------------------------------------------------------------------------------------------
# .npy files that are not what they claim (issue 15: cases 7 and 8)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("body,reason", [
    (b"<!DOCTYPE html><html><body>Service unavailable</body></html>", "is not a .npy array file"),
    ("half", "is truncated"),
])
def test_download_without_checks_refuses_what_is_not_the_npy_it_announces(server, payloads, tmp_path, body, reason):
    """With size and sha256 both null, a 200 HTML error page or half a file is not renamed
    into place: the .npy header must announce exactly the bytes received."""
    path = "/2D_maps/data/" + MAPS_FILENAME
    whole = server.files[path]
    server.files[path] = whole[: len(whole) // 2] if body == "half" else body
    dest = tmp_path / MAPS_FILENAME
    with pytest.raises(DownloadError, match=reason):
        download(_url(server, MAPS_FILENAME), dest, progress=False)
    assert not dest.exists() and not dest.with_name(dest.name + ".part").exists()


@pytest.mark.parametrize("body,reason", [
    (b"<!DOCTYPE html><html><body>Service unavailable</body></html>", "not a table of numbers with 6 columns"),
    ("cut", "not a table of numbers with 6 columns"),
    (b"", "empty parameter table"),
])
def test_download_without_checks_refuses_what_is_not_a_parameter_table(server, payloads, tmp_path, body, reason):
    """The params .txt with size and sha256 both null: an error page, a table cut mid-row or
    an empty body is not renamed into place (before, only the .npy was checked). A table cut
    exactly at a row's end cannot be told from a shorter one: config/paper.yaml pins the
    table's size and sha256 for that."""
    path = "/2D_maps/data/" + PARAMS_FILENAME
    whole = server.files[path]
    server.files[path] = whole[: len(whole) // 2 + 10] if body == "cut" else body
    dest = tmp_path / PARAMS_FILENAME
    with pytest.raises(DownloadError, match=reason):
        download(_url(server, PARAMS_FILENAME), dest, progress=False)
    assert not dest.exists() and not dest.with_name(dest.name + ".part").exists()


@contextlib.contextmanager
def _file_size_limit(nbytes):
    """A full disk, as a file-size limit: writes past ``nbytes`` fail with EFBIG (Python
    ignores SIGXFSZ)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def test_download_on_a_full_disk_leaves_no_part_behind(server, tmp_path):
    """A write that fails (full disk) is a one-line DownloadError naming the folder, and the
    partial file is deleted: before, an OSError escaped and the .part kept the disk full."""
    server.files["/2D_maps/data/" + MAPS_FILENAME] = _npy_bytes(np.ones((40, 64, 64), np.float32))
    dest = tmp_path / MAPS_FILENAME
    with _file_size_limit(100_000), pytest.raises(DownloadError, match=r"cannot write .*free space in"):
        download(_url(server, MAPS_FILENAME), dest, progress=False, chunk_size=1 << 14)
    assert not dest.exists() and not dest.with_name(dest.name + ".part").exists()


def test_maps_writer_on_a_full_disk_leaves_no_tmp_behind(tmp_path):
    """The maps file's blocks are reserved when it is created: a full disk fails there, with
    the size in the message, and the .tmp is removed (before, it stayed and kept the disk full)."""
    dest = tmp_path / "maps.npy"
    with _file_size_limit(100_000), pytest.raises(OSError, match=r"cannot create .*maps.npy \(40 maps of 64\^2"):
        with maps_writer(dest, 40, 64) as out:
            out[:] = 1.0
    assert list(tmp_path.iterdir()) == []


def test_check_npy_names_the_file_and_never_suggests_pickle(tmp_path):
    text = tmp_path / "map.npy"
    text.write_text("1 2 3\n4 5 6\n")
    with pytest.raises(ValueError) as info:
        camels.check_npy(text)
    assert f"{text} is not a .npy array file" in str(info.value) and "pickle" not in str(info.value)
    whole = tmp_path / "maps.npy"
    np.save(whole, np.ones((15, 8, 8), np.float32))
    assert camels.check_npy(whole) == ((15, 8, 8), np.dtype("float32"))
    cut = tmp_path / "cut.npy"
    cut.write_bytes(whole.read_bytes()[:-100])
    with pytest.raises(ValueError, match=r"cut.npy is truncated: the header announces \(15, 8, 8\) float32"):
        open_maps(cut)  # a truncated raw maps file: one line, not an mmap error
    obj = tmp_path / "obj.npy"
    np.save(obj, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="holds Python objects") as info:
        camels.check_npy(obj)
    assert "allow_pickle" not in str(info.value)


def test_an_hdf5_writer_that_would_not_fit_refuses_before_writing(tmp_path):
    """HDF5 does not survive a full disk (a RuntimeError traceback from sample, a crash that
    left prepare's .tmp): the writers that know their size check it first (files.check_space)
    and fail with one line naming the file, leaving nothing behind."""
    from cosmodiff.emulator import write_samples

    dest = tmp_path / "s.h5"
    maps = np.full((8, 64, 64), 10.5, np.float32)
    with _file_size_limit(100_000), pytest.raises(OSError, match=r"s.h5 would need about 0.3 MB, above .* \(ulimit -f\)"):
        write_samples(dest, maps, np.tile([0.3, 0.8], (8, 1)), {})
    assert list(tmp_path.iterdir()) == []
    write_samples(dest, maps, np.tile([0.3, 0.8], (8, 1)), {})  # without the limit it fits
    assert dest.exists()
