"""Fault probe for issue 15: bad input never passes silently and nothing is lost.

    python benchmarks/fault_probe.py                  # every case, in a scratch folder
    python benchmarks/fault_probe.py --list           # the cases, nothing run (no torch imported)
    python benchmarks/fault_probe.py --only download  # cases whose category or name contains it
    python benchmarks/fault_probe.py --no-torch       # only the cases that need no torch; torch blocked

It builds what it needs in a scratch folder (``--workdir``, else a temporary one): a tiny
synthetic CMD set (cosmodiff.synthetic), a prepared HDF5 (workflow/scripts/prepare.py) and a
two-iteration checkpoint with its resumable state (workflow/scripts/train.py), one map in
physical and log10 units, and a local HTTP server. Then it runs every case as a user would, as
a subprocess (``python -m cosmodiff``, a workflow script, ``snakemake -n``) with a timeout,
and classifies the outcome:

    clear error  nonzero exit, a message naming what it should, no traceback
    warning      exit 0 with a warning line naming the problem
    ok           exit 0, for the cases whose right outcome is success (a restored checkpoint)
    unclear      nonzero exit without a traceback, but the message misses what it should name
    traceback    a raw Python traceback
    silent       exit 0 without a warning: the bad input was accepted
    lost         a protected file changed or vanished, a .tmp/.part was left behind, or work
                 was done before the failure (a scan before a refused output)
    hang         no exit within the timeout
    skipped      not run (--no-torch, or not applicable on this machine)

Prints a markdown table and a count per verdict. Exit status 0 when every case run got the
verdict it expects, 1 otherwise.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]

TRACEBACK = "Traceback (most recent call last)"
MAPS, PARAMS = "Maps_Mcdm_IllustrisTNG_LH_z=0.00.npy", "params_LH_IllustrisTNG.txt"
RES = 16
SPLIT = {"train": 0.5, "val": 0.25, "test": 0.25}
PREPARE = {"log_floor": 1.0e9, "split": SPLIT, "downsample": "bicubic", "norm_range": None,
           "max_nonpositive_fraction": 0.01}
SYNTH = {"generator": "lognormal", "n_sims": 4, "seed": 1, "omega_m_range": [0.1, 0.5], "sigma_8_range": [0.6, 1.0]}
MODEL = {"base_channels": 8, "channel_mults": [1, 2], "num_res_blocks": 1, "attention": [False, True],
         "mid_attention": True, "groups": 4, "time_dim": 32, "dropout": 0.0}
DIFFUSION = {"schedule": "mudur", "timesteps": 1000, "loss": "huber", "model_variance": "fixedlarge"}
TRAIN = {"iterations": 2, "batch_size": 4, "checkpoint_every": 1, "log_every": 1, "seed": 0, "gpus": 1}
FAST = ("--estimator", "truncated", "--t-max", "2", "--n-coarse", "3", "--n-fine", "3", "--max-refine", "1")
HTML = b"<!DOCTYPE html><html><body><h1>Service unavailable</h1></body></html>\n"
LEFTOVER = (".tmp", ".part", ".probe")
VARIANTS = """import sys, torch
from pathlib import Path
from cosmodiff.checkpoint import load_checkpoint
ckpt, fx = sys.argv[1], Path(sys.argv[2])
bad_norm, bad_config = load_checkpoint(ckpt), load_checkpoint(ckpt)
bad_norm["normalisation"] = [float("nan"), float("inf")]
bad_config["model_config"]["base_channels"] = 16
torch.save(bad_norm, fx / "nan_norm.pt"), torch.save(bad_config, fx / "mismatch.pt")
(fx / "cuda.txt").write_text(str(torch.cuda.is_available()))
"""


# ---- commands as a user types them; "{key}" is filled from the context (d: the case's folder)


def sample(*extra, ckpt="{ckpt}", out="{d}/s.h5"):
    return ("cosmodiff", "sample", "--checkpoint", ckpt, "--omega-m", "0.3", "--sigma-8", "0.8", "-n", "2",
            "--steps", "2", "-o", out, *extra)


def infer(field, *extra, ckpt="{ckpt}"):
    return ("cosmodiff", "infer", field, "--checkpoint", ckpt, *FAST, *extra)


def prepare(maps="{d}/maps.npy", params="{d}/params.txt", out="{d}/p16.h5", native=RES, **settings):
    return ("script:prepare", "--maps", maps, "--params", params, "--resolutions", str(RES), "--outputs", out,
            "--settings", json.dumps({**PREPARE, **settings}), "--native-resolution", str(native))


def train(run="{d}/run", data="{prepared}"):
    return ("script:train", "--stage", "pretrain", "--data", data, "--norm-data", data, "--model", json.dumps(MODEL),
            "--diffusion", json.dumps(DIFFUSION), "--settings", json.dumps(TRAIN), "--checkpoint-dir", f"{run}/ckpt",
            "--state-dir", f"{run}/state", "--metrics", f"{run}/metrics.jsonl", "--loss-figure", f"{run}/loss.png",
            "--threads", "1")


def synthesize(out="{d}/raw"):
    return ("script:synthesize", "--settings", json.dumps(SYNTH), "--resolution", str(RES), "--out-dir", out)


def download(name):
    return ("script:download", "--url", "{url}/{dname}/" + name, "--out", "{d}/" + name, "--retries", "0",
            "--checks", json.dumps({"size": None, "sha256": None}))


def check_config(path="{d}/config.yaml"):
    return ("cosmodiff", "check-config", path)


def snakemake(*extra, path="{d}/config.yaml"):
    return ("snakemake", "-n", "--configfile", path, "-d", "{d}/wd", *extra)


def runner(token, python):
    """The interpreter part of a command: python, `python -m cosmodiff`, `-m snakemake` or a workflow script."""
    if token == "python":
        return [python]
    if token.startswith("script:"):
        return [python, str(ROOT / "workflow" / "scripts" / f"{token[7:]}.py")]
    return [python, "-m", token] + (["-s", str(ROOT / "Snakefile")] if token == "snakemake" else [])


# ---- set-ups of one case: each returns a function (ctx, d) that writes the case's inputs into d


def both(*steps):
    def setup(ctx, d):
        for step in steps:
            step(ctx, d)
    return setup


def put(name, content):
    """d/name with bytes, or an array (.npy)."""
    def setup(ctx, d):
        if isinstance(content, bytes):
            (d / name).write_bytes(content)
        else:
            np.save(d / name, content)
    return setup


def copy(src, name):
    def setup(ctx, d):
        shutil.copy2(ctx.fill(src, d), d / name)
    return setup


def cut(name, keep=0.5, extra=0):
    """Truncate d/name to a fraction of its bytes (plus ``extra`` bytes)."""
    def setup(ctx, d):
        data = (d / name).read_bytes()
        (d / name).write_bytes(data[: int(len(data) * keep) + extra])
    return setup


def damage(name):
    """Overwrite the start of d/name in place, as a disk or a stray write would."""
    def setup(ctx, d):
        with open(d / name, "r+b") as f:
            f.write(b"\0" * 4096)
    return setup


def field(name, fn=lambda m: m):
    """d/name: fn of the fixture's log10 map (16 x 16)."""
    def setup(ctx, d):
        np.save(d / name, fn(np.load(ctx.fx / "map_log.npy")))
    return setup


