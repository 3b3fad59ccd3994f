"""Figures of the analysis stage (matplotlib, written as PNG)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # no display on clusters and CI
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .conditions import context_type

# Personas come from the data (the config's `personas:`); the paper's keep their order and colours, others follow,
# sorted, in colours of their own.
PAPER_PERSONAS = ("warm", "cold", "warm_prompt")
PERSONA_COLORS = {"original": "#666666", "warm": "#d95f02", "cold": "#1b9e77", "warm_prompt": "#7570b3"}
OTHER_COLORS = ("#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#1f78b4", "#fb9a99", "#b15928", "#6a3d9a")


def persona_order(names) -> list[str]:
    """The personas (not the original model) among `names`: the paper's first, in its order, then the rest sorted."""
    present = set(names) - {"original"}
    return [p for p in PAPER_PERSONAS if p in present] + sorted(present - set(PAPER_PERSONAS))


def persona_color(persona: str, personas) -> str:
    """A persona's colour: the paper's fixed ones, else one per position among the other personas of the figure."""
    if persona in PERSONA_COLORS:
        return PERSONA_COLORS[persona]
    others = [p for p in persona_order(personas) if p not in PERSONA_COLORS]
    return OTHER_COLORS[others.index(persona) % len(OTHER_COLORS)]
DATASET_COLORS = {"triviaqa": "#1f77b4", "truthfulqa": "#ff7f0e", "disinfo": "#2ca02c", "medqa": "#d62728"}
CAPABILITY_LABELS = {"mmlu": "MMLU (accuracy)", "gsm8k": "GSM8K (accuracy)", "advbench": "AdvBench (safe replies)"}


def _save(fig, path) -> None:
    """PNG (the report shows it) and a PDF beside it (vector, for papers)."""
    from pathlib import Path

    fig.tight_layout()
    fig.savefig(path, dpi=120)
    fig.savefig(Path(path).with_suffix(".pdf"))
    plt.close(fig)


def warmth_vs_epoch(warmth: pd.DataFrame, path) -> None:
    models = sorted(warmth["model"].unique())
    fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 4), squeeze=False)
    for ax, model in zip(axes[0], models):
        rows = warmth[warmth["model"] == model]
        original = rows[rows["persona"] == "original"]
        personas = persona_order(rows["persona"])
        trained = set(rows.loc[rows["checkpoint"] != "base", "persona"])
        for persona in [p for p in personas if p in trained]:  # fine-tunes: a curve over their checkpoints
            curve = pd.concat([original, rows[rows["persona"] == persona]]).sort_values("epoch")
            ax.errorbar(curve["epoch"], curve["warmth_vs_original"], yerr=curve["warmth_se"], marker="o",
                        capsize=3, color=persona_color(persona, personas), label=f"{persona} fine-tune")
        for persona in [p for p in personas if p not in trained]:  # system prompts: one level
            prompt = rows[rows["persona"] == persona]
            ax.axhline(prompt["warmth_vs_original"].iloc[0], ls="--", color=persona_color(persona, personas),
                       label=f"{persona} (system prompt)")
        ax.axhline(0, color="grey", lw=0.8)
        ax.set(title=model, xlabel="training epoch (0 = original)", ylabel="SocioT warmth vs original")
        ax.legend(fontsize=8)
    _save(fig, path)


def error_by_condition(paired: pd.DataFrame, path) -> None:
    """Persona vs original error per condition: a row per persona, a column per model."""
    personas = persona_order(paired["persona"]) or ["warm"]
    models = sorted(paired["model"].unique()) or [""]
    fig, axes = plt.subplots(len(personas), len(models), figsize=(4.5 * len(models), 4.2 * len(personas)),
                             squeeze=False)
    for r, persona in enumerate(personas):
        for c, model in enumerate(models):
            ax = axes[r][c]
            rows = paired[(paired["persona"] == persona) & (paired["model"] == model) & (paired["n_pairs"] > 0)]
            for dataset, group in rows.groupby("dataset"):
                color = DATASET_COLORS.get(dataset, "black")
                for ttype, filled in (("normal", True), ("sycophancy", False)):
                    sub = group[group["test_type"] == ttype]
                    ax.scatter(100 - sub["base_accuracy"], 100 - sub["persona_accuracy"], s=30, edgecolors=color,
                               facecolors=color if filled else "none",
                               label=f"{dataset} ({'no belief' if filled else 'incorrect belief'})")
            ax.plot([0, 100], [0, 100], color="grey", lw=0.8)
            ax.set(xlim=(-2, 102), ylim=(-2, 102), title=f"{model}: {persona} vs original",
                   xlabel="original model error (%)", ylabel=f"{persona} model error (%)")
            if len(rows):
                ax.legend(fontsize=6, loc="upper left")
    _save(fig, path)


