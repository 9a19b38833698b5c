"""What a benchmark run means: the full-context time fitted and extrapolated, speedups, the
issue's goals, and the tables, plot and text of the report.

Everything here works on the JSON document of a run (``<out>/bench.json``) and measures nothing,
so it needs neither torch nor the model.
"""

from __future__ import annotations

from pathlib import Path

from ilre.cli import M, length_label

GIB = 1024 ** 3
MIB = 1024 ** 2

# The goals, checked on every run where the lengths allow.
GOALS = {
    "speedup_8k": 3.0,        # full-context TTFT / ILRe TTFT at 8K
    "speedup_32k": 10.0,      # ... at 32K
    "growth_128k_32k": 4.5,   # ILRe TTFT at 128K / at 32K
    "memory_128k_gib": 1.5,   # ILRe peak RSS at 128K minus the weights
    "prefill_share": 0.5,     # streaming prefill FLOP/s / matmul peak
}


def fit_time(points: list[tuple[int, float]]) -> dict | None:
    """Least-squares t = a*L + b*L^2 with a, b >= 0 over measured (L, seconds) points.

    None with no points. With one point the whole time is put on the quadratic term, and the
    fit says so. Points are weighted by 1/t, so that short and long runs count alike.
    """
    import numpy as np

    pts = [(float(L), float(t)) for L, t in points if t is not None and t > 0]
    if not pts:
        return None
    if len(pts) == 1:
        L, t = pts[0]
        return {"a": 0.0, "b": t / L ** 2, "points": len(pts), "note": "one point: t = b*L^2"}
    X = np.array([[L, L * L] for L, _ in pts])
    y = np.array([t for _, t in pts])
    w = 1.0 / y
    coef, *_ = np.linalg.lstsq(X * w[:, None], y * w, rcond=None)
    a, b = float(coef[0]), float(coef[1])
    if a < 0 or b < 0:  # keep the better one-term fit
        only_b = float(np.sum(X[:, 1] * w * w * y) / np.sum((X[:, 1] * w) ** 2))
        only_a = float(np.sum(X[:, 0] * w * w * y) / np.sum((X[:, 0] * w) ** 2))
        err_b = float(np.sum(((X[:, 1] * only_b - y) * w) ** 2))
        err_a = float(np.sum(((X[:, 0] * only_a - y) * w) ** 2))
        a, b = (0.0, only_b) if err_b <= err_a else (only_a, 0.0)
    return {"a": a, "b": b, "points": len(pts)}


def predict(fit: dict, length: int) -> float:
    """The fitted time at ``length`` tokens."""
    return fit["a"] * length + fit["b"] * length ** 2


def summarise(doc: dict) -> None:
    """Speedups, prefill shares of the matmul peak, and the goals."""
    peak = doc.get("matmul_peak_gflops") or None
    by_len = {}
    for row in doc.get("rows", []):
        full = row.get("full", {})
        for key, suffix in (("ilre", ""), ("ilre_exact", "_exact")):
            ilre = row.get(key, {})
            if ilre.get("status") != "ok":
                continue
            if peak and ilre.get("prefill_gflops_per_s"):
                ilre["prefill_share_of_matmul_peak"] = ilre["prefill_gflops_per_s"] / peak
            ilre["peak_over_weights_bytes"] = ilre["peak_rss_bytes"] - ilre["weights_bytes"]
            if full.get("ttft_s"):
                row["speedup" + suffix] = full["ttft_s"] / ilre["ttft_s"]
                row["speedup_extrapolated"] = bool(full.get("extrapolated"))
        by_len[row["length"]] = row
    goals = doc["goals"]

    def speed_goal(name: str, n: int, suffix: str = "") -> None:
        row = by_len.get(n)
        if row and row.get("speedup" + suffix):
            value = row["speedup" + suffix]
            goals[name + suffix] = {"target": f">= {GOALS[name]}x", "value": round(value, 2),
                                    "holds": value >= GOALS[name], "extrapolated": row["speedup_extrapolated"],
                                    "prefill": row["ilre" + suffix].get("prefill_precision")}

    for suffix in ("", "_exact"):
        speed_goal("speedup_8k", 8192, suffix)
        speed_goal("speedup_32k", 32768, suffix)
    a, b = by_len.get(32768, {}).get("ilre", {}), by_len.get(131072, {}).get("ilre", {})
    if a.get("ttft_s") and b.get("ttft_s"):
        g = b["ttft_s"] / a["ttft_s"]
        goals["growth_128k_32k"] = {"target": f"<= {GOALS['growth_128k_32k']}", "value": round(g, 2),
                                    "holds": g <= GOALS["growth_128k_32k"]}
    if b.get("peak_rss_bytes"):
        over = b["peak_over_weights_bytes"] / GIB
        goals["memory_128k_gib"] = {"target": f"peak <= weights + {GOALS['memory_128k_gib']} GiB",
                                    "value": round(over, 3), "holds": over <= GOALS["memory_128k_gib"]}
    # The share of the fp32 matmul peak means something for the prefill in the model's own
    # precision: the exact rows when there are any (int8 runs count fp32-equivalent FLOPs).
    exact = [r.get(k, {}) for r in doc.get("rows", []) if r["length"] >= 8192 for k in ("ilre", "ilre_exact")]
    shares = [i["prefill_share_of_matmul_peak"] for i in exact
              if i.get("prefill_precision", "model") == "model" and i.get("prefill_share_of_matmul_peak")]
    if shares:
        goals["prefill_share"] = {"target": f">= {GOALS['prefill_share']}", "value": round(min(shares), 3),
                                  "holds": min(shares) >= GOALS["prefill_share"],
                                  "note": "lowest share over lengths >= 8K, prefill in the model's precision"}
    one_m = by_len.get(M, {}).get("ilre", {})
    if one_m:
        goals["one_million"] = {"target": "completes", "holds": one_m.get("status") == "ok",
                                "ttft_s": one_m.get("ttft_s"), "peak_rss_bytes": one_m.get("peak_rss_bytes")}



