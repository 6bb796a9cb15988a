"""The SLURM profile (profiles/slurm) on a real single-node SLURM cluster started on this
machine by tests/cluster/start.sh (root and apt needed; about 10 minutes in all):

- the smoke config end to end through the profile, overriding only partition and account,
  gives exactly the results of a local run, and only the GPU rules request GPUs;
- a training job killed at its time limit resumes on the profile's retry from its saved state;
- a job killed outright leaves no output that a later run trusts;
- a dry run of the paper config through the profile (no cluster needed) requests what the
  profile says for every GPU rule.

Without root or apt, or when the cluster does not start, the cluster tests are skipped with the
reason; COSMODIFF_REQUIRE_SLURM=1 turns that skip into a failure (for a CI job that must run them).
The cluster is stopped afterwards unless it was already running before the tests.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
PROFILE = ROOT / "profiles" / "slurm"
CLUSTER = ROOT / "tests" / "cluster"
STATE = Path(os.environ.get("COSMODIFF_SLURM_DIR", "/tmp/cosmodiff-slurm"))
# The test cluster only: the plugin's default polling (first status check after 40 s) is kept
# in the profile; here it would make each job take a minute.
FAST_POLL = ["--slurm-init-seconds-before-status-checks", "2", "--seconds-between-status-checks", "2"]
# The node of the test cluster has 2 CPUs: the GPU rules' `threads: 8` (-> --cpus-per-task 8)
# cannot be scheduled on it, so the runs cap threads at 2, as the local reference run does.
MAX_THREADS = ["--max-threads", "2"]
GPU_RULES = {"pretrain", "finetune", "validate_checkpoint", "sample", "sampler_cost", "posterior"}
SUBMITTED = re.compile(r"submitted with SLURM jobid (\d+) \(log: \S*/rule_(\w+)/")

pytestmark = [pytest.mark.workflow, pytest.mark.slurm]


def _env(**extra):
    return dict(
        os.environ,
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        MPLBACKEND="Agg",
        SLURM_CONF=str(STATE / "etc" / "slurm.conf"),
        **extra,
    )


def _snakemake_cmd(workdir, *args):
    return [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(workdir), *args]


def snakemake(workdir, *args, check=True, timeout=1800):
    out = subprocess.run(_snakemake_cmd(workdir, *args), cwd=ROOT, capture_output=True, text=True, env=_env(),
                         timeout=timeout, check=False)
    if check and out.returncode:
        raise AssertionError(f"snakemake failed ({out.returncode}):\n{out.stdout[-4000:]}\n{out.stderr[-8000:]}")
    return out


def write_config(path, **stages):
    """config/smoke.yaml with some keys of some stages changed: write_config(p, pretrain={...})."""
    config = yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text())
    for stage, changes in stages.items():
        config[stage].update(changes)
    path.write_text(yaml.safe_dump(config))
    return path


def load_profile():
    return yaml.safe_load((PROFILE / "config.yaml").read_text())


def sacct(job_ids, fields=("JobID", "State", "Partition", "Account", "Timelimit", "AllocTRES", "ReqTRES")):
    """One dict per job allocation (no steps)."""
    out = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-j", ",".join(job_ids), "-o", ",".join(fields)],
        capture_output=True, text=True, env=_env(), check=True,
    )
    rows = [dict(zip(fields, line.split("|"), strict=True)) for line in out.stdout.splitlines() if line.strip()]
    return {row["JobID"]: row for row in rows}


def submitted_jobs(text):
    """[(slurm job id, rule)] in submission order, from snakemake's output."""
    return SUBMITTED.findall(text)


# --------------------------------------------------------------------------------------------
# the cluster
# --------------------------------------------------------------------------------------------


def _daemons_running():
    pidfile = STATE / "run" / "slurmctld.pid"
    try:
        os.kill(int(pidfile.read_text()), 0)
        return True
    except (OSError, ValueError):
        return False