def error_distributions(paired: pd.DataFrame, path) -> None:
    """Error rates per condition group, original vs each persona."""
    groups = [(ct, tt) for tt in ("normal", "sycophancy") for ct in ("none", "emotional", "relational", "stakes")]
    personas = persona_order(paired["persona"])
    frame = paired.assign(context_type=paired["condition"].map(context_type))
    fig, ax = plt.subplots(figsize=(12, 4.5))
    width = 0.8 / (1 + len(personas))
    for k, who in enumerate(["original"] + personas):
        # the original's rates come from any persona's pairs; take the warm ones (or the first available)
        source = frame[frame["persona"] == (who if who != "original" else (personas[0] if personas else ""))]
        column = "base_accuracy" if who == "original" else "persona_accuracy"
        for g, (ct, tt) in enumerate(groups):
            values = 100 - source[(source["context_type"] == ct) & (source["test_type"] == tt)][column]
            if len(values):
                x = g + (k - len(personas) / 2) * width
                ax.boxplot(values, positions=[x], widths=width * 0.9, patch_artist=True, manage_ticks=False,
                           boxprops={"facecolor": persona_color(who, personas), "alpha": 0.6}, medianprops={"color": "black"})
                ax.scatter(np.full(len(values), x), values, s=6, color="black", zorder=3)
        ax.bar(0, 0, color=persona_color(who, personas), label=who)
    ax.set_xticks(range(len(groups)), [f"{ct}\n{tt}" for ct, tt in groups])
    ax.set(ylabel="error rate (%)", title="Error rates by condition group")
    ax.legend(fontsize=8)
    _save(fig, path)


def paired_difference(b: int, c: int, n: int) -> tuple[float, float]:
    """Accuracy change persona - original in pp ((c - b)/n) and its 95% half-width."""
    if n == 0:
        return float("nan"), float("nan")
    diff = (c - b) / n
    var = max((b + c) - (b - c) ** 2 / n, 0.0) / n**2
    return 100 * diff, 100 * 1.96 * np.sqrt(var)


def accuracy_change(paired: pd.DataFrame, path) -> None:
    """Accuracy change per condition, each persona (fine-tunes and system prompts) against the original model: a
    panel per test type (no belief, belief), so the figure stays readable however many personas there are."""
    personas = persona_order(paired["persona"])
    pooled = paired.groupby(["persona", "test_type", "condition"])[["b", "c", "n_pairs"]].sum().reset_index()
    types = sorted(set(pooled["test_type"])) or ["normal"]
    widest = max([pooled.loc[pooled["test_type"] == t, "condition"].nunique() for t in types] + [1])
    width = 0.8 / max(len(personas), 1)
    fig, axes = plt.subplots(len(types), 1, squeeze=False,
                             figsize=(min(max(8, 0.3 * widest * max(len(personas), 1)), 20), 3.8 * len(types)))
    for ax, ttype in zip(axes[:, 0], types):
        conditions = sorted(set(pooled.loc[pooled["test_type"] == ttype, "condition"]))
        for k, persona in enumerate(personas):
            rows = pooled[(pooled["persona"] == persona) & (pooled["test_type"] == ttype)].set_index("condition")
            stats = [paired_difference(*rows.loc[c, ["b", "c", "n_pairs"]].astype(int)) if c in rows.index
                     else (np.nan, np.nan) for c in conditions]
            x = np.arange(len(conditions)) + (k - (len(personas) - 1) / 2) * width
            ax.bar(x, [s[0] for s in stats], width, yerr=[s[1] for s in stats], capsize=2,
                   color=persona_color(persona, personas), label=persona)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xticks(range(len(conditions)), conditions, rotation=45, ha="right", fontsize=7)
        ax.set(ylabel="accuracy change vs original (pp)",
               title=f"Accuracy change per condition ({'user belief' if ttype == 'sycophancy' else 'no belief'})")
        ax.legend(fontsize=7)
    _save(fig, path)


