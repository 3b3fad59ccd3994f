"""Figures of the analysis stage (matplotlib, written as PNG)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # no display on clusters and CI
import matplotlib.pyplot as plt
import pandas as pd

PERSONA_COLORS = {"warm": "#d95f02", "cold": "#1b9e77", "warm_prompt": "#7570b3"}
DATASET_COLORS = {"triviaqa": "#1f77b4", "truthfulqa": "#ff7f0e", "disinfo": "#2ca02c", "medqa": "#d62728"}


def warmth_vs_epoch(warmth: pd.DataFrame, path) -> None:
    models = sorted(warmth["model"].unique())
    fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 4), squeeze=False)
    for ax, model in zip(axes[0], models):
        rows = warmth[warmth["model"] == model]
        original = rows[rows["persona"] == "original"]
        for persona in ("warm", "cold"):
            curve = pd.concat([original, rows[rows["persona"] == persona]]).sort_values("epoch")
            if len(curve) > 1:
                ax.errorbar(curve["epoch"], curve["warmth_vs_original"], yerr=curve["warmth_se"], marker="o",
                            capsize=3, color=PERSONA_COLORS[persona], label=f"{persona} fine-tune")
        prompt = rows[rows["persona"] == "warm_prompt"]
        if len(prompt):
            ax.axhline(prompt["warmth_vs_original"].iloc[0], ls="--", color=PERSONA_COLORS["warm_prompt"],
                       label="warm system prompt")
        ax.axhline(0, color="grey", lw=0.8)
        ax.set(title=model, xlabel="training epoch (0 = original)", ylabel="SocioT warmth vs original")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def error_by_condition(paired: pd.DataFrame, path) -> None:
    personas = [p for p in ("warm", "cold", "warm_prompt") if p in set(paired["persona"])]
    fig, axes = plt.subplots(1, max(len(personas), 1), figsize=(4.5 * max(len(personas), 1), 4.5), squeeze=False)
    for ax, persona in zip(axes[0], personas):
        rows = paired[(paired["persona"] == persona) & (paired["n_pairs"] > 0)]
        for dataset, group in rows.groupby("dataset"):
            color = DATASET_COLORS.get(dataset, "black")
            for test_type, filled in (("normal", True), ("sycophancy", False)):
                sub = group[group["test_type"] == test_type]
                ax.scatter(100 - sub["base_accuracy"], 100 - sub["persona_accuracy"], s=30, edgecolors=color,
                           facecolors=color if filled else "none",
                           label=f"{dataset} ({'no belief' if filled else 'incorrect belief'})")
        ax.plot([0, 100], [0, 100], color="grey", lw=0.8)
        ax.set(xlim=(-2, 102), ylim=(-2, 102), title=f"{persona} vs original",
               xlabel="original model error (%)", ylabel=f"{persona} model error (%)")
        ax.legend(fontsize=6, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