@pytest.fixture(scope="module")
def cluster():
    """Start the test cluster (or use the one running); yields partition, account, start time."""
    required = os.environ.get("COSMODIFF_REQUIRE_SLURM") == "1"

    def unavailable(reason):
        if required:
            pytest.fail(f"{reason} (and COSMODIFF_REQUIRE_SLURM=1)")
        pytest.skip(reason)

    if os.geteuid() != 0:
        unavailable("the SLURM tests start a local cluster: they need root")
    installed = all(shutil.which(t) for t in ("slurmctld", "slurmd", "slurmdbd", "munged", "mariadbd-safe"))
    if not installed and not shutil.which("apt-get"):
        unavailable("SLURM is not installed and there is no apt-get to install it")
    was_running = _daemons_running()
    t0 = time.perf_counter()
    try:
        out = subprocess.run(["bash", str(CLUSTER / "start.sh")], capture_output=True, text=True, check=False,
                             timeout=900, env=dict(os.environ, COSMODIFF_SLURM_DIR=str(STATE)))
    except subprocess.TimeoutExpired:
        unavailable("tests/cluster/start.sh did not finish in 15 minutes")
    seconds = time.perf_counter() - t0
    if out.returncode:
        unavailable(f"tests/cluster/start.sh failed ({out.returncode}):\n{out.stderr[-3000:]}")
    settings = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)
    print(f"\nSLURM test cluster {'found running' if was_running else 'started'} in {seconds:.1f} s")
    try:
        yield dict(partition=settings["partition"], account=settings["account"], start_seconds=seconds)
    finally:
        if not was_running:
            subprocess.run(["bash", str(CLUSTER / "stop.sh")], capture_output=True, text=True, timeout=300, check=False,
                           env=dict(os.environ, COSMODIFF_SLURM_DIR=str(STATE)))


def site_overrides(cluster):
    """What a site changes in the profile: partition and account, nothing else."""
    return ["--default-resources", f"slurm_partition={cluster['partition']}", f"slurm_account={cluster['account']}"]


# --------------------------------------------------------------------------------------------
# d. the paper config through the profile, dry run (no cluster needed)
# --------------------------------------------------------------------------------------------


def _rule_blocks(text):
    """(rule, {resource: value}, threads) for every job block of a dry run."""
    blocks = []
    for block in re.split(r"\n(?=rule \w+:)", text):
        m = re.match(r"rule (\w+):", block)
        res = re.search(r"^\s+resources: (.*)$", block, re.MULTILINE)
        if m and res:
            pairs = dict(kv.split("=", 1) for kv in res.group(1).split(", "))
            blocks.append((m.group(1), pairs))
    return blocks