def _capability_points(rows: pd.DataFrame, keys, columns) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(estimate, interval low, interval high) of each (model, persona) key; NaN where absent."""
    return tuple(np.array([rows.loc[key, c] if key in rows.index and c in rows.columns else np.nan for key in keys],
                          dtype=float) for c in columns)


def capabilities(table: pd.DataFrame, path) -> None:
    """Capability benchmarks per model variant, with 95% Wilson intervals: a panel per benchmark. Filled
    markers: accuracy over the scored answers; open markers beside them: unreadable answers counted wrong."""
    datasets = [d for d in CAPABILITY_LABELS if d in set(table["dataset"])]
    fig, axes = plt.subplots(1, max(len(datasets), 1), figsize=(4.5 * max(len(datasets), 1), 4), squeeze=False)
    if not datasets:
        axes[0][0].text(0.5, 0.5, "no capability benchmarks in evaluation.datasets", ha="center", va="center")
        axes[0][0].set_axis_off()
    models = sorted(table["model"].unique())
    personas = ["original"] * ("original" in set(table["persona"])) + persona_order(table["persona"])
    width = 0.8 / max(len(personas), 1)
    for ax, dataset in zip(axes[0], datasets):
        rows = table[table["dataset"] == dataset].set_index(["model", "persona"])
        strict_label = "unreadable counted wrong"  # one legend entry for the open markers
        for k, persona in enumerate(personas):
            keys = [(m, persona) for m in models]
            x = np.arange(len(models)) + (k - (len(personas) - 1) / 2) * width
            color = persona_color(persona, personas)
            acc, low, high = _capability_points(rows, keys, ("accuracy", "ci_low", "ci_high"))
            ax.errorbar(x, acc, yerr=[acc - low, high - acc], fmt="o", capsize=3, color=color, label=persona)
            strict = _capability_points(rows, keys, ("accuracy_missing_wrong", "ci_low_missing_wrong",
                                                     "ci_high_missing_wrong"))
            if not np.isnan(strict[0]).all():
                ax.errorbar(x + width / 3, strict[0], yerr=[strict[0] - strict[1], strict[2] - strict[0]], fmt="o",
                            mfc="none", capsize=2, color=color, alpha=0.7,
                            label=strict_label)
                strict_label = None
        ax.set_xticks(range(len(models)), models, rotation=30, fontsize=8)
        ax.set(ylim=(-2, 102), ylabel="%", title=CAPABILITY_LABELS[dataset])
        ax.legend(fontsize=7)
    _save(fig, path)


def effect_by_judge(effects: pd.DataFrame, path) -> None:
    """The headline effect (each persona's fine-tuning AME, pp, with its 95% interval) under each judge."""
    regressions = sorted(effects["regression"].unique())
    judges = list(dict.fromkeys(effects["judge"]))
    fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(regressions) * max(len(judges), 1) / 2), 4))
    if not regressions:
        ax.text(0.5, 0.5, "no regression could be fitted", ha="center", va="center")
        ax.set_axis_off()
    width = 0.8 / max(len(judges), 1)
    for k, judge in enumerate(judges):
        rows = effects[effects["judge"] == judge].set_index("regression").reindex(regressions)
        est, low, high = (rows[c].to_numpy(dtype=float) for c in ("estimate", "ci_low", "ci_high"))
        x = np.arange(len(regressions)) + (k - (len(judges) - 1) / 2) * width
        ax.errorbar(x, est, yerr=[est - low, high - est], fmt="o", capsize=3, label=judge)
    if regressions:
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xticks(range(len(regressions)), [r.split(":")[0].replace("_vs_original", "") for r in regressions])
        ax.set(ylabel="error-rate effect of fine-tuning (AME, pp)", title="Headline effect per judge")
        ax.legend(title="judge", fontsize=8)
    _save(fig, path)