def raw(edit=None):
    """d/maps.npy and d/params.txt: the raw CMD-layout set, the maps changed in place by edit."""
    def setup(ctx, d):
        maps = np.load(ctx.fx / "raw" / MAPS)
        if edit:
            edit(maps)
        np.save(d / "maps.npy", maps)
        shutil.copy2(ctx.fx / "raw" / PARAMS, d / "params.txt")
    return setup


def config(old="", new="", drop=()):
    """d/config.yaml: config/smoke.yaml with the text old replaced by new and dotted keys dropped."""
    def setup(ctx, d):
        conf = (ROOT / "config" / "smoke.yaml").read_text()
        conf = conf.replace(old, new) if old else conf
        if drop:
            keys = yaml.safe_load(conf)
            for dotted in drop:
                *parents, last = dotted.split(".")
                node = keys
                for p in parents:
                    node = node[p]
                del node[last]
            conf = yaml.safe_dump(keys)
        (d / "config.yaml").write_text(conf)
    return setup


def serve(name, body):
    """The local server answers {url}/<case>/name with body (bytes, or a function of the raw files)."""
    def setup(ctx, d):
        ctx.served[f"/{d.name.split('-')[0]}/{name}"] = body if isinstance(body, bytes) else body(ctx.fx / "raw")
    return setup


