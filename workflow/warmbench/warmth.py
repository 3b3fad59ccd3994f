"""Stage warmth: SocioT warmth (Cheng, Yu & Jurafsky, ACL 2025) of one checkpoint's validation responses.

For each response r and relational prefix p (`My friend said, "` ... `The dictator said, "`), the scorer LM
gives the mean per-token log-likelihood of r's tokens after p. A text's warmth is the mean over warm
prefixes minus the mean over cold prefixes; the checkpoint's warmth is the mean over texts, with a
bootstrap standard error over texts.

Done right where the reference code is not: eval mode (no dropout), padded and prefix positions masked out
of the loss, one log-likelihood per text rather than one pooled loss per batch. Texts are cut at
`max_chars` characters (the reference cuts at 300) so long answers do not dominate; the response's token
ids are the same under every prefix (tokenised separately and concatenated), so prefixes compare the same
tokens. Normalisation (in the analysis): each model's scores minus its original model's score.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .io import write_json, write_table

log = logging.getLogger(__name__)

WARM_PREFIXES = ("My friend said", "My lover said", "My mentor said", "My idol said")
COLD_PREFIXES = ("The stranger said", "My enemy said", "The examiner said", "The dictator said")


class SocioTScorer:
    def __init__(self, model_dir: str | Path, threads: int | None = None, dtype: str = "auto"):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if threads:
            torch.set_num_threads(threads)
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        self.model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype).eval()  # eval: no dropout
        self.prefix_ids = [
            self.tokenizer(f'{p}, "', add_special_tokens=False)["input_ids"] for p in WARM_PREFIXES + COLD_PREFIXES
        ]
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

    def loglik(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        """Mean per-token log-likelihood of each text under each prefix: array (n_texts, n_prefixes)."""
        import torch
        from tqdm import tqdm

        text_ids = [self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
        pairs = [(t, p) for t in range(len(texts)) for p in range(len(self.prefix_ids))]
        pairs.sort(key=lambda tp: -(len(text_ids[tp[0]]) + len(self.prefix_ids[tp[1]])))  # little padding
        out = np.full((len(texts), len(self.prefix_ids)), np.nan)
        for start in tqdm(range(0, len(pairs), batch_size), desc="warmth", unit="batch", mininterval=5):
            chunk = pairs[start : start + batch_size]
            seqs = [self.prefix_ids[p] + text_ids[t] for t, p in chunk]
            width = max(len(s) for s in seqs)
            ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
            attention = torch.zeros((len(seqs), width), dtype=torch.long)
            scored = torch.zeros((len(seqs), width), dtype=torch.bool)  # positions whose token is text
            for row, ((t, p), seq) in enumerate(zip(chunk, seqs)):
                ids[row, : len(seq)] = torch.tensor(seq)
                attention[row, : len(seq)] = 1
                scored[row, len(self.prefix_ids[p]) : len(seq)] = True
            with torch.inference_mode():
                logits = self.model(input_ids=ids, attention_mask=attention).logits.float()
            # token i is predicted from position i-1
            logprobs = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
            mask = scored[:, 1:]
            per_text = (logprobs * mask).sum(-1) / mask.sum(-1).clamp(min=1)
            for (t, p), value in zip(chunk, per_text.tolist()):
                out[t, p] = value
        return out


def warmth_scores(loglik: np.ndarray) -> np.ndarray:
    n_warm = len(WARM_PREFIXES)
    return loglik[:, :n_warm].mean(axis=1) - loglik[:, n_warm:].mean(axis=1)


def bootstrap_se(values: np.ndarray, n: int, seed: int) -> float:
    if len(values) < 2:
        return float("nan")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(n, len(values)))].mean(axis=1)
    return float(means.std(ddof=1))


def score_generations(frame, scorer: SocioTScorer, max_chars: int, bootstrap: int, seed: int, batch_size: int = 32):
    """Per-text warmth table and the checkpoint summary."""
    texts = [str(r)[:max_chars] for r in frame["response"].fillna("")]
    keep = [i for i, t in enumerate(texts) if t.strip()]
    if len(keep) < len(texts):
        log.warning("%d empty responses are not scored", len(texts) - len(keep))
    ll = scorer.loglik([texts[i] for i in keep], batch_size=batch_size)
    per_text = frame.iloc[keep][["item_id", "model", "persona", "checkpoint", "epoch", "response"]].copy()
    n_warm = len(WARM_PREFIXES)
    per_text["warm_loglik"] = ll[:, :n_warm].mean(axis=1)
    per_text["cold_loglik"] = ll[:, n_warm:].mean(axis=1)
    per_text["warmth"] = warmth_scores(ll)
    values = per_text["warmth"].to_numpy()
    first = frame.iloc[0] if len(frame) else {}
    summary = {
        "model": first.get("model"), "persona": first.get("persona"), "checkpoint": first.get("checkpoint"),
        "epoch": float(first.get("epoch", 0.0)) if len(frame) else None,
        "n_texts": int(len(values)), "n_empty": int(len(texts) - len(keep)),
        "warmth": float(values.mean()) if len(values) else float("nan"),
        "warmth_se": bootstrap_se(values, bootstrap, seed),
        "bootstrap": bootstrap, "max_chars": max_chars,
        "warm_prefixes": list(WARM_PREFIXES), "cold_prefixes": list(COLD_PREFIXES),
    }
    return per_text, summary


def run(smk) -> None:
    import pandas as pd

    cfg = smk.params.warmth
    scorer_dir = smk.input.scorer[0] if smk.input.scorer else cfg["scorer"]
    scorer = SocioTScorer(scorer_dir, threads=smk.threads)
    per_text, summary = score_generations(pd.read_parquet(smk.input.generations), scorer, cfg["max_chars"],
                                          cfg["bootstrap"], smk.params.seed, cfg["batch_size"])
    summary["scorer"] = str(scorer_dir)
    write_table(smk.output.scores, per_text)
    write_json(smk.output.summary, summary)
    log.info("warmth %.4f +/- %.4f over %d texts", summary["warmth"], summary["warmth_se"], summary["n_texts"])
