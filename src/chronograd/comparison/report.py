"""Tables, CSV and files of ``chronograd compare`` and ``chronograd bench`` results.

Everything here reads the JSON documents the commands return (see
:mod:`chronograd.comparison.side_by_side` and :mod:`chronograd.comparison.scaling` for their
schemas), so a table or a figure can be rebuilt from a saved file.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from chronograd.comparison.common import NOT_INSTALLED, fmt

# -- chronograd compare ------------------------------------------------------------------------
CSV_FIELDS = (
    "rule", "status", "final_metric", "best_metric", "cosine_init", "rel_error_init",
    "cosine_end", "rel_error_end", "ms_per_step", "peak_memory_mib", "seconds", "reason",
)  # fmt: skip


def _align(entry: Mapping[str, Any], phase: str, field: str) -> Any:
    al = entry.get("alignment") or {}
    return ((al.get(phase) or {}).get("all") or {}).get(field)


def compare_rows(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One flat row per rule (the CSV)."""
    out = []
    for e in doc["rules"]:
        mem = e.get("peak_memory_bytes")
        out.append(
            {
                "rule": e["name"],
                "status": e["status"],
                "final_metric": e["final_metric"],
                "best_metric": e["best_metric"],
                "cosine_init": _align(e, "init", "cosine"),
                "rel_error_init": _align(e, "init", "rel_error"),
                "cosine_end": _align(e, "end", "cosine"),
                "rel_error_end": _align(e, "end", "rel_error"),
                "ms_per_step": e["ms_per_step"],
                "peak_memory_mib": None if mem is None else mem / 2**20,
                "seconds": e["seconds"],
                "reason": e["reason"] or e.get("memory_error") or "",
            }
        )
    return out