def test_paper_dry_run_through_the_profile(tmp_path):
    # the profile-merge trap: a workflow profile would silently replace set-resources
    assert not (ROOT / "workflow" / "profiles" / "default").exists()
    assert not (ROOT / "profiles" / "default").exists()
    profile = load_profile()
    # only the two site settings in default-resources: a command-line --default-resources
    # override (as in the tests below) then replaces exactly them
    assert set(profile["default-resources"]) == {"slurm_partition", "slurm_account"}
    assert profile["executor"] == "slurm" and profile["retries"] >= 1 and profile["rerun-incomplete"] is True
    assert "seconds-between-status-checks" not in profile and "slurm-init-seconds-before-status-checks" not in profile

    # slurm_extra must not carry what the plugin sets itself (it refuses the job otherwise)
    from snakemake_executor_plugin_slurm.validation import get_forbidden_slurm_options

    for rule, res in profile["set-resources"].items():
        for pattern, what in get_forbidden_slurm_options().items():
            assert not re.search(pattern, str(res.get("slurm_extra", ""))), (rule, what)
    for stage in ("pretrain", "finetune"):  # the early warning the training needs: TERM, not USR1
        assert "--signal=TERM@" in profile["set-resources"][stage]["slurm_extra"]

    out = snakemake(tmp_path, "-n", "--profile", "profiles/slurm")  # cwd ROOT: profile's configfile
    assert "Using profile profiles/slurm" in out.stdout + out.stderr
    blocks = _rule_blocks(out.stdout)
    paper = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
    seen = {}
    for rule, res in blocks:
        if rule == "all":
            continue
        assert rule in profile["set-resources"], f"rule {rule} has no entry in profiles/slurm set-resources"
        wanted = profile["set-resources"][rule]
        assert res["slurm_partition"] == profile["default-resources"]["slurm_partition"]
        assert res["slurm_account"] == profile["default-resources"]["slurm_account"]
        assert int(res["runtime"]) == wanted["runtime"], (rule, res)
        assert int(res["mem_mb"]) == wanted["mem_mb"], (rule, res)
        if rule in GPU_RULES:
            gpus = paper[rule]["gpus"] if rule in ("pretrain", "finetune") else 1
            assert res.get("gpu") == str(gpus), (rule, res)
        else:
            assert "gpu" not in res and "gpus" not in res, (rule, res)
        seen.setdefault(rule, res)
    assert GPU_RULES <= set(seen), f"GPU rules missing from the paper dry run: {GPU_RULES - set(seen)}"
    # -n implies --cores 1, which caps threads (and so cpus_per_task: threads) at 1 in the
    # listing; with --cores 8 the dry run shows what a real submission asks for
    full = dict(_rule_blocks(snakemake(tmp_path, "-n", "--profile", "profiles/slurm", "--cores", "8").stdout))
    for rule in GPU_RULES:
        assert full[rule]["cpus_per_task"] == "8", (rule, full[rule])
        seen[rule]["cpus_per_task"] = full[rule]["cpus_per_task"]
    summary = {r: {k: seen[r][k] for k in ("gpu", "runtime", "mem_mb", "cpus_per_task") if k in seen[r]} for r in sorted(seen)}
    print("\npaper dry run through profiles/slurm, per rule:")
    for rule, res in summary.items():
        print(f"  {rule}: " + ", ".join(f"{k}={v}" for k, v in res.items()))


# --------------------------------------------------------------------------------------------
# a. the smoke config end to end on the cluster == a local run
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smoke_runs(cluster, tmp_path_factory):
    slurm_dir, local_dir = tmp_path_factory.mktemp("smoke_slurm"), tmp_path_factory.mktemp("smoke_local")
    smoke = str(ROOT / "config" / "smoke.yaml")
    t0 = time.perf_counter()
    out = snakemake(slurm_dir, "--profile", str(PROFILE), "--configfile", smoke, *site_overrides(cluster),
                    *FAST_POLL, "--jobs", "4", *MAX_THREADS)
    seconds = time.perf_counter() - t0
    print(f"\nsmoke config through the SLURM profile: {seconds:.0f} s wall")
    t0 = time.perf_counter()
    snakemake(local_dir, "--cores", "2", "--configfile", smoke)
    print(f"smoke config locally (--cores 2): {time.perf_counter() - t0:.0f} s wall")
    return dict(slurm=slurm_dir / "results" / "smoke", local=local_dir / "results" / "smoke", out=out, seconds=seconds)


def test_smoke_on_slurm_requests_gpus_for_gpu_rules_only(smoke_runs, cluster):
    jobs = submitted_jobs(smoke_runs["out"].stdout + smoke_runs["out"].stderr)
    rules = {rule for _, rule in jobs}
    assert GPU_RULES <= rules and {"synthesize", "prepare", "plot_data", "select_checkpoint", "plot_emulation"} <= rules
    acct = sacct([j for j, _ in jobs])
    for job_id, rule in jobs:
        row = acct[job_id]
        assert row["Partition"] == cluster["partition"] and row["Account"] == cluster["account"], row
        if row["State"] != "COMPLETED":  # a retried attempt; its successor is checked
            continue
        tres = row["AllocTRES"] + "," + row["ReqTRES"]
        if rule in GPU_RULES:
            assert "gres/gpu" in tres, (rule, row)
        else:
            assert "gres/gpu" not in tres, (rule, row)


def _h5_items(path):
    items = {}
    with h5py.File(path, "r") as f:
        items["/"] = {k: np.asarray(v).tolist() for k, v in f.attrs.items()}

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                items[name] = obj[()]
            items[name + "@attrs"] = {k: np.asarray(v).tolist() for k, v in obj.attrs.items()}

        f.visititems(visit)
    return items