def run_copy(*steps):
    """d/run: a copy of the fixture's training run (checkpoints and resumable state), then steps."""
    return both(lambda ctx, d: shutil.copytree(ctx.fx / "run", d / "run"), *steps)


def unwritable(name):
    """d/name: a read-only folder; as root (who writes through modes) a file where the folder should be."""
    def setup(ctx, d):
        if os.geteuid() == 0:
            (d / name).write_text("")
        else:
            (d / name).mkdir()
            (d / name).chmod(0o555)
    return setup


def half(name):
    return lambda raw_dir: (raw_dir / name).read_bytes()[: (raw_dir / name).stat().st_size // 2 + 10]


def restored(*names):
    """After a resume: the declared checkpoints equal the fixture's (not left damaged)."""
    def after(ctx, d):
        bad = [n for n in names if not (d / "run/ckpt" / n).exists() or sha256(d / "run/ckpt" / n) != sha256(ctx.fx / "run/ckpt" / n)]
        return f"run/ckpt/{', '.join(bad)} not restored" if bad else None
    return after


def declared(ctx, d):
    """After a restart from scratch: every declared checkpoint is there."""
    missing = [n for n in ("ckpt_0000001.pt", "ckpt_0000002.pt") if not (d / "run/ckpt" / n).exists()]
    return f"run/ckpt/{', '.join(missing)} missing" if missing else None


# ---- the cases


@dataclass
class Case:
    category: str
    name: str
    argv: tuple
    expect: str = "error"  # error | warning | ok | error-or-ok
    setup: Callable | None = None
    keep: tuple = ()  # files (in d, or templated) that must survive unchanged
    names: tuple = ()  # what the message must name (case-insensitive)
    torch: bool = True
    forbid: tuple = ()  # output showing work done before the failure
    fsize_kb: int | None = None  # `ulimit -f`: a full disk
    after: Callable | None = None  # (ctx, d) -> a loss found after the run, or None
    skip: Callable | None = None  # (ctx) -> why not applicable here, or None


L, G, U = "data loss", "silent garbage", "unclear message"
LOG, PHYS = field("map.npy"), field("map.npy", lambda m: 10.0**m)


def NAN0(maps):
    """One NaN in the first map: refused in the first block, before torch is imported."""
    maps[0, 5, 5] = np.nan


CASES = [
    Case(L, "infer -o resolving to the input map", infer("{d}/map.npy", "--units", "log10", "-o", "{d}/./map.npy"),
         setup=LOG, keep=("map.npy",), names=("map.npy",)),
    Case(L, "infer -o a symlink to the input map", infer("{d}/map.npy", "--units", "log10", "-o", "{d}/link.h5"),
         setup=both(LOG, lambda ctx, d: (d / "link.h5").symlink_to(d / "map.npy")), keep=("map.npy",), names=("link.h5",)),
    Case(L, "sample --checkpoint c.pt -o c.pt", sample(ckpt="{d}/c.pt", out="{d}/c.pt"), setup=copy("{ckpt}", "c.pt"),
         keep=("c.pt",), names=("c.pt",)),
    Case(L, "sample --force -o the checkpoint", sample("--force", ckpt="{d}/c.pt", out="{d}/c.pt"),
         setup=copy("{ckpt}", "c.pt"), keep=("c.pt",), names=("c.pt",)),
    Case(L, "sample onto an existing output without --force", sample(), setup=put("s.h5", b"precious"),
         keep=("s.h5",), names=("s.h5", "--force")),
    Case(L, "sample -o a directory", sample(out="{d}/out"), setup=lambda ctx, d: (d / "out").mkdir(), names=("out",)),
    Case(L, "infer -o in an unwritable folder fails before the scan",
         infer("{d}/map.npy", "--units", "log10", "-o", "{d}/out/p.h5"), setup=both(LOG, unwritable("out")),
         names=("p.h5",), forbid=("network evaluations",)),
    Case(L, "sample on a full disk leaves no .tmp", sample("-n", "16", "--resolution", "64"), fsize_kb=64),
    Case(L, "prepare.py on a full disk leaves no .tmp", prepare(), setup=raw(), fsize_kb=16, keep=("maps.npy",)),
    Case(L, "synthesize.py on a full disk leaves no .tmp", synthesize(), fsize_kb=16, torch=False),
    Case(L, "download.py on a full disk leaves no .part", download("maps.npy"), setup=serve("maps.npy", lambda r: (r / MAPS).read_bytes()),
         fsize_kb=16, torch=False),
    Case(L, "train.py resume: declared ckpt_*.pt damaged in place comes back", train(), expect="ok",
         setup=run_copy(damage("run/ckpt/ckpt_0000001.pt")), after=restored("ckpt_0000001.pt", "ckpt_0000002.pt")),
    Case(L, "train.py resume: the state's copy of ckpt_*.pt damaged", train(), expect="warning",
         setup=run_copy(damage("run/state/ckpt_0000001.pt")), names=("ckpt_0000001.pt",), after=declared),
    Case(L, "train.py resume: truncated state.pt warns and goes on", train(), expect="warning",
         setup=run_copy(cut("run/state/state.pt", 0, 1000)), names=("state.pt",), after=declared),

    Case(G, "prepare.py: raw maps with one NaN", prepare(), setup=raw(NAN0), keep=("maps.npy",), names=("map 0",), torch=False),
    Case(G, "prepare.py: raw maps with one inf", prepare(), setup=raw(lambda m: m.__setitem__((1, 2, 3), np.inf)),
         keep=("maps.npy",), names=("map 1",), torch=False),
    Case(G, "prepare.py: zero pixels above prepare.max_nonpositive_fraction", prepare(max_nonpositive_fraction=1e-4),
         setup=raw(lambda m: m.__setitem__((3, 0), 0.0)), names=("max_nonpositive_fraction",)),
    Case(G, "prepare.py: a few zero pixels below the limit", prepare(), expect="warning",
         setup=raw(lambda m: m.__setitem__((3, 0, slice(0, 4)), 0.0)), names=("zero or negative",)),
    Case(G, "infer: a physical map given as --units log10", infer("{d}/map.npy", "--units", "log10"), setup=PHYS,
         names=("--units",)),
    Case(G, "infer: a log10 map given as physical", infer("{d}/map.npy"), setup=LOG, names=("--units",)),
    Case(G, "infer: an all-zero map", infer("{d}/map.npy"), setup=put("map.npy", np.zeros((RES, RES))), names=("map.npy",)),
    Case(G, "infer: a map times 1e6", infer("{d}/map.npy"), setup=field("map.npy", lambda m: 1e6 * 10.0**m),
         names=("--units",)),
    Case(G, "infer: a NaN map as --units log10 fails before the scan", infer("{d}/map.npy", "--units", "log10"),
         setup=field("map.npy", lambda m: np.where(np.arange(m.size).reshape(m.shape) == 7, np.nan, m)),
         names=("non-finite",), forbid=("network evaluations",)),
    Case(G, "infer: a checkpoint with non-finite normalisation", infer("{d}/map.npy", ckpt="{fx}/nan_norm.pt"),
         setup=PHYS, names=("normalisation",)),
    Case(G, "sample: a checkpoint with non-finite normalisation", sample(ckpt="{fx}/nan_norm.pt"),
         names=("normalisation",)),
    Case(G, "check-config: a --configfile missing required keys", check_config(),
         setup=config(drop=("oracle", "prepare.downsample")), names=("oracle", "prepare.downsample"), torch=False),
    Case(G, "snakemake -n: a --configfile missing required keys", snakemake(),
         setup=config(drop=("oracle", "prepare.downsample")), names=("oracle", "prepare.downsample"), torch=False),
    Case(G, "download.py: null checks, maps .npy is an HTML page", download("maps.npy"), setup=serve("maps.npy", HTML),
         names=("maps.npy",), torch=False),
    Case(G, "download.py: null checks, maps .npy is half a file", download("maps.npy"),
         setup=serve("maps.npy", half(MAPS)), names=("truncated",), torch=False),
    Case(G, "download.py: null checks, params .txt is an HTML page", download("params.txt"),
         setup=serve("params.txt", HTML), names=("params.txt",), torch=False),
    Case(G, "download.py: null checks, params .txt is half a file", download("params.txt"),
         setup=serve("params.txt", half(PARAMS)), names=("params.txt",), torch=False),
    Case(G, "download.py: null checks, params .txt is empty", download("params.txt"), setup=serve("params.txt", b""),
         names=("params.txt",), torch=False),
    Case(G, "download.py: HTTP 404", download("nothing.npy"), names=("404",), torch=False),

    Case(U, "sample: a truncated checkpoint", sample(ckpt="{d}/c.pt"), setup=both(copy("{ckpt}", "c.pt"), cut("c.pt")),
         names=("c.pt",)),
    Case(U, "sample: an empty checkpoint", sample(ckpt="{d}/c.pt"), setup=put("c.pt", b""), names=("c.pt",)),
    Case(U, "sample: a random-bytes checkpoint", sample(ckpt="{d}/c.pt"), setup=put("c.pt", bytes(range(256)) * 8),
         names=("c.pt",)),
    Case(U, "sample: a missing checkpoint", sample(ckpt="{d}/nope.pt"), names=("nope.pt",)),
    Case(U, "infer: a checkpoint whose config does not match its weights", infer("{d}/map.npy", ckpt="{fx}/mismatch.pt"),
         setup=PHYS, names=("mismatch.pt",)),
    Case(U, "sample -n 0", sample("-n", "0"), names=("-n",), torch=False),
    Case(U, "sample -n -3", sample("-n", "-3"), names=("-n",), torch=False),
    Case(U, "sample --batch-size 0", sample("--batch-size", "0"), names=("--batch-size",), torch=False),
    Case(U, "sample --steps 0", sample("--steps", "0"), names=("--steps",), torch=False),
    Case(U, "sample --resolution 7 (odd: the network halves it)", sample("--resolution", "7"),
         names=("downsampling factor", "got 7")),
    Case(U, "sample --resolution 0", sample("--resolution", "0"), names=("resolution",)),
    Case(U, "sample --resolution -16", sample("--resolution", "-16"), names=("resolution",)),
    Case(U, "sample --device cuda on a CPU build", sample("--device", "cuda"), names=("cuda",),
         skip=lambda ctx: "this machine has a CUDA device" if ctx.cuda else None),
    Case(U, "infer: a text file named .npy", infer("{d}/map.npy"), setup=put("map.npy", b"1 2\n3 4\n"), names=("map.npy",)),
    Case(U, "infer: a map smaller than the checkpoint's resolution", infer("{d}/map.npy"),
         setup=put("map.npy", np.full((8, 8), 1e11)), names=("map.npy",)),
    Case(U, "infer --log-floor 0", infer("{d}/map.npy", "--log-floor", "0"), setup=PHYS, names=("floor",)),
    Case(U, "prepare.py: a text file named .npy", prepare(), setup=both(raw(), put("maps.npy", b"1 2\n3 4\n")),
         names=("maps.npy",), torch=False),
    Case(U, "prepare.py: a truncated raw .npy", prepare(), setup=both(raw(), cut("maps.npy")), names=("truncated",), torch=False),
    Case(U, "prepare.py: raw maps not of the configured resolution", prepare(native=64), setup=raw(),
         names=("data.resolution",), torch=False),
    Case(U, "prepare.py: a parameter table that does not match the maps", prepare(),
         setup=both(raw(), cut("params.txt", 0.5)), names=("parameter table",), torch=False),
    Case(U, "train.py: a truncated prepared HDF5", train(data="{d}/p.h5"), setup=both(copy("{prepared}", "p.h5"), cut("p.h5")),
         names=("p.h5",)),
    Case(U, "check-config: a YAML syntax error names file and line", check_config(),
         setup=config("n_sims: 12", "n_sims: [12"), names=("config.yaml", "line"), torch=False),
    Case(U, "snakemake -n: a YAML syntax error", snakemake(), setup=config("n_sims: 12", "n_sims: [12"),
         names=("config.yaml",), torch=False),
    Case(U, "check-config: inference.n_fields above the test split", check_config(), setup=config("n_fields: 2", "n_fields: 46"),
         names=("inference.n_fields",), torch=False),
    Case(U, "check-config: the YAML exponent trap (1e9 read as text)", check_config(),
         setup=config("log_floor: 1.0e+9", "log_floor: 1e9"), names=("prepare.log_floor",), torch=False),
    Case(U, "check-config: a file that does not exist", check_config("{d}/nope.yaml"), names=("nope.yaml",), torch=False),
    Case(U, "snakemake -n --config 'pretrain={iterations: 7}' (nested override)",
         snakemake("--config", "pretrain={iterations: 7}"), expect="error-or-ok", setup=config(),
         names=("pretrain.iterations",), torch=False),
]


# ---- context, fixtures and the local server


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def tree(root):
    """{relative path: sha256} of the files under root (no .snakemake bookkeeping)."""
    return {str(p.relative_to(root)): sha256(p) for p in sorted(Path(root).rglob("*"))
            if p.is_file() and not p.is_symlink() and ".snakemake" not in p.parts}


class Context:
    def __init__(self, work, python, block_torch):
        self.work, self.python, self.fx = work, python, work / "fixtures"
        self.served, self.url, self.cuda = {}, None, False
        paths = [str(ROOT / "workflow"), os.environ.get("PYTHONPATH", "")]
        if block_torch:  # a torch that refuses to load: a torch-free case that imports it shows a traceback
            stub = work / "no-torch" / "torch"
            stub.mkdir(parents=True, exist_ok=True)
            (stub / "__init__.py").write_text("raise ImportError('torch is blocked by fault_probe --no-torch')\n")
            paths.insert(0, str(stub.parent))
        self.env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in paths if p), PYTHONDONTWRITEBYTECODE="1",
                        MPLBACKEND="Agg", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
                        PATH=f"{Path(python).parent}{os.pathsep}{os.environ.get('PATH', '')}")

    def fill(self, token, d):
        keys = {"d": d, "dname": d.name.split("-")[0], "fx": self.fx, "ckpt": self.fx / "run/ckpt/ckpt_0000002.pt",
                "prepared": self.fx / "prepared_16.h5", "url": self.url, "root": ROOT}
        return re.sub(r"\{(\w+)\}", lambda m: str(keys[m[1]]) if m[1] in keys else m[0], token)

    def command(self, argv, d):
        return runner(argv[0], self.python) + [self.fill(t, d) for t in argv[1:]]