def compare_table(doc: Mapping[str, Any]) -> str:
    """The comparison as a Markdown table; skipped rules and their reasons are listed below it
    (rules that are not installed, in one line)."""
    metric = doc["metric"]["name"]
    lines = [
        f"| rule | val {metric} | cos init | rel err init | cos end | rel err end | ms/step | peak MiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    notes, missing = [], []
    for r in compare_rows(doc):
        if r["status"] != "ok" and str(r["reason"]).startswith(NOT_INSTALLED):
            missing.append(r["rule"])
            continue
        if r["status"] != "ok":
            lines.append(f"| {r['rule']} | {r['status']} | - | - | - | - | - | - |")
            notes.append(f"- {r['rule']}: {r['status']}: {r['reason']}")
            continue
        mib = r["peak_memory_mib"]
        lines.append(
            f"| {r['rule']} | {fmt(r['final_metric'], '.3f')} | {fmt(r['cosine_init'])} | "
            f"{fmt(r['rel_error_init'])} | {fmt(r['cosine_end'])} | {fmt(r['rel_error_end'])} | "
            f"{fmt(r['ms_per_step'], '.3f')} | {fmt(mib, '.1f')} |"
        )
        if r["reason"]:
            notes.append(f"- {r['rule']}: memory not measured: {r['reason']}")
    if missing:
        notes.append(f"- {NOT_INSTALLED}: {', '.join(missing)}")
    chance = doc["metric"]["chance"]
    return "\n".join(lines + (["", *notes] if notes else []) + [f"\n(chance {metric}: {chance})"])


def write_compare(doc: Mapping[str, Any], outdir: Path) -> None:
    """``compare.json``, ``compare.csv``, ``compare.md``, ``learning_curves.png``, ``alignment.png``."""
    from chronograd.viz import alignment_bars, learning_curves

    (outdir / "compare.json").write_text(json.dumps(doc, indent=2))
    with open(outdir / "compare.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        w.writeheader()
        for r in compare_rows(doc):
            w.writerow({k: "" if v is None else v for k, v in r.items()})
    (outdir / "compare.md").write_text(compare_table(doc) + "\n")
    ok = [e for e in doc["rules"] if e["status"] == "ok"]
    if ok:
        cfg = doc["config"]
        title = f"{cfg['task']} / {cfg['cell']}({cfg['hidden']})"
        learning_curves(
            {e["name"]: e["history"] for e in ok}, outdir / "learning_curves.png",
            metric=doc["metric"]["name"], chance=doc["metric"]["chance"], title=title,
        )  # fmt: skip
        alignment_bars(
            {e["name"]: {p: e["alignment"][p]["all"] for p in ("init", "end")} for e in ok},
            outdir / "alignment.png", title=f"{title}: alignment with BPTT",
        )  # fmt: skip


# -- chronograd bench --------------------------------------------------------------------------
def bench_table(doc: Mapping[str, Any]) -> str:
    """The measurements as a Markdown table (skipped points and rules listed below it)."""
    f = doc["floors"]
    lines = [
        f"Floors on {doc['config']['device']}: streaming bandwidth {f['bandwidth_gbs']:.1f} GB/s, "
        f"dense matmul {f['matmul_gflops']:.1f} GFLOP/s. B={doc['config']['batch']}.",
        "",
        "| rule | N | T | ms/step | x forward | GFLOP/s | % matmul floor | GB/s | % bandwidth "
        "| peak MiB | mem x forward |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    notes = [f"- {r['name']}: skipped: {r['reason']}" for r in doc["rules"] if r["status"] != "ok"]
    for p in sorted(
        doc["points"], key=lambda p: (p["rule"] != "forward", p["rule"], p["hidden"], p["steps"])
    ):
        if p["status"] != "ok":
            notes.append(
                f"- {p['rule']} N={p['hidden']} T={p['steps']}: {p['status']}: {p['reason']}"
            )
            continue
        mem = p["peak_memory_bytes"]
        pct = lambda v: None if v is None else 100 * v  # noqa: E731
        lines.append(
            f"| {p['rule']} | {p['hidden']} | {p['steps']} | {fmt(p['ms_per_step'], '.4f')} | "
            f"{fmt(p['vs_forward'], '.2f')} | {fmt(p['gflops'], '.2f')} | "
            f"{fmt(pct(p['matmul_fraction']), '.1f')} | {fmt(p['gbs'], '.2f')} | "
            f"{fmt(pct(p['bandwidth_fraction']), '.1f')} | "
            f"{fmt(None if mem is None else mem / 2**20, '.1f')} | {fmt(p['memory_vs_forward'], '.2f')} |"
        )
    return "\n".join(lines + (["", *notes] if notes else []))


def write_bench(doc: Mapping[str, Any], outdir: Path) -> None:
    """``bench.json``, ``bench.md`` and the log-log plots ``scaling_T.png``, ``scaling_N.png``."""
    from chronograd.viz import scaling

    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "bench.json").write_text(json.dumps(doc, indent=2))
    (outdir / "bench.md").write_text(bench_table(doc) + "\n")
    cfg = doc["config"]
    for sweep, key, label, fixed in (
        ("T", "steps", "T (steps)", f"N={cfg['at_hidden']}"),
        ("N", "hidden", "N (hidden units)", f"T={cfg['at_steps']}"),
    ):
        pts = [p for p in doc["points"] if sweep in p["sweeps"] and p["status"] == "ok"]
        panels: dict[str, dict[str, list[tuple[float, float]]]] = {
            "ms per step": {},
            "peak memory (MiB)": {},
            "fraction of the machine's limit": {},
        }
        for p in pts:
            x = p[key]
            panels["ms per step"].setdefault(p["rule"], []).append((x, p["ms_per_step"]))
            if p["peak_memory_bytes"]:
                panels["peak memory (MiB)"].setdefault(p["rule"], []).append(
                    (x, p["peak_memory_bytes"] / 2**20)
                )
            frac = max(p["matmul_fraction"] or 0.0, p["bandwidth_fraction"] or 0.0)
            panels["fraction of the machine's limit"].setdefault(p["rule"], []).append((x, frac))
        scaling(
            panels, outdir / f"scaling_{sweep}.png", xlabel=label,
            title=f"{cfg['cell']}, {fixed}, B={cfg['batch']}",
        )  # fmt: skip