def _assert_same_h5(a, b, skip_attrs=()):
    x, y = _h5_items(a), _h5_items(b)
    assert x.keys() == y.keys(), (a, sorted(x.keys() ^ y.keys()))
    for key in x:
        if isinstance(x[key], dict):
            assert {k: v for k, v in x[key].items() if k not in skip_attrs} == {
                k: v for k, v in y[key].items() if k not in skip_attrs
            }, (a, key)
        else:
            assert np.array_equal(x[key], y[key]), (a, key)


def test_smoke_on_slurm_equals_a_local_run(smoke_runs):
    slurm, local = smoke_runs["slurm"], smoke_runs["local"]
    # the prepared data
    prepared = sorted(p.name for p in (local / "data").glob("prepared_*.h5"))
    assert len(prepared) == 2 and prepared == sorted(p.name for p in (slurm / "data").glob("prepared_*.h5"))
    for name in prepared:
        _assert_same_h5(slurm / "data" / name, local / "data" / name)
    # the training checkpoints, weight by weight
    ckpts = sorted(p.relative_to(local) for p in (local / "models").glob("*/ckpt_*.pt"))
    assert len(ckpts) == 4 and ckpts == sorted(p.relative_to(slurm) for p in (slurm / "models").glob("*/ckpt_*.pt"))
    for rel in ckpts:
        a, b = torch.load(slurm / rel, weights_only=True), torch.load(local / rel, weights_only=True)
        for part in ("model", "ema"):
            assert a[part].keys() == b[part].keys()
            for k in a[part]:
                assert torch.equal(a[part][k], b[part][k]), (rel, part, k)
    for stage in ("pretrain", "finetune"):
        losses = [[json.loads(line)["loss"] for line in (run / "models" / stage / "metrics.jsonl").read_text().splitlines()]
                  for run in (slurm, local)]
        assert losses[0] == losses[1], stage
    # the validation tables and the selection
    tables = sorted(p.relative_to(local) for p in (local / "validation").rglob("*.csv"))
    assert len(tables) >= 6 and tables == sorted(p.relative_to(slurm) for p in (slurm / "validation").rglob("*.csv"))
    for rel in tables:  # every number but wall-clock time (sampler_cost's seconds_per_map)
        a, b = (pd.read_csv(run / rel) for run in (slurm, local))
        timing = [c for c in a.columns if c.startswith("seconds")]
        assert (a[timing] > 0).all().all() and (b[timing] > 0).all().all()
        pd.testing.assert_frame_equal(a.drop(columns=timing), b.drop(columns=timing), check_exact=True)
    for stage in ("pretrain", "finetune"):
        rel = Path("validation") / stage / "selected.json"
        assert json.loads((slurm / rel).read_text()) == json.loads((local / rel).read_text())
    # the samples and the posterior grids (GPU rules too): same numbers
    _assert_same_h5(slurm / "samples" / "samples.h5", local / "samples" / "samples.h5", skip_attrs=("seconds",))
    grids = sorted(p.name for p in (local / "inference").glob("field_*.h5"))
    assert grids == sorted(p.name for p in (slurm / "inference").glob("field_*.h5"))
    for name in grids:
        a, b = _h5_items(slurm / "inference" / name), _h5_items(local / "inference" / name)
        assert a.keys() == b.keys()
        for key in a:
            if not isinstance(a[key], dict):
                assert np.array_equal(a[key], b[key], equal_nan=a[key].dtype.kind == "f"), (name, key)


# --------------------------------------------------------------------------------------------
# b, c. training on the cluster: time limit -> retry resumes; a killed job -> nothing trusted
# --------------------------------------------------------------------------------------------

CHECKPOINT_EVERY = 50


