"""Generated includes of the manuscript and, where a TeX engine exists, its PDF (rule `paper`).

Writes <outdir>/generated/numbers.tex (macros for every number in the text) and
chi2_table.tex from the workflow's results, copies paper/main.tex beside them, and runs
latexmk (or pdflatex twice) when one is installed; otherwise it says so in the build log.
"""

import argparse
import datetime
import json
import shutil
import subprocess
from pathlib import Path

import _bootstrap
import h5py
import pandas as pd


def tex_escape(s):
    return str(s).replace("_", r"\_").replace("%", r"\%").replace("&", r"\&")


def macros(values):
    return "".join(f"\\newcommand{{\\{k}}}{{{v}}}\n" for k, v in values.items())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--main", required=True, type=Path, help="paper/main.tex")
    ap.add_argument("--data", required=True, type=Path, help="prepared .h5 at the native resolution")
    ap.add_argument("--pretrain-selection", required=True, type=Path)
    ap.add_argument("--finetune-selection", required=True, type=Path)
    ap.add_argument("--samples", required=True, type=Path)
    ap.add_argument("--settings", required=True, help="JSON: run, data description, iterations")
    ap.add_argument("--outdir", required=True, type=Path)
    ap.add_argument("--build-log", required=True, type=Path)
    ap.add_argument("--pdf", type=Path, default=None, help="expected PDF (only when a TeX engine exists)")
    args = ap.parse_args(argv)
    log = _bootstrap.setup_logging()
    from cosmodiff.emulator import read_samples
    from cosmodiff.train import load_checkpoint
    from cosmodiff.unet import UNet, count_parameters

    s = json.loads(args.settings)
    pre = json.loads(args.pretrain_selection.read_text())
    fin = json.loads(args.finetune_selection.read_text())
    table = pd.read_csv(Path(fin["checkpoint"].replace("/models/", "/validation/")).with_suffix(".csv"))
    ckpt = load_checkpoint(fin["checkpoint"])
    n_params = count_parameters(UNet.from_config(ckpt["model_config"]))
    with h5py.File(args.data, "r") as f:
        n_maps = sum(len(f[k]["sim"]) for k in ("train", "val", "test"))
    _, _, sattrs = read_samples(args.samples, log10=True)
    gen = args.outdir / "generated"
    gen.mkdir(parents=True, exist_ok=True)
    (gen / "numbers.tex").write_text(macros({
        "RunName": tex_escape(s["run"]),
        "BuildDate": datetime.date.today().isoformat(),
        "DataDescription": tex_escape(s["data"]),
        "NMaps": f"{n_maps:,}".replace(",", "{,}"),
        "NSims": n_maps // 15,
        "NativeResolution": ckpt["resolution"],
        "LowResolution": s["low_resolution"],
        "NParameters": f"{n_params:,}".replace(",", "{,}"),
        "PretrainIterations": s["pretrain_iterations"],
        "FinetuneIterations": s["finetune_iterations"],
        "PretrainSelected": pre["iteration"],
        "FinetuneSelected": fin["iteration"],
        "ChiSamples": f"{table.chi2_samples.mean():.3g}",
        "ChiSims": f"{table.chi2_sims.mean():.3g}",
        "ChiLogSamples": f"{table.chi2_log_samples.mean():.3g}",
        "ChiLogSims": f"{table.chi2_log_sims.mean():.3g}",
        "SelectBy": tex_escape(fin.get("select_by", "chi2")),
        "NValidationPoints": len(table),
        "SamplerName": tex_escape(sattrs["sampler"]),
        "SamplerEvaluations": int(sattrs["evaluations_per_map"]),
    }))
    rows = "".join(
        f"{r.sim} & {r.omega_m:.3f} & {r.sigma_8:.3f} & {r.chi2_samples:.3g} & {r.chi2_sims:.3g} & "
        f"{r.chi2_log_samples:.3g} & {r.chi2_log_sims:.3g} & {r.density_z:+.2f} \\\\\n"
        for r in table.itertuples()
    )
    (gen / "chi2_table.tex").write_text(
        "\\begin{tabular}{rrrrrrrr}\n\\toprule\n& & & \\multicolumn{2}{c}{$\\Sigma/\\bar\\Sigma - 1$} & "
        "\\multicolumn{2}{c}{$\\log_{10}\\Sigma$} & \\\\\nsimulation & $\\Omega_m$ & $\\sigma_8$ & $\\chi^2_{\\rm samples}$ & "
        "$\\chi^2_{\\rm sims}$ & $\\chi^2_{\\rm samples}$ & $\\chi^2_{\\rm sims}$ & $z_\\rho$ \\\\\n\\midrule\n" + rows
        + f"\\midrule\nmean & & & {table.chi2_samples.mean():.3g} & {table.chi2_sims.mean():.3g} & "
        f"{table.chi2_log_samples.mean():.3g} & {table.chi2_log_sims.mean():.3g} & \\\\\n\\bottomrule\n\\end{{tabular}}\n"
    )
    shutil.copyfile(args.main, args.outdir / "main.tex")
    engine = shutil.which("latexmk") or shutil.which("pdflatex")
    if engine is None:
        msg = ("no TeX engine (latexmk or pdflatex) on PATH: wrote the sources and generated includes to "
               f"{args.outdir}, skipped the PDF. Install TeX Live and rerun `snakemake paper` to build it.")
        log.warning(msg)
        args.build_log.write_text(msg + "\n")
        return 0
    cmd = [engine, "-pdf", "-interaction=nonstopmode", "main.tex"] if engine.endswith("latexmk") else [engine, "-interaction=nonstopmode", "main.tex"]
    out = ""
    for _ in range(1 if engine.endswith("latexmk") else 2):
        done = subprocess.run(cmd, cwd=args.outdir, capture_output=True, text=True)
        out += done.stdout[-5000:]
    args.build_log.write_text(out)
    if done.returncode or not (args.outdir / "main.pdf").exists():
        log.error("TeX failed; see %s", args.build_log)
        return 1
    if args.pdf and args.pdf != args.outdir / "main.pdf":
        shutil.copyfile(args.outdir / "main.pdf", args.pdf)
    log.info("built %s", args.outdir / "main.pdf")
    return 0


if __name__ == "__main__":
    _bootstrap.run(main)
