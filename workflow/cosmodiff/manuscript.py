"""The paper built from a run (rule `paper`): which figures it shows, their provenance, the
numbers and tables it quotes, and the PDF.

* :func:`figure_list` names every figure of ``paper/main.tex`` for a configuration, with the
  rule that makes it and the short hash of the config sections it depends on (upstream rules
  included), as showyourwork prints under each figure. The rules import this module (it needs
  no torch) to declare the figures as inputs and the hashes as a parameter, so an edit of one
  section rebuilds the figures it touches and the paper, and nothing else.
* :func:`git_state`: the commit of the workflow and whether its tree was dirty.
* :func:`numbers` and the ``*_table`` functions turn the run's results into TeX: macros read
  with ``\\val{key}``, switches ``\\if<flag>`` that adapt the text, and ``tabular`` bodies.
  No number in the paper is typed by hand.
* :func:`build_pdf` runs latexmk (or pdflatex); without one it raises :class:`TexMissing`,
  whose message says what to install.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import subprocess
from pathlib import Path

#: what to install where no TeX engine exists (Debian / Ubuntu package names)
TEX_PACKAGES = "latexmk texlive-latex-recommended texlive-fonts-recommended"
PARAM_TEX = {"omega_m": r"$\Omega_m$", "sigma_8": r"$\sigma_8$"}
DATA = ("data", "prepare")


class TexMissing(RuntimeError):
    """No TeX engine on PATH while the config asks for the PDF."""


# ---- figures and their provenance


def training_sections(stage):
    """Config sections behind a stage's checkpoints: fine-tuning starts from the pretraining
    checkpoint that `validation` selected."""
    pre = DATA + ("model", "diffusion", "pretrain")
    return pre if stage == "pretrain" else pre + ("validation", "finetune")


def figure_list(config, exact, oracle, diagnostic, summary, baselines=False):
    """The figures of the paper in order: dicts with ``name`` (results/<run>/figures/<name>.png),
    ``rule``, ``sections`` (config sections it depends on) and ``hash`` (:func:`section_hash`).

    exact, oracle, diagnostic, summary, baselines: whether the exact posterior exists and
    whether the rules `oracle`, `likelihood_diagnostic`, `likelihood_summary` and `comparison`
    are active (the rule files' EXACT, ORACLE, DIAGNOSTIC, SUMMARY and BASELINES).
    """
    inf = training_sections(config["inference"]["stage"]) + ("validation", "inference")
    inf = tuple(dict.fromkeys(inf))
    figs = [
        ("data_gallery", "plot_data", DATA + ("figures",)),
        ("data_power_spectra", "plot_data", DATA + ("figures",)),
        ("loss_pretrain", "pretrain", training_sections("pretrain")),
        ("loss_finetune", "finetune", training_sections("finetune")),
        ("chi2_pretrain", "select_checkpoint", training_sections("pretrain") + ("validation",)),
        ("chi2_finetune", "select_checkpoint", training_sections("finetune")),
        *[(f"emulation_{n}", "plot_emulation", training_sections("finetune") + ("sampling",))
          for n in ("maps", "power", "pdf", "response", "peaks")],
        ("emulation_sampler_cost", "sampler_cost",
         tuple(dict.fromkeys(training_sections(config["sampler_cost"]["stage"]) + ("validation", "sampler_cost")))),
        ("inference_posteriors", "calibration", inf),
        ("inference_calibration", "calibration", inf),
    ]
    if exact:
        figs.append(("inference_exact", "calibration", inf))
    if oracle:
        figs.append(("inference_oracle", "oracle", DATA + ("diffusion", "inference", "oracle")))
    if diagnostic:
        figs.append(("likelihood_diagnostic", "likelihood_diagnostic", inf + ("diagnostics",)))
    if summary:
        figs.append(("likelihood_convergence", "likelihood_summary", inf + ("diagnostics",)))
    if baselines:
        figs.append(("baselines_comparison", "comparison", inf + ("baselines",)))
        figs.append(("out_of_distribution", "comparison", inf + ("baselines",)))
    return [{"name": n, "rule": r, "sections": list(s), "hash": section_hash(config, s)} for n, r, s in figs]


def section_hash(config, sections):
    """Short sha256 of the named config sections (canonical JSON: key order does not matter)."""
    blob = json.dumps({s: config[s] for s in sections}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:7]


def git_state(path):
    """{'commit': short hash or None, 'dirty': bool or None} of the git checkout holding path.

    None where path is not a git checkout or git is missing. Dirty: tracked changes or
    untracked files that .gitignore does not cover."""

    def git(*args):
        return subprocess.run(["git", "--no-optional-locks", "-C", str(path), *args], capture_output=True, text=True, timeout=60)

    try:
        head = git("rev-parse", "--short=12", "HEAD")
        status = git("status", "--porcelain")
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    if head.returncode or status.returncode:
        return {"commit": None, "dirty": None}
    return {"commit": head.stdout.strip(), "dirty": bool(status.stdout.strip())}


def provenance_tex(figures, git):
    """TeX defining ``\\provline{name}`` for every figure and the title page's commit line."""
    out = []
    for f in figures:
        sections = ", ".join(f["sections"])
        out.append(f"\\expandafter\\def\\csname prov@{f['name']}\\endcsname{{rule \\texttt{{{tex_escape(f['rule'])}}}"
                   f" $\\cdot$ config {tex_escape(sections)} \\texttt{{{f['hash']}}}}}\n")
    if git["commit"] is None:
        commit = "an unknown commit (not a git checkout)"
    else:
        state = "with uncommitted changes (dirty)" if git["dirty"] else "clean"
        commit = f"commit \\texttt{{{git['commit']}}}, working tree {state}"
    out.append(f"\\newcommand{{\\WorkflowCommit}}{{{commit}}}\n")
    return "".join(out)


# ---- TeX formatting


def tex_escape(s):
    """Text safe in TeX's text mode."""
    rep = {"\\": r"\textbackslash{}", "_": r"\_", "%": r"\%", "&": r"\&", "#": r"\#", "$": r"\$", "{": r"\{", "}": r"\}",
           "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
    return "".join(rep.get(c, c) for c in str(s))


def fmt(x, digits=3):
    """A number for the text: 3 significant digits, thousands grouped, powers of ten for very
    large or small values; ``n/a`` for None or NaN."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    if isinstance(x, (bool,)) or (isinstance(x, int) and abs(x) < 10**6):
        return group(x)
    x = float(x)
    if x == 0:
        return "0"
    if abs(x) >= 1e6 or abs(x) < 1e-3:
        mant, exp = f"{x:.{digits - 1}e}".split("e")
        return f"${mant}\\times10^{{{int(exp)}}}$"
    if abs(x) >= 10 ** (digits - 1):
        return group(x)
    return f"{x:.{digits}g}" if abs(x) >= 1 else f"{x:.{digits - 1 - math.floor(math.log10(abs(x)))}f}".rstrip("0").rstrip(".")


def group(n):
    """A count, rounded to the nearest integer (a median or mean may fall between two), with
    thousands separated the TeX way: 10{,}500."""
    return f"{round(float(n)):,}".replace(",", "{,}")


def macros(values, flags):
    """\\val{key} for every number and \\if<flag> switches (set true or false)."""
    out = ["\\newcommand{\\val}[1]{\\ifcsname cd@#1\\endcsname\\csname cd@#1\\endcsname"
           "\\else\\PackageError{cosmodiff}{no generated number #1}{}\\fi}\n"]
    for k, v in values.items():
        out.append(f"\\expandafter\\def\\csname cd@{k}\\endcsname{{{v}}}\n")
    for k, v in flags.items():
        out.append(f"\\newif\\if{k}\\{k}{'true' if v else 'false'}\n")
    return "".join(out)


def tabular(columns, header, rows, footer=()):
    """A booktabs tabular: ``columns`` (e.g. 'rrr'), header lines, body rows and footer rows
    (lists of cell strings, already TeX)."""
    def lines(cells_rows):
        return "".join(" & ".join(r) + " \\\\\n" for r in cells_rows)

    head = "".join(h + " \\\\\n" for h in header)
    foot = "\\midrule\n" + lines(footer) if footer else ""
    return (f"\\begin{{tabular}}{{{columns}}}\n\\toprule\n" + head + "\\midrule\n" + lines(rows) + foot
            + "\\bottomrule\n\\end{tabular}\n")


# ---- tables


def checkpoint_table(summaries, selected):
    """Every checkpoint of both stages: mean statistics over the validation points, the
    selected one in bold. summaries: stage -> select_checkpoint's summary DataFrame;
    selected: stage -> selected iteration."""
    rows = []
    for stage, df in summaries.items():
        for r in df.itertuples():
            cells = [stage, group(r.iteration), fmt(r.chi2_samples), fmt(r.chi2_sims), fmt(r.chi2_log_samples),
                     fmt(r.chi2_log_sims), fmt(r.abs_density_z), fmt(r.pdf_w1_dex)]
            if r.iteration == selected[stage]:
                cells = [f"\\textbf{{{c}}}" for c in cells]
            rows.append(cells)
    header = [r"& & \multicolumn{2}{c}{$\chi^2$ of $\delta$} & \multicolumn{2}{c}{$\chi^2$ of $\log_{10}\Sigma$} & &",
              r"stage & iteration & samples & sims & samples & sims & $|z_\rho|$ & $W_1$ (dex)"]
    return tabular("lrrrrrrr", header, rows)


def sampler_cost_table(costs):
    """Fidelity against cost per sampler setting (sampler_cost's table, validation.COST_COLUMNS)."""
    rows = [[SAMPLER_TEX[r.sampler], "--" if r.spacing == "-" else tex_escape(r.spacing), group(r.evaluations),
             fmt(r.seconds_per_map), fmt(r.chi2_samples), fmt(r.chi2_log_samples), fmt(r.abs_density_z), fmt(r.pdf_w1_dex)]
            for r in costs.itertuples()]
    header = [r"& & evaluations & seconds & \multicolumn{2}{c}{$\chi^2$ of} & &",
              r"sampler & grid & per map & per map & $\delta$ & $\log_{10}\Sigma$ & $|z_\rho|$ & $W_1$ (dex)"]
    return tabular("llrrrrrr", header, rows)


def sampler_cost_numbers(costs, config):
    """The sampler-cost run: its checkpoint, points and maps, and the simulations' own chi2."""
    c = config["sampler_cost"]
    return {"cost_stage": {"pretrain": "pretraining", "finetune": "fine-tuned"}[c["stage"]], "cost_points": c["n_points"],
            "cost_samples": c["n_samples"], "cost_chi2_sims": fmt(costs["chi2_sims"].mean()),
            "cost_chi2_log_sims": fmt(costs["chi2_log_sims"].mean())}


def chi2_table(table):
    """The selected fine-tuned checkpoint per validation point (validate_checkpoint's table)."""
    rows = [[str(r.sim), f"{r.omega_m:.3f}", f"{r.sigma_8:.3f}", fmt(r.chi2_samples), fmt(r.chi2_sims),
             fmt(r.chi2_log_samples), fmt(r.chi2_log_sims), f"{r.density_z:+.2f}", fmt(r.pdf_w1_dex)]
            for r in table.itertuples()]
    mean = ["mean", "", "", *(fmt(table[c].mean()) for c in ("chi2_samples", "chi2_sims", "chi2_log_samples", "chi2_log_sims")),
            "", fmt(table["pdf_w1_dex"].mean())]
    header = [r"& & & \multicolumn{2}{c}{$\chi^2$ of $\delta$} & \multicolumn{2}{c}{$\chi^2$ of $\log_{10}\Sigma$} & &",
              r"simulation & $\Omega_m$ & $\sigma_8$ & samples & sims & samples & sims & $z_\rho$ & $W_1$ (dex)"]
    return tabular("rrrrrrrrr", header, rows, footer=[mean])


def inference_table(df, exact, max_rows=12):
    """Per test field: truth, posterior mean +- std and z of each parameter (and the exact
    posterior's where it exists); the first ``max_rows`` fields."""
    rows = []
    for r in df.head(max_rows).to_dict("records"):
        cells = [str(int(r["field"])), str(int(r["sim"]))]
        for p in ("omega_m", "sigma_8"):
            cells += [f"{r[p + '_truth']:.3f}", f"{r[p + '_mean']:.3f} $\\pm$ {r[p + '_std']:.3f}", f"{r[p + '_z']:+.2f}"]
            if exact:
                cells.append(f"{r['exact_' + p + '_mean']:.3f} $\\pm$ {r['exact_' + p + '_std']:.3f}")
        rows.append(cells)
    n = 4 if exact else 3
    header = [f"& & \\multicolumn{{{n}}}{{c}}{{$\\Omega_m$}} & \\multicolumn{{{n}}}{{c}}{{$\\sigma_8$}}",
              "field & sim" + (" & truth & network & $z$" + (" & exact" if exact else "")) * 2]
    return tabular("rr" + "rrr" * 2 + ("r" * 2 if exact else ""), header, rows)


def coverage_table(cov):
    """Fraction of test fields whose truth lies in the 68% / 95% intervals, z-score moments."""
    rows = [[PARAM_TEX[p], fmt(cov[f"{p}_coverage68"]), fmt(cov[f"{p}_coverage95"]), f"{cov[f'{p}_mean_z']:+.2f}",
             fmt(cov[f"{p}_rms_z"])] for p in PARAM_TEX]
    if "hpd_coverage68" in cov:
        rows.append(["2D HPD region", fmt(cov["hpd_coverage68"]), fmt(cov["hpd_coverage95"]), "", ""])
    foot = [["calibrated", f"0.68 $\\pm$ {fmt(cov['se68'])}", f"0.95 $\\pm$ {fmt(cov['se95'])}", "0", "1"]]
    return tabular("lrrrr", ["& 68\\% & 95\\% & mean $z$ & rms $z$"], rows, footer=foot)


def oracle_table(df):
    """The exact denoiser in the potential: per method, mean |shift| of the posterior mean in
    exact sigmas and mean width ratio over the checked fields, evaluations per grid point."""
    g = df.groupby("method", sort=False)
    rows = []
    for method, d in g:
        rows.append([tex_escape(method), fmt(d["shift_omega_m"].abs().mean()), fmt(d["shift_sigma_8"].abs().mean()),
                     fmt(d["width_omega_m"].mean()), fmt(d["width_sigma_8"].mean()), group(d["evaluations"].mean())])
    header = [r"& \multicolumn{2}{c}{mean $|$shift$|$ ($\sigma$)} & \multicolumn{2}{c}{width ratio} &",
              r"method & $\Omega_m$ & $\sigma_8$ & $\Omega_m$ & $\sigma_8$ & evaluations"]
    return tabular("lrrrrr", header, rows)


def targets_table(df):
    """likelihood_summary's targets: value of the network (and the exact denoiser), range, pass."""
    rows = []
    for r in df.to_dict("records"):
        ex = r.get("exact_denoiser")
        rows.append([tex_escape(r["target"]).replace("|", "$|$"), PARAM_TEX.get(r["param"], tex_escape(r["param"])),
                     f"[{fmt(r['low'])}, {fmt(r['high'])}]", fmt(r["network"]),
                     "" if ex is None or (isinstance(ex, float) and math.isnan(ex)) else fmt(ex),
                     "yes" if bool(r["network_pass"]) else "\\textbf{no}"])
    return tabular("llrrrl", ["target & & range & network & exact denoiser & met"], rows)


def comparison_table(df):
    """The baselines comparison (rule comparison's comparison.csv): per method and parameter
    the median relative error of the mean, median width, 68/95% coverage and mean |z|; the
    distance to the exact posterior; the cost per field."""
    rows = []
    for r in df.to_dict("records"):
        for k, p in enumerate(("omega_m", "sigma_8")):
            vs = "" if math.isnan(r.get(f"{p}_shift", math.nan)) else f"{fmt(r[f'{p}_shift'], 2)} / {fmt(r[f'{p}_width_ratio'], 3)}"
            cost = "" if k else ("" if math.isnan(r["evaluations"]) else group(r["evaluations"]))
            secs = "" if k else fmt(r["seconds"], 2)
            rows.append([tex_escape(r["method"]) if not k else "", f"{int(r['n'])}" if not k else "", PARAM_TEX[p],
                         fmt(100 * r[f"{p}_rel_error"], 2) + "\\%", fmt(r[f"{p}_width"], 2),
                         f"{fmt(r[f'{p}_coverage68'], 2)} / {fmt(r[f'{p}_coverage95'], 2)}", fmt(r[f"{p}_mean_abs_z"], 2),
                         vs, cost, secs])
    header = [r"method & fields & & rel.\ error & width & coverage 68/95 & $|z|$ & vs exact: shift / width & "
              r"evaluations & seconds"]
    return tabular("llrrrrrrrr", header, rows)


def ood_table(df):
    """The out-of-distribution summary (rule comparison's): per set the model check's median
    |z| and flag rate, and the diffusion posterior's and NPE's sigma_8 95% coverage and mean z."""
    rows = []
    for r in df.to_dict("records"):
        name = tex_escape(r["set"]) + (f" ({fmt(r['noise_dex'], 2)} dex)" if r["noise_dex"] else "")
        rows.append([name, f"{int(r['n'])}", fmt(r["check_z"], 2), fmt(r["flagged"], 2),
                     fmt(r["diffusion_sigma_8_mean_z"], 2), fmt(r["diffusion_sigma_8_coverage95"], 2),
                     fmt(r["npe_sigma_8_mean_z"], 2), fmt(r["npe_sigma_8_coverage95"], 2)])
    header = [r"& & \multicolumn{2}{c}{model check} & \multicolumn{2}{c}{diffusion, $\sigma_8$} & "
              r"\multicolumn{2}{c}{NPE, $\sigma_8$}",
              r"set & fields & median $z$ & flagged & mean $z$ & 95\% & mean $z$ & 95\%"]
    return tabular("lrrrrrrr", header, rows)


def baseline_numbers(config, table, sbc):
    """Generated numbers of the baselines paragraph: the cheap scan's design and cost and its
    distance to the exact posterior, NUTS's fields and cost, NPE's SBC coverage."""
    from .inference.calibration import METHODS
    from .inference.settings import InferenceSettings

    cheap = InferenceSettings.from_dict({**config["inference"], **config["baselines"]["cheap"]})
    coarse = cheap.coarse_settings()
    T = int(config["diffusion"]["timesteps"])
    out = {"local_n_coarse": cheap.n_coarse, "local_n_fine": cheap.n_fine, "local_n_sigma": fmt(cheap.n_sigma, 2),
           "local_coarse_per_theta": coarse.evaluations_per_theta(T), "local_fine_per_theta": cheap.evaluations_per_theta(T)}
    t = table.set_index("method")
    for key in ("grid", "local", "mcmc", "npe"):
        if METHODS[key] not in t.index:
            continue
        r = t.loc[METHODS[key]]
        out[f"{key}_fields"] = int(r["n"])
        if not math.isnan(r["evaluations"]):
            out[f"{key}_evaluations"] = group(r["evaluations"])
        if not math.isnan(r.get("evaluations_per_ess", math.nan)):
            out[f"{key}_evaluations_per_ess"] = group(r["evaluations_per_ess"])
        for p in ("omega_m", "sigma_8"):
            out[f"{key}_shift_{p}"] = fmt(r[f"{p}_shift"], 2)
            out[f"{key}_width_{p}"] = fmt(r[f"{p}_width_ratio"], 3)
    if METHODS["mcmc"] in t.index:  # NUTS against the grid of the same U (calibration.chain_agreement)
        r = t.loc[METHODS["mcmc"]]
        for p in ("omega_m", "sigma_8"):
            out[f"mcmc_same_u_mcse_{p}"] = fmt(r[f"same_u_{p}_mcse"], 2)
            out[f"mcmc_same_u_within2_{p}"] = fmt(r[f"same_u_{p}_within2"], 2)
            out[f"mcmc_same_u_width_{p}"] = fmt(r[f"same_u_{p}_width"], 3)
    for p in ("omega_m", "sigma_8"):
        out[f"npe_sbc68_{p}"] = fmt(sbc[f"{p}_coverage68"], 2)
        out[f"npe_sbc95_{p}"] = fmt(sbc[f"{p}_coverage95"], 2)
    out["npe_sbc_fields"] = int(sbc["n_fields"])
    return out


# ---- the PDF


def tex_engine():
    """latexmk, else pdflatex, else None."""
    return shutil.which("latexmk") or shutil.which("pdflatex")


def build_pdf(outdir, main="main.tex"):
    """Build outdir/main.pdf; returns the engine's output (the last 20,000 characters).
    Raises :class:`TexMissing` (no engine) or RuntimeError (TeX failed)."""
    engine = tex_engine()
    if engine is None:
        raise TexMissing(
            "no TeX engine (latexmk or pdflatex) on PATH, but the config asks for the paper's PDF (paper.pdf: true). "
            f"Install TeX Live: `apt-get install {TEX_PACKAGES}` (Debian/Ubuntu, as root; `make demo` and `make test` "
            "do this where they can), or set paper.pdf: false to build only the TeX sources."
        )
    outdir = Path(outdir)
    if Path(engine).name == "latexmk":
        runs = [[engine, "-pdf", "-interaction=nonstopmode", "-halt-on-error", main]]
    else:
        runs = [[engine, "-interaction=nonstopmode", "-halt-on-error", main]] * 3
    log = ""
    for cmd in runs:
        done = subprocess.run(cmd, cwd=outdir, capture_output=True, text=True)
        log += done.stdout + done.stderr
        if done.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed in {outdir} (exit {done.returncode}):\n{log[-3000:]}")
    return log[-20000:]


# ---- numbers and switches of the text

SAMPLER_TEX = {"ancestral": "ancestral (DDPM)", "ddim": "DDIM", "dpm2m": "DPM-Solver++(2M)"}
SELECT_TEX = {
    "chi2": r"the mean reduced $\chi^2$ of $P(k)$ of $\delta=\Sigma/\bar\Sigma-1$ (the authors' statistic)",
    "chi2_log": r"the mean reduced $\chi^2$ of $P(k)$ of $\log_{10}\Sigma$",
    "pdf_w1": "the mean Wasserstein-1 distance between pixel PDFs",
    "density_z": "the mean $|z|$ of the mean log-density",
    "last": r"the mean reduced $\chi^2$ of $P(k)$ of $\log_{10}\Sigma$",
}
ESTIMATOR_TEX = {
    "full": "an unbiased stratified estimate of the whole bound",
    "truncated": r"the authors' truncated sum over $t\le t_{\max}$",
    "exact": "the whole bound, every timestep summed",
}


def data_numbers(config, counts, norm):
    """The data section. counts: split -> (maps, simulations); norm: (min, max) log10."""
    d, p = config["data"], config["prepare"]
    if d["source"] == "synthetic":
        gen = d["synthetic"]["generator"]
        desc = "synthetic lognormal maps" if gen == "lognormal" else "synthetic particle-mesh maps"
    else:
        desc = "the CAMELS Multifield Dataset (Mcdm, IllustrisTNG LH, $z=0$)"
    n_maps = sum(c[0] for c in counts.values())
    return {
        "run": tex_escape(config["run"]), "data_description": desc, "n_maps": group(n_maps),
        "n_sims": group(sum(c[1] for c in counts.values())),
        **{f"n_{s}_sims": group(counts[s][1]) for s in ("train", "val", "test")},
        "native": d["resolution"], "low": p["low_resolution"], "log_floor": fmt(float(p["log_floor"])),
        "norm_min": f"{norm[0]:.2f}", "norm_max": f"{norm[1]:.2f}",
        "norm_source": "the training split's range" if p["norm_range"] is None else "a fixed range from the config",
        "downsample": tex_escape(p["downsample"]), "n_synthetic_sims": group(d["synthetic"]["n_sims"]),
    }


def selection_rule(select_by):
    """The sentence that says which checkpoint validation keeps (config validation.select_by)."""
    if select_by == "last":
        return ("The last checkpoint is kept, with " + SELECT_TEX["last"] + " reported beside it: once the samples "
                "match the simulations that statistic stops ranking the checkpoints, while the likelihood still improves")
    return f"The checkpoint with the lowest {SELECT_TEX[select_by]} is kept"


def training_numbers(config, selections, summaries, n_params):
    """Model and training: both stages, the checkpoints and the selection."""
    m, dif = config["model"], config["diffusion"]
    out = {
        "n_params": group(n_params), "base_channels": m["base_channels"], "num_res_blocks": m["num_res_blocks"],
        "channel_mults": "(" + ", ".join(str(c) for c in m["channel_mults"]) + ")",
        "conditioning": "a per-channel bias (the authors')" if m["conditioning"] == "bias" else "a FiLM scale and shift",
        "schedule": tex_escape(dif["schedule"]), "timesteps": group(dif["timesteps"]), "loss": tex_escape(dif["loss"]),
        "prediction": {"eps": r"the noise $\epsilon$", "v": r"$v=\sqrt{\bar\alpha}\epsilon-\sqrt{1-\bar\alpha}x_0$",
                       "x0": "the clean map $x_0$"}[dif["prediction"]],
        "selection_rule": selection_rule(config["validation"]["select_by"]),
        "validation_points": config["validation"]["n_points"], "validation_samples": config["validation"]["n_samples"],
        "validation_sampler": SAMPLER_TEX[config["validation"]["sampler"]], "validation_steps": config["validation"]["steps"],
    }
    for stage in ("pretrain", "finetune"):
        c, sel, summ = config[stage], selections[stage], summaries[stage]
        crit = sel["criterion"]
        out.update({
            f"{stage}_iterations": group(c["iterations"]), f"{stage}_batch": c["batch_size"], f"{stage}_lr": fmt(c["lr"]),
            f"{stage}_ema": fmt(c["ema_decay"]), f"{stage}_checkpoints": len(summ), f"{stage}_every": group(c["checkpoint_every"]),
            f"{stage}_selected": group(sel["iteration"]), f"{stage}_criterion": fmt(sel[crit]),
            f"{stage}_criterion_last": fmt(summ.sort_values("iteration")[crit].iloc[-1]),
        })
    return out


def emulation_numbers(table, statistics, sampling_attrs, config):
    """The selected checkpoint's validation table and the test points' statistics."""
    out = {f"val_{c}": fmt(table[c].mean()) for c in ("chi2_samples", "chi2_sims", "chi2_log_samples", "chi2_log_sims", "pdf_w1_dex")}
    out["val_max_abs_density_z"] = fmt(table["density_z"].abs().max())
    out.update({f"test_{c}": fmt(statistics[c].mean()) for c in
                ("chi2_samples", "chi2_sims", "chi2_log_samples", "chi2_log_sims", "pdf_w1_dex")})
    out["test_max_abs_density_z"] = fmt(statistics["density_z"].abs().max())
    out["test_points"] = len(statistics)
    ratio = table["chi2_log_samples"].mean() / table["chi2_log_sims"].mean()
    out["val_chi2_log_ratio"] = fmt(ratio)
    s = config["sampling"]
    out.update({"sampling_sampler": SAMPLER_TEX[str(sampling_attrs["sampler"])], "sampling_steps": s["steps"],
                "sampling_evaluations": group(sampling_attrs["evaluations_per_map"]), "sampling_samples": s["n_samples"],
                "sampling_spacing": tex_escape(s["spacing"])})
    return out, {"emulatormatches": ratio <= 1.3}


def inference_numbers(config, df, cov, exact):
    """Posteriors of the test fields: settings, coverage, z-scores, cost; against the exact
    posterior where it exists."""
    from .inference.settings import InferenceSettings  # no torch

    i = InferenceSettings.from_dict(config["inference"])
    out = {
        "inference_stage": "pretrained" if i.stage == "pretrain" else "fine-tuned",
        "inference_resolution": config["prepare"]["low_resolution"] if i.stage == "pretrain" else config["data"]["resolution"],
        "n_fields": group(cov["n"]), "estimator": ESTIMATOR_TEX[i.estimator],
        "scan": ("a coarse grid over the prior, then up to " + str(i.max_refine) + " finer grids around the mode")
        if i.scan == "coarse_to_fine" else f"a {i.n_grid}$^2$ grid within $\\pm${fmt(i.half_width)} of the truth",
        "evaluations_per_field": group(cov["evaluations_per_field"]),
        "seconds_per_field": fmt(cov["seconds_per_field"]), "se68": fmt(cov["se68"]), "se95": fmt(cov["se95"]),
        "median_std_omega_m": fmt(df["omega_m_std"].median()), "median_std_sigma_8": fmt(df["sigma_8_std"].median()),
    }
    calibrated = True
    for p in PARAM_TEX:
        for m, se in ((68, cov["se68"]), (95, cov["se95"])):
            out[f"cov{m}_{p}"] = fmt(cov[f"{p}_coverage{m}"])
            calibrated &= abs(cov[f"{p}_coverage{m}"] - m / 100) <= 2 * se
        out[f"mean_z_{p}"] = f"{cov[f'{p}_mean_z']:+.2f}"
        out[f"rms_z_{p}"] = fmt(cov[f"{p}_rms_z"])
        if exact:
            out[f"exact_shift_{p}"] = fmt(cov[f"vs_exact_mean_abs_shift_{p}"])
            out[f"exact_width_{p}"] = fmt(cov[f"vs_exact_median_width_{p}"])
            out[f"exact_abs_z_{p}"] = fmt(cov[f"exact_mean_abs_z_{p}"])
    return out, {"coveragecalibrated": calibrated}


def diagnostic_numbers(oracle, targets):
    """The oracle check (exact denoiser in the potential) and the targets of the bound."""
    out, flags = {}, {}
    if oracle is not None:
        out["oracle_fields"] = oracle["field"].nunique()
        for method, key in (("bound", "bound"), ("full", "full"), ("truncated", "truncated")):
            d = oracle[oracle["method"] == method]
            if len(d):
                out[f"oracle_{key}_shift"] = fmt(max(d["shift_omega_m"].abs().max(), d["shift_sigma_8"].abs().max()))
    if targets is not None:
        out["targets_met"] = int(targets["network_pass"].astype(bool).sum())
        out["targets_total"] = len(targets)
        out["targets_checkpoint"] = group(targets["checkpoint"].iloc[0])
        flags["targetsmet"] = bool(targets["network_pass"].astype(bool).all())
    return out, flags


def switches(config, flags, *parts):
    """The text's switches: data source, the rules' flags, and those the numbers set."""
    source = config["data"]["source"]
    lognormal = source == "synthetic" and config["data"]["synthetic"]["generator"] == "lognormal"
    out = {"synthetic": source == "synthetic", "lognormal": lognormal, "nbody": source == "synthetic" and not lognormal,
           "finetuneinference": config["inference"]["stage"] == "finetune", "targetsmet": False, "baselines": False, "mcmc": False, **flags}
    for p in parts:
        out.update(p)
    return out


def write_sources(outdir, config, flags, figures, git, res):
    """Write outdir/generated/*.tex (numbers, switches, provenance, tables) from a run's results.

    flags:   exact, oracle, diagnostic, summary, baselines (the rules' switches).
    figures: :func:`figure_list`; git: :func:`git_state`.
    res:     the results, read: counts and norm (:func:`data_numbers`), selections and
             summaries (stage -> selected.json dict / summary DataFrame), table (the
             selected fine-tuned checkpoint's validation table), statistics (plot_emulation's
             table), sampling_attrs (samples.h5 attributes), sampler_cost (sampler_cost's
             table), inference (calibration's
             summary, sorted by field), coverage (its coverage.json), oracle and targets
             (DataFrames or None), n_params; where rule comparison runs also comparison and
             ood (its tables) and npe_sbc (rule npe's SBC .json).
    Returns the switches.
    """
    values = data_numbers(config, res["counts"], res["norm"])
    values.update(training_numbers(config, res["selections"], res["summaries"], res["n_params"]))
    emu, emu_flags = emulation_numbers(res["table"], res["statistics"], res["sampling_attrs"], config)
    inf, inf_flags = inference_numbers(config, res["inference"], res["coverage"], flags["exact"])
    diag, diag_flags = diagnostic_numbers(res["oracle"], res["targets"])
    values.update({**emu, **inf, **diag, **sampler_cost_numbers(res["sampler_cost"], config)})
    if res.get("comparison") is not None:
        values.update(baseline_numbers(config, res["comparison"], res["npe_sbc"]))
        diag_flags["mcmc"] = "mcmc_fields" in values
    sw = switches(config, flags, emu_flags, inf_flags, diag_flags)
    gen = Path(outdir) / "generated"
    gen.mkdir(parents=True, exist_ok=True)
    files = {
        "numbers": macros(values, sw),
        "provenance": provenance_tex(figures, git),
        "checkpoints_table": checkpoint_table(res["summaries"], {s: v["iteration"] for s, v in res["selections"].items()}),
        "chi2_table": chi2_table(res["table"]),
        "sampler_cost_table": sampler_cost_table(res["sampler_cost"]),
        "inference_table": inference_table(res["inference"], flags["exact"]),
        "coverage_table": coverage_table(res["coverage"]),
        "oracle_table": oracle_table(res["oracle"]) if res["oracle"] is not None else None,
        "targets_table": targets_table(res["targets"]) if res["targets"] is not None else None,
        "comparison_table": comparison_table(res["comparison"]) if res.get("comparison") is not None else None,
        "ood_table": ood_table(res["ood"]) if res.get("ood") is not None else None,
    }
    for name, text in files.items():
        if text is not None:
            (gen / f"{name}.tex").write_text(text)
    return sw
