"""Figures of the attention-collapse study (PNG, drawn without touching matplotlib's global state)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

COLORS = ("tab:red", "tab:blue", "tab:green", "tab:purple")


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def plot_study(results: dict[str, Any], folder: str | Path) -> list[Path]:
    """adjacent.png (M^{p,p+1} per block), matrices.png (deepest models), summary.png (vs depth).

    Blocks are numbered from 1, as in every vitlab figure.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    runs = results["runs"]
    depths = sorted({r["depth"] for r in runs})
    variants = list(dict.fromkeys(r["variant"] for r in runs))
    color = {v: COLORS[i % len(COLORS)] for i, v in enumerate(variants)}
    paths = [folder / "adjacent.png", folder / "matrices.png", folder / "summary.png"]
    _adjacent(results, runs, depths, color, paths[0])
    _matrices(runs, depths, paths[1])
    _summary(results, runs, depths, variants, color, paths[2])
    return paths


def _adjacent(results: dict[str, Any], runs: list, depths: list[int], color: dict, path: Path) -> None:
    from matplotlib.ticker import MaxNLocator

    fig = _figure(4.2 * len(depths), 3.4)
    for k, depth in enumerate(depths):
        ax = fig.add_subplot(1, len(depths), k + 1)
        for r in (r for r in runs if r["depth"] == depth):
            x = list(range(1, len(r["softmax"]["adjacent"]) + 1))  # blocks numbered from 1, as every figure
            ax.plot(x, r["softmax"]["adjacent"], "o-", ms=3, color=color[r["variant"]],
                    label=f"{r['variant']} (softmax)")
            if r["mixed"]["adjacent"] != r["softmax"]["adjacent"]:
                ax.plot(x, r["mixed"]["adjacent"], "s--", ms=2, color=color[r["variant"]], alpha=0.6,
                        label=f"{r['variant']} (maps used)")
            if "init" in r:
                ax.plot(x, r["init"]["adjacent"], ":", lw=1, color=color[r["variant"]], alpha=0.5,
                        label=f"{r['variant']} at init (softmax)")
        ax.axhline(results["threshold"], color="grey", lw=0.8, ls=":")
        ax.set_title(f"{depth} blocks")
        ax.set_xlabel("block p")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylim(-0.05, 1.02)
        if k == 0:
            ax.set_ylabel("similarity of block p with p+1")
            ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)


def _matrices(runs: list, depths: list[int], path: Path) -> None:
    from matplotlib.ticker import MaxNLocator

    deepest = [r for r in runs if r["depth"] == depths[-1]]
    panels = [(r, "softmax") for r in deepest] + [(r, "mixed") for r in deepest if r["mixed"] != r["softmax"]]
    fig = _figure(3.6 * len(panels), 3.4)
    for k, (r, kind) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), k + 1)
        n = len(r[kind]["matrix"])
        im = ax.imshow(r[kind]["matrix"], vmin=0, vmax=1, cmap="viridis", extent=(0.5, n + 0.5, n + 0.5, 0.5))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"{r['variant']}, {'maps used' if kind == 'mixed' else 'softmax'}", fontsize=9)
        ax.set_xlabel("block q")
        if k == 0:
            ax.set_ylabel("block p")
    fig.colorbar(im, ax=fig.axes, shrink=0.8)
    fig.savefig(path)


def _summary(results: dict[str, Any], runs: list, depths: list[int], variants: list, color: dict,
             path: Path) -> None:
    fig = _figure(8.4, 3.2)
    acc, sim = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for v in variants:
        rs = sorted((r for r in runs if r["variant"] == v), key=lambda r: r["depth"])
        d = [r["depth"] for r in rs]
        acc.plot(d, [r["val_top1"] for r in rs], "o-", color=color[v], label=v)
        sim.plot(d, [r["softmax"]["num_similar"] for r in rs], "o-", color=color[v], label=f"{v} (softmax)")
        if any(r["mixed"] != r["softmax"] for r in rs):
            sim.plot(d, [r["mixed"]["num_similar"] for r in rs], "s--", color=color[v], alpha=0.6,
                     label=f"{v} (maps used)")
    acc.set_xlabel("blocks")
    acc.set_ylabel("val top-1 %")
    acc.legend(fontsize=8)
    sim.set_xlabel("blocks")
    sim.set_ylabel(f"similar blocks (>= {results['threshold']})")
    sim.legend(fontsize=7)
    for ax in (acc, sim):
        ax.set_xticks(depths)
    fig.tight_layout()
    fig.savefig(path)