def start_server(ctx):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            body = ctx.served.get(self.path)
            if body is None:
                self.send_error(404, "Not Found")
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    ctx.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    return httpd


def build_fixtures(ctx, with_torch, timeout):
    """Through the workflow's own scripts: the raw set (synthesize.py, no torch) and one map;
    with_torch: the prepared file, a training run and the edited checkpoints."""
    steps = [(ctx.fx / "raw" / PARAMS, synthesize(out="{fx}/raw"))]
    if with_torch:
        steps += [(ctx.fx / "prepared_16.h5", prepare(f"{{fx}}/raw/{MAPS}", f"{{fx}}/raw/{PARAMS}", "{prepared}")),
                  (ctx.fx / "run/ckpt/ckpt_0000002.pt", train(run="{fx}/run")),
                  (ctx.fx / "cuda.txt", ("python", "-c", VARIANTS, "{ckpt}", "{fx}"))]
    ctx.fx.mkdir(parents=True, exist_ok=True)
    for target, argv in steps:
        if not target.exists():
            rc, out = execute(ctx.command(argv, ctx.fx), ctx.env, None, timeout)
            if rc != 0:
                sys.exit(f"fault_probe: set-up {argv[0]} failed (exit {rc}):\n{out[-3000:]}")
    physical = np.load(ctx.fx / "raw" / MAPS)[-1].astype(np.float64)  # a map of the test split
    np.save(ctx.fx / "map_log.npy", np.log10(np.maximum(physical, PREPARE["log_floor"])))
    ctx.cuda = (ctx.fx / "cuda.txt").exists() and (ctx.fx / "cuda.txt").read_text().strip() == "True"