def table(doc: dict, key: str = "ilre") -> str:
    """The per-length table as Markdown, for ILRe's default rows or ``key='ilre_exact'``."""
    head = ("| context | tokenize s | prefill s | score s | recall s | answer s | ILRe TTFT s | ILRe peak MiB "
            "| full TTFT s | full peak MiB | speedup | prefill tok/s | prefill GFLOP/s | share of mm peak |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    speedup = "speedup" if key == "ilre" else "speedup_exact"
    for row in doc.get("rows", []):
        i, f = row.get(key, {}), row.get("full", {})
        if not i:
            continue
        st = i.get("stages_s", {})
        num = lambda v, p=2: "-" if v is None else f"{v:.{p}f}"  # noqa: E731
        if f.get("extrapolated"):
            full_t = "-" if f.get("ttft_s") is None else f"~{f['ttft_s']:.0f} (extrapolated)"
        else:
            full_t = num(f.get("ttft_s"), 1)
        share = i.get("prefill_share_of_matmul_peak")
        lines.append(
            f"| {row['label']} | {num(st.get('tokenize'))} | {num(st.get('prefill'))} | {num(st.get('score'))} "
            f"| {num(st.get('recall'))} | {num(st.get('answer'))} | {num(i.get('ttft_s'))} "
            f"| {num(i.get('peak_rss_bytes', 0) / MIB if i.get('peak_rss_bytes') else None, 0)} "
            f"| {full_t} | {num(f.get('peak_rss_bytes', 0) / MIB if f.get('peak_rss_bytes') else None, 0)} "
            f"| {num(row.get(speedup), 1)}{'*' if row.get('speedup_extrapolated') else ''} "
            f"| {num(i.get('prefill_tokens_per_s'), 0)} | {num(i.get('prefill_gflops_per_s'), 1)} "
            f"| {'-' if share is None else f'{share:.0%}'} |")
    return "\n".join(lines)


def sweep_table(doc: dict) -> str:
    """The prefill sweep as Markdown, one row per (length, threads, chunk) that ran."""
    lines = ["| context | prefill | threads | chunk | prefill s | tok/s | GFLOP/s |", "|---|---|---|---|---|---|---|"]
    for r in doc.get("sweep", []):
        if r.get("status") == "ok":
            lines.append(f"| {length_label(r['length'])} | {r.get('prefill_precision', 'model')} | {r['threads']} "
                         f"| {r['chunk_size']} | {r['seconds']:.2f} "
                         f"| {r['tokens_per_s']:.0f} | {r['gflops_per_s']:.1f} |")
    return "\n".join(lines)


def plot(doc: dict, path: Path) -> bool:
    """Time to first token against context length, log axes; memory beside it. False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = [r for r in doc.get("rows", []) if r.get("ilre", {}).get("status") == "ok"]
    if not rows:
        return False
    fig, (ax, mx) = plt.subplots(1, 2, figsize=(12, 4.8))
    xs = [r["length"] for r in rows]
    ax.plot(xs, [r["ilre"]["ttft_s"] for r in rows], "o-", color="tab:blue", label="ILRe, time to first token")
    ax.plot(xs, [r["ilre"]["stages_s"]["prefill"] for r in rows], ".:", color="tab:blue", alpha=0.6,
            label="ILRe, streaming prefill alone")
    exact = [(r["length"], r["ilre_exact"]["ttft_s"]) for r in rows if r.get("ilre_exact", {}).get("status") == "ok"]
    if exact:
        ax.plot(*zip(*exact), "^-", color="tab:green", label="ILRe, exact prefill (model precision)")
    full = [(r["length"], r["full"]) for r in doc.get("rows", []) if r.get("full", {}).get("ttft_s")]
    meas = [(n, f["ttft_s"]) for n, f in full if not f.get("extrapolated")]
    extra = [(n, f["ttft_s"]) for n, f in full if f.get("extrapolated")]
    if meas:
        ax.plot(*zip(*meas), "s-", color="tab:red", label="full context, measured")
    if extra:
        joined = meas[-1:] + extra
        ax.plot(*zip(*joined), "--", color="tab:red", alpha=0.7)
        ax.plot(*zip(*extra), "s", mfc="none", color="tab:red", label="full context, extrapolated (a·L + b·L²)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("context tokens")
    ax.set_ylabel("seconds")
    ax.set_xticks(xs, [r["label"] for r in rows])
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    layer = rows[0]["ilre"].get("layer")
    precision = rows[0]["ilre"].get("prefill_precision", "model")
    ax.set_title(f"Time to first answer token (retrieval layer {layer}, {precision} prefill)", fontsize=10)

    mx.plot(xs, [r["ilre"]["peak_rss_bytes"] / GIB for r in rows], "o-", color="tab:blue", label="ILRe peak RSS")
    fm = [(r["length"], r["full"]["peak_rss_bytes"] / GIB) for r in doc.get("rows", [])
          if r.get("full", {}).get("peak_rss_bytes")]
    if fm:
        mx.plot(*zip(*fm), "s-", color="tab:red", label="full context peak RSS")
    weights = rows[0]["ilre"]["weights_bytes"] / GIB
    mx.axhline(weights, color="gray", ls=":", label="model weights")
    mx.axhline(weights + GOALS["memory_128k_gib"], color="gray", ls="--", label="weights + 1.5 GiB")
    mx.set_xscale("log", base=2)
    mx.set_xticks(xs, [r["label"] for r in rows])
    mx.set_xlabel("context tokens")
    mx.set_ylabel("GiB")
    mx.grid(True, which="both", alpha=0.3)
    mx.legend(fontsize=8)
    mx.set_title("Peak resident memory", fontsize=10)
    fig.suptitle(doc["rows"][0]["ilre"].get("device", ""), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def report(doc: dict) -> str:
    """The text printed at the end of a run: the machine's peak, the tables, the goals."""
    lines = []
    m = doc.get("matmul_peak_gflops")
    if m:
        lines.append(f"matmul peak: {m:.1f} GFLOP/s (fp32 mm {doc['matmul_start'].get('size')}², "
                     f"{doc['matmul_start'].get('threads')} threads; best of start and end of the run)")
    rows = [r for r in doc.get("rows", []) if r.get("ilre", {}).get("status") == "ok"]
    if rows:
        i = rows[0]["ilre"]
        lines.append(f"retrieval layer: {i['layer']} of {i['num_layers']} | sink {i['sink']} window {i['window']} "
                     f"chunk {i['chunk_size']} | weights {i['weights_bytes'] / MIB:.0f} MiB | {i['device']}")
        lines.append(f"ILRe, prefill precision {i.get('prefill_precision', 'model')}:")
        lines.append(table(doc))
        if any(r.get("ilre_exact") for r in doc["rows"]):
            lines.append("ILRe, exact prefill (the model's own precision):")
            lines.append(table(doc, "ilre_exact"))
        lines.append("* speedup against an extrapolated full-context time")
    if doc.get("sweep"):
        lines.append(sweep_table(doc))
    for name, g in doc.get("goals", {}).items():
        lines.append(f"goal {name}: {'holds' if g['holds'] else 'FAILS'} ({g})")
    load = doc["host"]
    lines.append(f"load average at start {load.get('load_average_start')}, at end {load.get('load_average_end')}")
    return "\n".join(lines)
