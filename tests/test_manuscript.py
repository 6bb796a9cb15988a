"""cosmodiff.manuscript: the paper's figures and provenance, its numbers and tables, the PDF.

No torch: the results are made up here, and paper/main.tex is built from them with the TeX
engine where one exists (the smoke run's real paper is tested in test_workflow.py).
"""

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import smoke_config

from cosmodiff import manuscript as ms

ROOT = Path(__file__).resolve().parents[1]
FLAGS_OFF = {"exact": False, "oracle": False, "diagnostic": False, "summary": False, "baselines": False}
FLAGS_ON = {"exact": True, "oracle": True, "diagnostic": True, "summary": True, "baselines": True}
needs_tex = pytest.mark.skipif(
    not (ms.tex_engine() and shutil.which("pdftotext")), reason=f"no TeX or poppler-utils: install {ms.TEX_PACKAGES} poppler-utils"
)


def test_numbers_are_formatted_for_tex():
    assert ms.fmt(0.6833) == "0.683" and ms.fmt(0.5) == "0.5" and ms.fmt(3.4217) == "3.42" and ms.fmt(12.34) == "12.3"
    assert ms.fmt(1234.6) == "1{,}235" and ms.fmt(15000) == "15{,}000" and ms.fmt(0) == "0"
    assert ms.fmt(2.5e7) == r"$2.50\times10^{7}$" and ms.fmt(float("nan")) == "n/a" and ms.fmt(None) == "n/a"
    assert ms.fmt(-0.0421) == "-0.0421"
    # counts round to the nearest integer: a median of 577.88 evaluations is 578, not 577
    assert ms.group(577.877) == "578" and ms.group(46919.6) == "46{,}920" and ms.group(12) == "12"
    assert ms.tex_escape("a_b 50% & #1 {x} ~^\\") == r"a\_b 50\% \& \#1 \{x\} \textasciitilde{}\textasciicircum{}\textbackslash{}"


def test_section_hash_follows_the_sections_and_nothing_else():
    config = smoke_config()
    h = ms.section_hash(config, ["data", "prepare"])
    assert len(h) == 7 and h == ms.section_hash(dict(reversed(list(config.items()))), ["prepare", "data"])
    assert ms.section_hash(smoke_config(**{"figures.gallery_columns": 4}), ["data", "prepare"]) == h
    assert ms.section_hash(smoke_config(**{"prepare.downsample": "area"}), ["data", "prepare"]) != h


def test_figure_list_follows_the_rules_switches_and_the_config():
    config = smoke_config()
    names = [f["name"] for f in ms.figure_list(config, **FLAGS_OFF)]
    assert len(names) == 14 and names[0] == "data_gallery" and "inference_exact" not in names
    on = {f["name"]: f for f in ms.figure_list(config, **FLAGS_ON)}
    assert set(on) - set(names) == {"inference_exact", "inference_oracle", "likelihood_diagnostic", "likelihood_convergence",
                                    "baselines_comparison", "out_of_distribution"}
    assert on["out_of_distribution"]["rule"] == "comparison" and "baselines" in on["out_of_distribution"]["sections"]
    assert on["inference_oracle"]["rule"] == "oracle" and "model" not in on["inference_oracle"]["sections"]
    # an edit touches the hashes of the figures downstream of it, and only those
    edited = {f["name"]: f for f in ms.figure_list(smoke_config(**{"sampling.steps": 4}), **FLAGS_ON)}
    changed = {n for n in on if on[n]["hash"] != edited[n]["hash"]}
    assert changed == {f"emulation_{n}" for n in ("maps", "power", "pdf", "response", "peaks")}
    edited = {f["name"]: f for f in ms.figure_list(smoke_config(**{"finetune.lr": 5.0e-5}), **FLAGS_ON)}
    changed = {n for n in on if on[n]["hash"] != edited[n]["hash"]}
    assert changed == {"loss_finetune", "chi2_finetune"} | {f"emulation_{n}" for n in ("maps", "power", "pdf", "response", "peaks")}
    edited = {f["name"]: f for f in ms.figure_list(smoke_config(**{"sampler_cost.n_samples": 3}), **FLAGS_ON)}
    assert {n for n in on if on[n]["hash"] != edited[n]["hash"]} == {"emulation_sampler_cost"}
    # inference on the fine-tuned model depends on the fine-tuning, on the pretrained one not
    assert "finetune" not in on["inference_posteriors"]["sections"]
    ft = {f["name"]: f for f in ms.figure_list(smoke_config(**{"inference.stage": "finetune"}), **FLAGS_OFF)}
    assert "finetune" in ft["inference_posteriors"]["sections"]


def test_git_state_of_a_checkout_and_of_a_plain_folder(tmp_path):
    assert ms.git_state(tmp_path) == {"commit": None, "dirty": None}
    if not shutil.which("git"):
        pytest.skip("no git")
    repo = tmp_path / "repo"
    repo.mkdir()

    def git(*args):
        subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args], check=True, capture_output=True)

    git("init", "-q")
    (repo / "a.txt").write_text("1")
    git("add", "a.txt")
    git("commit", "-q", "-m", "one")
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    state = ms.git_state(repo)
    assert state == {"commit": head[:12], "dirty": False}
    (repo / "a.txt").write_text("2")
    assert ms.git_state(repo) == {"commit": head[:12], "dirty": True}