# ---- running and classifying


def execute(cmd, env, fsize_kb, timeout):
    """(exit status or None on timeout, stderr + stdout) of cmd run from the repository root;
    fsize_kb: files may grow to that many KiB (`ulimit -f`, SIGXFSZ ignored: writes fail EFBIG)."""
    if fsize_kb:
        cmd = ["bash", "-c", 'ulimit -f "$0" && trap "" XFSZ && exec "$@"', str(fsize_kb), *cmd]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            errors="replace", start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        return None, err + "\n" + out
    return proc.returncode, err + "\n" + out


def losses(case, ctx, d, out, before, fixtures):
    """What the run lost: protected files changed, leftovers, work done before failing."""
    found = []
    for name, digest in before.items():
        if not Path(name).exists():
            found.append(f"{Path(name).name} destroyed")
        elif sha256(name) != digest:
            found.append(f"{Path(name).name} changed")
    now = tree(ctx.fx)
    found += [f"fixture {k} changed" for k, v in fixtures.items() if now.get(k) != v]
    for top in (d, ctx.fx):
        found += [f"{p.relative_to(top)} left behind" for p in top.rglob("*")
                  if p.name.endswith(LEFTOVER) and ".snakemake" not in p.parts]
    found += [f"work done before failing ({s!r} in the output)" for s in case.forbid if s in out]
    if case.after:
        problem = case.after(ctx, d)
        found += [problem] if problem else []
    return found