@pytest.fixture(scope="module")
def training(cluster, tmp_path_factory):
    """A work dir with the smoke data prepared, a config whose pretraining is far longer than a
    minute (20,000 iterations), and the profile as a site would edit it: partition, account,
    and a 1-minute time limit for pretrain's first attempt (30 minutes after). (A copy of the
    profile, not --set-resources: that option would replace the profile's whole set-resources.)"""
    root = tmp_path_factory.mktemp("training")
    config = write_config(root / "long.yaml", pretrain=dict(iterations=20000, checkpoint_every=CHECKPOINT_EVERY, log_every=1))
    profile = load_profile()
    profile["default-resources"].update(slurm_partition=cluster["partition"], slurm_account=cluster["account"])
    profile["set-resources"]["pretrain"]["runtime"] = "1 if attempt == 1 else 30"
    # the time limit itself, not the profile's early warning (--signal=TERM@300 would come
    # at once in a 1-minute job, before the training could catch it)
    profile["set-resources"]["pretrain"].pop("slurm_extra", None)
    (root / "profile").mkdir()
    (root / "profile" / "config.yaml").write_text(yaml.safe_dump(profile))
    work = root / "work"
    snakemake(work, "prepare", "--cores", "2", "--configfile", str(config))  # the data stage, locally
    return dict(work=work, config=config, profile=root / "profile", run=work / "results" / "smoke")


class Run:
    """snakemake in the background, its output in a file, stopped (SIGINT, then SIGKILL) at exit."""

    def __init__(self, workdir, *args):
        self.log = Path(workdir).parent / f"snakemake-{time.monotonic_ns()}.out"
        self._fh = open(self.log, "w")
        Path(workdir).mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(_snakemake_cmd(workdir, *args), cwd=ROOT, stdout=self._fh,
                                     stderr=subprocess.STDOUT, text=True, env=_env())

    def text(self):
        return self.log.read_text(errors="replace")

    def stop(self, timeout=180):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # snakemake cancels its SLURM jobs
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._fh.close()
        # a snakemake killed (or slow to cancel on a loaded machine) leaves its jobs running,
        # and they hold the single test node, so the next test's job would wait for them
        jobs = [j for j, _ in submitted_jobs(self.text())]
        if jobs:
            subprocess.run(["scancel", *jobs], capture_output=True, env=_env(), check=False)
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def _read(path):
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def _last_iteration(run, stage="pretrain"):
    lines = _read(run / "state" / stage / "metrics.jsonl").strip().splitlines()
    try:
        return json.loads(lines[-1])["iteration"] if lines else 0
    except (ValueError, KeyError):  # a line being written
        return 0


def test_training_killed_at_its_time_limit_resumes_on_the_retry(training):
    run, log = training["run"], training["run"] / "logs" / "pretrain.log"
    stopped = resumed = None
    with Run(training["work"], "pretrain", "--profile", str(training["profile"]), "--configfile", str(training["config"]),
             *FAST_POLL, *MAX_THREADS) as sm:
        deadline = time.time() + 600
        while time.time() < deadline and sm.proc.poll() is None:
            text = _read(log)  # each attempt overwrites the log: catch the first one's last words
            if stopped is None and (m := re.search(r"stopped by SIGTERM at iteration (\d+); state saved to (\S+)", text)):
                stopped = int(m.group(1))
            if m := re.search(r"resuming from (\S+) at iteration (\d+)", text):
                resumed = (m.group(1), int(m.group(2)))
                if _last_iteration(run) > resumed[1] + 3:  # and the retry trains on
                    break
            time.sleep(0.3)
        output = sm.text()
        rc = sm.stop()
    assert resumed is not None, f"no resume within 10 minutes (snakemake rc {rc}):\n{output[-4000:]}\n{_read(log)[-2000:]}"
    assert stopped is not None, f"the first attempt's log never said it stopped by SIGTERM:\n{output[-4000:]}"
    assert resumed[0] == "results/smoke/state/pretrain/state.pt"
    # the state saved at the signal: nothing lost (at most one checkpoint interval is allowed)
    assert resumed[1] == stopped and stopped >= 1
    assert resumed[1] >= stopped - CHECKPOINT_EVERY
    assert "SLURM status is: 'TIMEOUT'" in output
    jobs = [j for j, rule in submitted_jobs(output) if rule == "pretrain"]
    assert len(jobs) >= 2, output[-4000:]
    acct = sacct(jobs)
    assert acct[jobs[0]]["State"] == "TIMEOUT" and acct[jobs[0]]["Timelimit"] == "00:01:00", acct
    assert acct[jobs[1]]["Timelimit"] == "00:30:00", acct  # runtime grows with the attempt
    print(f"\npretrain: stopped by SIGTERM at the 1-minute limit at iteration {stopped}; "
          f"attempt 2 (SLURM job {jobs[1]}) resumed at iteration {resumed[1]}")