def test_missing_tex_fails_with_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ms.TexMissing, match="apt-get install latexmk texlive-latex-recommended.*paper.pdf: false"):
        ms.build_pdf(tmp_path)


# ---- a made-up run, built into the real paper/main.tex


def fake_baselines():
    """rule comparison's tables and rule npe's SBC, made up."""
    from cosmodiff.inference.calibration import METHODS

    rows = []
    for k, key in enumerate(METHODS):
        row = {"method": METHODS[key], "n": 50 if key != "mcmc" else 3, "evaluations": float("nan") if key in ("exact", "npe")
               else 9950.0 + 1000 * k, "seconds": 20.0 + k, "evaluations_per_ess": 321.0 if key == "mcmc" else float("nan")}
        for p in ("omega_m", "sigma_8"):
            row.update({f"{p}_rel_error": 0.1, f"{p}_width": 0.05, f"{p}_coverage68": 0.7, f"{p}_coverage95": 0.94,
                        f"{p}_mean_abs_z": 0.8, f"{p}_shift": float("nan") if key == "exact" else 0.05 * k,
                        f"{p}_width_ratio": float("nan") if key == "exact" else 1.0 + 0.1 * k})
            if key == "mcmc":  # chain_agreement's columns
                row.update({f"same_u_{p}_mcse": 0.7, f"same_u_{p}_within2": 0.96, f"same_u_{p}_width": 1.01})
        rows.append(row)
    ood = pd.DataFrame([{"set": s, "noise_dex": n, "n": 6, "check_z": z, "flagged": f, "diffusion_sigma_8_mean_z": 0.1,
                         "diffusion_sigma_8_coverage95": 0.9, "npe_sigma_8_mean_z": -0.2, "npe_sigma_8_coverage95": 1.0}
                        for s, n, z, f in (("in distribution", 0.0, 0.3, 0.0), ("white noise", 0.1, 45.0, 1.0))])
    sbc = {"n_fields": 300, **{f"{p}_coverage{m}": 0.7 for p in ("omega_m", "sigma_8") for m in (68, 95)}}
    return {"comparison": pd.DataFrame(rows), "ood": ood, "npe_sbc": sbc}


def fake_results(exact, oracle, summary, baselines=False, n_fields=4):
    rng = np.random.default_rng(0)
    stats = ["chi2_samples", "chi2_sims", "chi2_log_samples", "chi2_log_sims", "pdf_w1_dex"]

    def summary_df(its):
        return pd.DataFrame([{"iteration": i, **{c: 1 + rng.random() for c in stats}, "abs_density_z": rng.random()} for i in its])

    points = pd.DataFrame([{"point": k, "sim": 10 + k, "omega_m": 0.2 + 0.1 * k, "sigma_8": 0.7 + 0.05 * k,
                            **{c: 1 + rng.random() for c in stats}, "density_z": rng.normal()} for k in range(3)])
    inf = []
    for i in range(n_fields):
        row = {"field": i, "sim": 9 + i}
        for p, t in (("omega_m", 0.3), ("sigma_8", 0.8)):
            row.update({f"{p}_truth": t, f"{p}_mean": t + 0.01 * rng.normal(), f"{p}_std": 0.02, f"{p}_z": rng.normal()})
            if exact:
                row.update({f"exact_{p}_mean": t, f"exact_{p}_std": 0.02})
        inf.append(row)
    cov = {"n": n_fields, "se68": 0.233, "se95": 0.109, "hpd_coverage68": 0.75, "hpd_coverage95": 1.0,
           "evaluations_per_field": 1234.0, "seconds_per_field": 56.7}
    for p in ("omega_m", "sigma_8"):
        cov.update({f"{p}_coverage68": 0.75, f"{p}_coverage95": 1.0, f"{p}_mean_z": 0.1, f"{p}_rms_z": 0.9})
        if exact:
            cov.update({f"vs_exact_mean_abs_shift_{p}": 0.4, f"vs_exact_median_width_{p}": 1.1, f"exact_mean_abs_z_{p}": 0.8})
    methods = ["exact", "bound", "full", "full, default", "truncated"]
    oracle_df = pd.DataFrame([{"field": 0, "method": m, "shift_omega_m": 0.1 * k, "shift_sigma_8": -0.05 * k,
                               "width_omega_m": 1 + 0.01 * k, "width_sigma_8": 1.0, "evaluations": 20 * 49} for k, m in enumerate(methods)])
    targets_df = pd.DataFrame([{"target": "median |mean shift| / exact sigma", "param": p, "low": 0.0, "high": 0.3, "network": 0.2,
                                "network_pass": True, "exact_denoiser": 0.05, "checkpoint": 6} for p in ("omega_m", "sigma_8")]
                              + [{"target": "mean |density z|", "param": "field", "low": 0.0, "high": 1.0, "network": 1.5,
                                  "network_pass": False, "exact_denoiser": float("nan"), "checkpoint": 6}])
    return {
        "counts": {"train": (90, 6), "val": (45, 3), "test": (45, 3)}, "norm": (9.42, 15.44),
        "selections": {"pretrain": {"iteration": 3, "criterion": "chi2_log_samples", "chi2_log_samples": 1.5},
                       "finetune": {"iteration": 4, "criterion": "chi2_log_samples", "chi2_log_samples": 1.7}},
        "summaries": {"pretrain": summary_df([3, 6]), "finetune": summary_df([2, 4])},
        "table": points, "statistics": points.drop(columns="point"), "sampling_attrs": {"sampler": "ddim", "evaluations_per_map": 3},
        "sampler_cost": pd.DataFrame([{"sampler": s, "spacing": g, "evaluations": e, "seconds_per_map": 0.5 * e,
                                       **{c: 1 + rng.random() for c in stats}, "abs_density_z": 0.3, "pdf_w1_dex": 0.1}
                                      for s, g, e in (("ancestral", "-", 1000), ("dpm2m", "quadratic", 25))]),
        "inference": pd.DataFrame(inf), "coverage": cov,
        "oracle": oracle_df if oracle else None, "targets": targets_df if summary else None, "n_params": 123456,
        **(fake_baselines() if baselines else {}),
    }