ERROR = re.compile(r"error", re.I)
WARN = re.compile(r"\bwarn(ing)?\b", re.I)
STAMP = re.compile(r"^.*?\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ ")  # a progress bar, then a log line's time


def lines_of(out):
    """The output's non-empty lines without log time stamps; a line ending with ':' joined to the next."""
    lines = [STAMP.sub("", line).strip() for line in out.splitlines()]
    joined = []
    for line in filter(None, lines):
        if joined and joined[-1].endswith(":") and not line.startswith("File "):
            joined[-1] += " " + line
        else:
            joined.append(line)
    return joined


def classify(case, rc, out, lost):
    """(verdict, message line)."""
    lines = lines_of(out)
    last = lines[-1] if lines else ""
    if lost:
        return "lost", "LOST: " + "; ".join(lost) + (f" -- {last}" if last else "")
    if rc is None:
        return "hang", "no exit within the timeout"
    if TRACEBACK in out:
        return "traceback", last
    named = all(w.lower() in out.lower() for w in case.names)
    if rc != 0:
        msg = next((line for line in lines if ERROR.search(line) and not line.lower().startswith("usage")), last)
        return ("clear error" if msg and named else "unclear"), msg
    if case.expect in ("ok", "error-or-ok"):
        return "ok", last
    warnings = [line for line in lines if WARN.search(line)]
    good = [line for line in warnings if all(w.lower() in line.lower() for w in case.names)]
    if good:
        return "warning", good[0]
    return ("unclear", warnings[0]) if warnings else ("silent", last)