def _kill_job_processes(job):
    """SIGKILL every process of a running job; False if the job has none (yet) on the node."""
    out = subprocess.run(["scontrol", "listpids", job], capture_output=True, text=True, env=_env(), check=False)
    pids = {int(line.split()[0]) for line in out.stdout.splitlines()[1:] if line.split() and line.split()[1] == job}
    if out.returncode or not pids:
        return False
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return True


def test_a_killed_job_leaves_no_output_a_later_run_trusts(training):
    run, models = training["run"], training["run"] / "models" / "pretrain"
    args = ["--profile", str(training["profile"]), "--configfile", str(training["config"]), *FAST_POLL, *MAX_THREADS]
    job = None
    # the previous test's snakemake may have been stopped at exit (SIGINT/SIGKILL): release
    # the lock it can leave behind on the shared working directory
    snakemake(training["work"], "--unlock", *args, check=False)
    before = _last_iteration(run)  # metrics of the previous test's run, resumed from here
    with Run(training["work"], "pretrain", *args, "--retries", "0") as sm:  # see the failure, no retry
        deadline = time.time() + 600
        while time.time() < deadline and sm.proc.poll() is None:
            jobs = [j for j, rule in submitted_jobs(sm.text()) if rule == "pretrain"]
            ckpts = sorted(models.glob("ckpt_*.pt"))
            # kill it in the middle of a checkpoint interval, after it wrote declared outputs
            reached = _last_iteration(run)
            if jobs and ckpts and reached >= max(int(ckpts[-1].stem.split("_")[1]), before) + 5:
                last_ckpt = int(ckpts[-1].stem.split("_")[1])
                # a crash: SIGKILL to every process of the job (the node is this machine), so
                # nothing gets to clean up or save. (Not `scancel`: SLURM turns even
                # `scancel --signal=KILL` into SIGTERM first, and plugin 2.8 never notices a
                # job in state 'CANCELLED by <uid>', so snakemake would wait forever.)
                if _kill_job_processes(jobs[-1]):  # only once it runs on the node
                    job = jobs[-1]
                    break
            time.sleep(0.3)
        assert job is not None, f"pretrain never got going:\n{sm.text()[-4000:]}"
        sm.proc.wait(timeout=300)
        output = sm.text()
    assert sm.proc.returncode != 0 and "Error in rule pretrain" in output, output[-4000:]
    # snakemake removed the outputs the killed job had written ...
    left = sorted(p.name for p in models.glob("*")) + sorted(p.name for p in (run / "figures").glob("loss_pretrain*"))
    assert left == [], f"partial outputs of the killed job left behind: {left}"
    # ... and a later run (of the whole workflow) redoes pretrain and everything after it
    planned = snakemake(training["work"], "-n", *args)
    assert re.search(r"^pretrain\s+1$", planned.stdout, re.MULTILINE), planned.stdout[-3000:]
    assert re.search(r"^validate_checkpoint\s+\d+$", planned.stdout, re.MULTILINE)
    # the undeclared state survives: a retry loses at most one checkpoint interval
    state = torch.load(run / "state" / "pretrain" / "state.pt", weights_only=True)
    reached = _last_iteration(run)  # metrics rows are written every iteration, up to the kill
    assert last_ckpt <= state["iteration"] <= reached, (state["iteration"], last_ckpt, reached)
    assert reached - state["iteration"] <= CHECKPOINT_EVERY, (state["iteration"], reached)
