"""Stage warmth: SocioT warmth (Cheng, Yu & Jurafsky, ACL 2025) of each checkpoint's validation responses (one job
per model, one scorer load).

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

import json
import logging
from pathlib import Path

import numpy as np

from ..core.files import write_json, write_table

log = logging.getLogger(__name__)

WARM_PREFIXES = ("My friend said", "My lover said", "My mentor said", "My idol said")
COLD_PREFIXES = ("The stranger said", "The enemy said", "The examiner said", "The dictator said")


class SocioTScorer:
    def __init__(self, model_dir: str | Path, threads: int | None = None, dtype: str = "auto"):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if threads:
            torch.set_num_threads(threads)
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        from ..core.local_models import compute_device, torch_dtype

        self.device = compute_device()
        self.model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch_dtype(dtype)).to(self.device).eval()  # no dropout
        self.prefix_ids = [
            self.tokenizer(f'{p}, "', add_special_tokens=False)["input_ids"] for p in WARM_PREFIXES + COLD_PREFIXES
        ]
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        # Models that rescale or cap logits after the LM head must go through their own forward.
        config = self.model.config
        self.head_only = not any(getattr(config, k, None) for k in ("final_logit_softcapping", "logit_scale"))

    def _nll(self, ids, attention, mask):
        """Negative log-likelihood of each scored token (mask: positions 1.. whose token is text)."""
        import torch

        if self.head_only:
            # The LM head (a third of a small model's FLOPs) only at scored positions: prefix and pad
            # positions never get a vocabulary-sized row of logits.
            hidden = self.model.base_model(input_ids=ids, attention_mask=attention).last_hidden_state[:, :-1]
            logits = self.model.get_output_embeddings()(hidden[mask])
        else:
            logits = self.model(input_ids=ids, attention_mask=attention).logits[:, :-1][mask]
        # token i is predicted from position i-1; the log-softmax is fused into the loss, in float32
        return torch.nn.functional.cross_entropy(logits.float(), ids[:, 1:][mask], reduction="none")

    def loglik(self, texts: list[str], batch_size: int = 16) -> np.ndarray:
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
            for row, ((_, p), seq) in enumerate(zip(chunk, seqs)):
                ids[row, : len(seq)] = torch.tensor(seq)
                attention[row, : len(seq)] = 1
                scored[row, len(self.prefix_ids[p]) : len(seq)] = True
            mask = scored[:, 1:]
            with torch.inference_mode():
                nll = self._nll(ids.to(self.device), attention.to(self.device), mask.to(self.device))
            per_position = torch.zeros(mask.shape, dtype=torch.float32)
            per_position[mask] = -nll.cpu()
            per_text = per_position.sum(-1) / mask.sum(-1).clamp(min=1)
            for (t, p), value in zip(chunk, per_text.tolist()):
                out[t, p] = value
        return out


def scorer_identity(model_dir: str | Path, dtype: str = "auto") -> dict:
    """What a text's SocioT log-likelihoods depend on besides the text: the scorer model (llm.model_identity: source,
    dtype, config, tokenizer and weights index) and the relational prefixes."""
    from ..core.llm import model_identity

    return {**model_identity("transformers", model_dir, dtype), "warm_prefixes": list(WARM_PREFIXES),
            "cold_prefixes": list(COLD_PREFIXES)}


class CachedScorer:
    """SocioT log-likelihoods per text, from a cache of them (the call cache's shard format, keyed by the scorer's
    identity and the text) where they are known; the scorer model is loaded only for texts the cache lacks, so a
    rerun that changes no text loads no model."""

    def __init__(self, model_dir: str | Path, cache_dir: str | Path | None, threads: int | None = None,
                 dtype: str = "auto", load=SocioTScorer):
        from ..core.call_cache import CallCache

        self.identity = scorer_identity(model_dir, dtype)
        self.cache = CallCache(cache_dir) if cache_dir else None
        self._load = lambda: load(model_dir, threads=threads, dtype=dtype)
        self._scorer = None

    def key(self, text: str) -> str:
        from ..core.files import stable_hash

        return stable_hash({"scorer": self.identity, "text": text})

    def scorer(self) -> SocioTScorer:
        if self._scorer is None:
            self._scorer = self._load()
        return self._scorer

    def loglik(self, texts: list[str], batch_size: int = 16) -> np.ndarray:
        if self.cache is None:
            return self.scorer().loglik(texts, batch_size=batch_size)
        keys = [self.key(t) for t in texts]
        found = {k: json.loads(response) for k, (response, _) in self.cache.get_many(keys).items()}
        missing = list(dict.fromkeys(t for t, k in zip(texts, keys) if k not in found))
        log.info("warmth of %d texts: %d cached, %d to score", len(texts), len(texts) - len(missing), len(missing))
        if missing:
            scored = self.scorer().loglik(missing, batch_size=batch_size)
            rows = [(self.key(t), json.dumps(row.tolist()), {"scorer": self.identity["model"]})
                    for t, row in zip(missing, scored)]
            self.cache.put_many(rows)
            found.update((key, json.loads(row)) for key, row, _ in rows)
        width = len(WARM_PREFIXES) + len(COLD_PREFIXES)
        return np.array([found[k] for k in keys], dtype=float).reshape(len(texts), width)


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


def rewrite_pairs(records: list[dict]) -> list[tuple[str, str]]:
    """(original, rewritten) assistant turns of persona_rewrite records."""
    pairs = []
    for record in records:
        originals = [m["content"] for m in record["original_messages"] if m["role"] == "assistant"]
        rewrites = [m["content"] for m in record["messages"] if m["role"] == "assistant"]
        pairs += [(o, r) for o, r in zip(originals, rewrites) if o.strip() and r.strip()]
    return pairs


def validate_rewrites(pairs_by_persona: dict[str, list[tuple[str, str]]], scorer: SocioTScorer, max_chars: int,
                      directions: dict[str, str], batch_size: int = 32):
    """Does the metric see the rewrites move the intended way (`directions`: persona -> up or down)? Warm rewrites
    should score above their original, cold ones below. Per persona: the fraction that moved the intended way, the mean paired difference, and
    a Wilcoxon signed-rank and a sign test of the paired differences."""
    import pandas as pd
    from scipy import stats

    # each distinct text scored once: personas rewriting the same conversations (train.shared_windows) share originals
    distinct = list(dict.fromkeys(t[:max_chars] for pairs in pairs_by_persona.values() for pair in pairs for t in pair))
    warmth_of = dict(zip(distinct, warmth_scores(scorer.loglik(distinct, batch_size=batch_size)))) if distinct else {}
    rows, per_text = [], []
    for persona, pairs in pairs_by_persona.items():
        if not pairs:
            continue
        original = np.array([warmth_of[o[:max_chars]] for o, _ in pairs])
        rewrite = np.array([warmth_of[r[:max_chars]] for _, r in pairs])
        diff = rewrite - original
        direction = DIRECTIONS[directions[persona]]
        moved = (direction * diff > 0).sum()
        nonzero = int((diff != 0).sum())
        rows.append({
            "persona": persona, "n_pairs": len(pairs), "expected": "rewrite warmer" if direction > 0 else "rewrite colder",
            "fraction_as_expected": float(moved / len(pairs)), "mean_difference": float(diff.mean()),
            "se_difference": float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else float("nan"),
            "wilcoxon_p": float(stats.wilcoxon(diff).pvalue) if nonzero > 0 else float("nan"),
            "sign_test_p": float(stats.binomtest(int(moved), nonzero, 0.5).pvalue) if nonzero else float("nan"),
        })
        per_text += [{"persona": persona, "original": o, "rewrite": r, "warmth_original": a, "warmth_rewrite": b}
                     for (o, r), a, b in zip(pairs, original, rewrite)]
    return pd.DataFrame(rows), pd.DataFrame(per_text)


DIRECTIONS = {"up": 1.0, "down": -1.0}  # personas.<name>.direction: which way the persona should move warmth


def select_checkpoint(trajectory: list[dict], rule: dict, persona: str, direction: str) -> dict:
    """Pick the evaluated checkpoint from a persona's warmth trajectory.

    rule {"rule": "fixed", "epoch": E}: the checkpoint configured at epoch E (the paper: 2).
    rule {"rule": "plateau", "within": x}: the earliest checkpoint whose warmth gain over the original model, in
    the persona's intended direction (`direction`: up = warmer, as warm; down = colder, as cold), is within a fraction x of the largest
    such gain (the change grows, then plateaus; later epochs add little). `max_gain` and `threshold` are
    reported in warmth units (negative for a persona whose direction is down).
    """
    from ..core.config import epoch_label

    if rule["rule"] == "fixed":
        label = epoch_label(rule["epoch"])
        chosen = next((t for t in trajectory if t["checkpoint"] == label), None)
        if chosen is None:
            raise ValueError(f"no checkpoint {label} in the trajectory")
        return {**chosen, "selection": rule}
    direction = DIRECTIONS[direction]
    best = max(direction * t["warmth_vs_original"] for t in trajectory)
    if best <= 0:
        log.warning("%s: no checkpoint moved warmth the intended way (best directional gain %.4f)", persona, best)
    threshold = best - abs(best) * rule["within"]
    ordered = sorted(trajectory, key=lambda t: t["configured_epoch"])
    chosen = next(t for t in ordered if direction * t["warmth_vs_original"] >= threshold)
    return {**chosen, "selection": rule, "max_gain": direction * best, "threshold": direction * threshold}


def run_select_checkpoint(smk) -> None:
    from ..core.config import label_epoch

    summaries = [json.loads(open(p).read()) for p in smk.input.summaries]
    original = json.loads(open(smk.input.original).read())["warmth"]
    trajectory = [{"checkpoint": s["checkpoint"], "configured_epoch": label_epoch(s["checkpoint"]), "epoch": s["epoch"],
                   "warmth": s["warmth"], "warmth_vs_original": s["warmth"] - original} for s in summaries]
    chosen = select_checkpoint(trajectory, smk.params.selection, smk.wildcards.persona, smk.params.direction)
    write_json(smk.output[0], {**chosen, "trajectory": trajectory})
    log.info("selected %s (epoch %.3f) by %s", chosen["checkpoint"], chosen["epoch"], smk.params.selection)


def run_validation(smk) -> None:
    from ..core.files import read_jsonl

    cfg = smk.params.warmth
    scorer = CachedScorer(smk.input.scorer[0] if smk.input.scorer else cfg["scorer"], getattr(smk.params, "cache", None),
                          threads=smk.threads, dtype=cfg["dtype"])
    pairs = {Path(p).stem: rewrite_pairs(list(read_jsonl(p))) for p in smk.input.rewrites}
    summary, per_text = validate_rewrites(pairs, scorer, cfg["max_chars"], smk.params.directions, cfg["batch_size"])
    write_table(smk.output.summary, summary)
    write_table(smk.output.scores, per_text)
    log.info("rewrite validation:\n%s", summary.to_string())


def run(smk) -> None:
    """Every checkpoint of one model: the scorer is loaded once (and only if some text is not in the warmth cache)
    and scores each variant's validation responses."""
    import pandas as pd

    cfg = smk.params.warmth
    scorer_dir = smk.input.scorer[0] if smk.input.scorer else cfg["scorer"]
    scorer = CachedScorer(scorer_dir, getattr(smk.params, "cache", None), threads=smk.threads, dtype=cfg["dtype"])
    for generations, scores, summary_path in zip(smk.input.generations, smk.output.scores, smk.output.summaries,
                                                 strict=True):
        per_text, summary = score_generations(pd.read_parquet(generations), scorer, cfg["max_chars"],
                                              cfg["bootstrap"], smk.params.seed, cfg["batch_size"])
        summary["scorer"] = str(scorer_dir)
        write_table(scores, per_text)
        write_json(summary_path, summary)
        log.info("%s %s: warmth %.4f +/- %.4f over %d texts", summary["persona"], summary["checkpoint"],
                 summary["warmth"], summary["warmth_se"], summary["n_texts"])