def fake_figures(figdir, figures):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figdir.mkdir(parents=True, exist_ok=True)
    for f in figures:
        fig, ax = plt.subplots(figsize=(6, 3))
        ax.imshow(np.random.default_rng(0).random((8, 16)))
        ax.set_title(f["name"])
        fig.savefig(figdir / f"{f['name']}.png", dpi=40)
        plt.close(fig)


def pdf_images(pdf):
    """Raster images in a PDF (`pdfimages -list`; an alpha channel is listed apart as an smask)."""
    out = subprocess.run(["pdfimages", "-list", str(pdf)], capture_output=True, text=True, check=True).stdout
    return sum(line.split()[2] == "image" for line in out.splitlines()[2:])


def pdf_text(pdf):
    return subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True).stdout


@needs_tex
@pytest.mark.parametrize("generator,flags", [("nbody", FLAGS_OFF), ("lognormal", FLAGS_ON), ("cmd", FLAGS_OFF)])
def test_main_tex_builds_from_a_made_up_run(tmp_path, generator, flags):
    """The text follows the data (particle-mesh, lognormal with every optional rule, CMD)."""
    if generator == "cmd":
        config = smoke_config(**{"data.source": "download"})
    else:  # the lognormal run keeps its last checkpoint (the bench's choice)
        select_by = "last" if generator == "lognormal" else "chi2_log"
        config = smoke_config(**{"data.synthetic.generator": generator, "validation.select_by": select_by})
    figures = ms.figure_list(config, **flags)
    fake_figures(tmp_path / "figures", figures)
    out = tmp_path / "paper"
    res = fake_results(flags["exact"], flags["oracle"], flags["summary"], flags["baselines"])
    sw = ms.write_sources(out, config, flags, figures, {"commit": "0123456789ab", "dirty": True}, res)
    assert sw["lognormal"] == (generator == "lognormal") and sw["coveragecalibrated"] and sw["targetsmet"] is False
    shutil.copyfile(ROOT / "paper/main.tex", out / "main.tex")
    ms.build_pdf(out)
    assert pdf_images(out / "main.pdf") == len(figures)
    text = pdf_text(out / "main.pdf")
    assert "0123456789ab" in text and "dirty" in text
    for f in figures:  # every figure carries its rule and config hash
        assert f["hash"] in text, f["name"]
    assert "123,456" in text and "1,234" in text  # parameters, evaluations per field
    assert "DPM-Solver++(2M)" in text and "Fidelity against cost of the samplers" in text
    assert ("exact standard deviations" in text) == flags["exact"]
    assert ("The oracle check" in text) == flags["oracle"]
    assert ("particle-mesh" in text) == (generator == "nbody")
    flat = " ".join(text.split())
    assert ("The last checkpoint is kept" in flat) == (generator == "lognormal")
    assert ("The checkpoint with the lowest" in flat) == (generator != "lognormal")
    assert ("It is not the CAMELS result" in text) == (generator != "cmd")
    assert ("IllustrisTNG Latin-hypercube" in text) == (generator == "cmd")
    assert ("Only 2 of 3 targets are met" in " ".join(text.split())) == flags["summary"]
    assert ("Beyond the grid scan" in text) == flags["baselines"]
    if flags["baselines"]:  # the generated numbers: the cheap scan's cost and design, NPE's SBC
        assert "11,950 network evaluations per field, against 10,950" in flat and "368-evaluation" in flat
        assert "diffusion, NUTS" in text and "white noise (0.1 dex)" in text and "321 per effective sample" in flat
        assert "within two Monte Carlo standard errors of the grid posterior of the same U on a fraction 0.96 / 0.96" in flat