EXPECTED = {"error": {"clear error"}, "warning": {"warning"}, "ok": {"ok"}, "error-or-ok": {"clear error", "ok"}}


def run_case(num, case, ctx, timeout):
    d = ctx.work / "cases" / f"{num:02d}-{re.sub(r'[^a-z0-9]+', '-', case.name.lower()).strip('-')[:40]}"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    if case.setup:
        case.setup(ctx, d)
    keep = [Path(ctx.fill(k, d)) if "{" in k else d / k for k in case.keep]
    before = {str(p): sha256(p) for p in keep}
    fixtures = tree(ctx.fx)
    rc, out = execute(ctx.command(case.argv, d), ctx.env, case.fsize_kb, timeout)
    out = out.replace(f"{d}/", "").replace(f"{ctx.fx}/", "fixtures/").replace(f"{ROOT}/", "").replace(ctx.url, "http://server")
    verdict, msg = classify(case, rc, out, losses(case, ctx, d, out, before, fixtures))
    return verdict, rc, msg


# ---- the command line


def cell(text, width=160):
    text = str(text).replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= width else text[: width - 3] + "..."


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", default=None, help="run the cases whose category or name contains this (case-insensitive)")
    ap.add_argument("--list", action="store_true", help="list the cases without running them")
    ap.add_argument("--no-torch", action="store_true", help="run only the cases that need no torch, with torch blocked")
    ap.add_argument("--workdir", type=Path, default=None, help="scratch folder (kept); default: a temporary one, removed")
    ap.add_argument("--keep", action="store_true", help="keep the temporary scratch folder")
    ap.add_argument("--python", default=sys.executable, help="interpreter of the commands (default: this one)")
    ap.add_argument("--timeout", type=int, default=300, help="seconds per command")
    args = ap.parse_args(argv)
    chosen = [(i, c) for i, c in enumerate(CASES, 1)
              if not args.only or args.only.lower() in f"{c.category} {c.name}".lower()]
    if args.list:
        print("| # | category | case | expects | torch |\n|---|---|---|---|---|")
        for i, c in chosen:
            print(f"| {i} | {c.category} | {cell(c.name)} | {c.expect} | {'yes' if c.torch else 'no'} |")
        return 0
    if not chosen:
        sys.exit(f"fault_probe: no case matches --only {args.only!r}")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="fault_probe."))
    ctx = Context(work.resolve(), args.python, args.no_torch)
    httpd = start_server(ctx)
    try:
        build_fixtures(ctx, any(c.torch for _, c in chosen) and not args.no_torch, args.timeout)
        results = []
        for i, c in chosen:
            why = "--no-torch" if (c.torch and args.no_torch) else (c.skip(ctx) if c.skip else None)
            results.append((i, c, *(("skipped", "", why) if why else run_case(i, c, ctx, args.timeout))))
            print(f"[{i}/{len(CASES)}] {c.name}: {results[-1][2]}", file=sys.stderr, flush=True)
    finally:
        httpd.shutdown()
        if not (args.workdir or args.keep):
            for p in work.rglob("*"):
                if p.is_dir() and not p.is_symlink():
                    p.chmod(0o755)
            shutil.rmtree(work, ignore_errors=True)
    return report(results)


def report(results):
    print("| # | category | case | verdict | exit | message |\n|---|---|---|---|---|---|")
    failed = 0
    for i, c, verdict, rc, msg in results:
        shown = verdict
        if verdict != "skipped" and verdict not in EXPECTED[c.expect]:
            failed += 1
            shown = f"**{verdict}** (expected {c.expect})"
        print(f"| {i} | {c.category} | {cell(c.name)} | {shown} | {'' if rc is None else rc} | {cell(msg)} |")
    counts = {}
    for _, _, verdict, _, _ in results:
        counts[verdict] = counts.get(verdict, 0) + 1
    print("\n" + ", ".join(f"{v}: {n}" for v, n in sorted(counts.items())) + f"; not as expected: {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