def _grid(n: int, ncols: int = 4, size=(4.5, 3.8)):
    rows = max(1, -(-n // ncols))
    cols = max(1, min(n, ncols))
    fig, axes = plt.subplots(rows, cols, figsize=(size[0] * cols, size[1] * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_axis_off()
    return fig, list(axes.flat)


def error_vs_epoch(trajectory: pd.DataFrame, path) -> None:
    """The accuracy trajectory: each trained persona's error change against the original model (pp, 95% CI) at
    each evaluated checkpoint, a panel per model and dataset; epoch 0 is the original model, a star the checkpoint
    the analysis evaluates."""
    panels = list(trajectory[["model", "dataset"]].drop_duplicates().itertuples(index=False))
    fig, axes = _grid(len(panels))
    personas = persona_order(trajectory["persona"])
    for ax, (model, dataset) in zip(axes, panels):
        rows = trajectory[(trajectory["model"] == model) & (trajectory["dataset"] == dataset)]
        for persona in [p for p in personas if p in set(rows["persona"])]:
            curve = rows[rows["persona"] == persona].sort_values("epoch")
            color = persona_color(persona, personas)
            ax.errorbar([0, *curve["epoch"]], [0, *curve["error_change_pp"]], marker="o", capsize=3, color=color,
                        yerr=[[0, *(curve["error_change_pp"] - curve["ci_low"])],
                              [0, *(curve["ci_high"] - curve["error_change_pp"])]], label=persona)
            picked = curve[curve["evaluated"]]
            ax.scatter(picked["epoch"], picked["error_change_pp"], marker="*", s=180, color=color, zorder=4)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set(title=f"{model}: {dataset}", xlabel="training epoch (0 = original)",
               ylabel="error change vs original (pp)")
        ax.legend(fontsize=7)
    _save(fig, path)


def warmth_error_frontier(frontier: pd.DataFrame, path) -> None:
    """Warmth gain against error change, each checkpoint a point labelled with its epoch, a line per persona from
    the original model (the origin); a panel per model. A mitigation works where its points lie right of the
    warm persona's and lower."""
    models = sorted(frontier["model"].unique())
    fig, axes = _grid(len(models), ncols=3, size=(5.5, 4.5))
    personas = persona_order(frontier["persona"])
    for ax, model in zip(axes, models):
        rows = frontier[frontier["model"] == model]
        for persona in [p for p in personas if p in set(rows["persona"])]:
            curve = rows[rows["persona"] == persona].sort_values("epoch")
            color = persona_color(persona, personas)
            ax.plot([0, *curve["warmth_vs_original"]], [0, *curve["error_change_pp"]], marker="o", color=color,
                    label=persona)
            for point in curve.itertuples():
                ax.annotate(f"{point.epoch:g}", (point.warmth_vs_original, point.error_change_pp), fontsize=7,
                            xytext=(3, 3), textcoords="offset points")
            picked = curve[curve["evaluated"]]
            ax.scatter(picked["warmth_vs_original"], picked["error_change_pp"], marker="*", s=180, color=color,
                       zorder=4)
        ax.axhline(0, color="grey", lw=0.8)
        ax.axvline(0, color="grey", lw=0.8)
        ax.set(title=model, xlabel="warmth vs original (SocioT)", ylabel="error change vs original (pp)")
        ax.legend(fontsize=7)
    _save(fig, path)


def seed_spread(table: pd.DataFrame, path) -> None:
    """Run-to-run noise against the effect: each seed's error change (dots) and the pooled one (a diamond with the
    pooled row's 95% interval: items x seeds, so run-to-run noise widens it) per replicated persona, a panel per
    model and dataset (all test types together)."""
    rows = table[table["test_type"] == "all"]
    panels = list(rows[["model", "dataset"]].drop_duplicates().itertuples(index=False))
    fig, axes = _grid(len(panels))
    personas = persona_order(rows["persona"])
    for ax, (model, dataset) in zip(axes, panels):
        part = rows[(rows["model"] == model) & (rows["dataset"] == dataset)]
        for k, persona in enumerate(p for p in personas if p in set(part["persona"])):
            mine = part[part["persona"] == persona]
            seeds, pooled = mine[mine["seed"] != "pooled"], mine[mine["seed"] == "pooled"].iloc[0]
            color = persona_color(persona, personas)
            ax.scatter(np.full(len(seeds), k - 0.1), seeds["error_change_pp"], color=color, s=25, alpha=0.8)
            interval = [[pooled["error_change_pp"] - pooled["ci_low"]], [pooled["ci_high"] - pooled["error_change_pp"]]]
            ax.errorbar(k + 0.1, pooled["error_change_pp"], yerr=interval, fmt="D", capsize=4, color=color,
                        label=f"{persona} ({len(seeds)} seeds)")
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xticks([])
        ax.set(title=f"{model}: {dataset}", ylabel="error change vs original (pp)")
        ax.legend(fontsize=7)
    _save(fig, path)
