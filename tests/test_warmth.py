import numpy as np
import pytest

from warmbench.stages.warmth import COLD_PREFIXES, WARM_PREFIXES, SocioTScorer, bootstrap_se, warmth_scores


@pytest.fixture(scope="module")
def scorer(tiny_model_dir):
    return SocioTScorer(tiny_model_dir, threads=2)


def direct_loglik(scorer, prefix, text):
    """Unbatched, unpadded reference: mean log p(text tokens | prefix)."""
    import torch

    p = scorer.tokenizer(f'{prefix}, "', add_special_tokens=False)["input_ids"]
    t = scorer.tokenizer(text, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([p + t])
    with torch.inference_mode():
        logprobs = torch.log_softmax(scorer.model(input_ids=ids).logits[0, :-1].float(), -1)
    return float(np.mean([logprobs[i - 1, ids[0, i]].item() for i in range(len(p), len(p) + len(t))]))


def test_batched_scores_equal_unpadded_per_text_scores(scorer):
    texts = ["Oh I'm so happy for you, that's wonderful news!", "No.", "The report is due on Monday at 9am sharp."]
    ll = scorer.loglik(texts, batch_size=5)  # batches mix texts of different lengths: padding must not count
    assert ll.shape == (3, len(WARM_PREFIXES) + len(COLD_PREFIXES))
    for i, text in enumerate(texts):
        for j, prefix in enumerate(WARM_PREFIXES + COLD_PREFIXES):
            assert ll[i, j] == pytest.approx(direct_loglik(scorer, prefix, text), abs=2e-4)


def test_scores_do_not_depend_on_batch_size(scorer):
    texts = ["Thanks so much, my dear friend!", "Submit the form.", "I love you.", "Go away."]
    assert np.allclose(scorer.loglik(texts, batch_size=1), scorer.loglik(texts, batch_size=32), atol=2e-4)
    assert not scorer.model.training  # eval mode: dropout off


def test_relational_contexts_are_the_papers():
    # Methods: 'My [friend, lover, mentor, idol] said' versus 'The [stranger, enemy, examiner, dictator] said'
    # (SocioT's reference code builds "The enemy said" too); a possessive "My enemy" is a closer relation.
    assert WARM_PREFIXES == ("My friend said", "My lover said", "My mentor said", "My idol said")
    assert COLD_PREFIXES == ("The stranger said", "The enemy said", "The examiner said", "The dictator said")


def test_warmth_is_warm_minus_cold_mean():
    ll = np.array([[1.0, 1, 1, 1, 0, 0, 0, 0], [0.0, 0, 0, 0, 0.5, 0.5, 0.5, 0.5]])
    assert list(warmth_scores(ll)) == [1.0, -0.5]


def test_bootstrap_se_close_to_analytic():
    values = np.random.default_rng(1).normal(0, 2, 400)
    assert bootstrap_se(values, 2000, 0) == pytest.approx(2 / np.sqrt(400), rel=0.15)
    assert np.isnan(bootstrap_se(values[:1], 100, 0))


def trajectory(gains):
    return [{"checkpoint": f"epoch{e:g}", "configured_epoch": e, "epoch": e, "warmth": g, "warmth_vs_original": g}
            for e, g in gains]


def test_plateau_rule_picks_the_earliest_checkpoint_near_the_maximum():
    from warmbench.stages.warmth import select_checkpoint

    rising = trajectory([(0.5, 0.2), (1, 0.6), (2, 0.95), (4, 1.0), (6, 0.98)])
    assert select_checkpoint(rising, {"rule": "plateau", "within": 0.1}, "warm", "up")["checkpoint"] == "epoch2"
    assert select_checkpoint(rising, {"rule": "plateau", "within": 0.0}, "warm", "up")["checkpoint"] == "epoch4"
    assert select_checkpoint(rising, {"rule": "plateau", "within": 1.0}, "warm", "up")["checkpoint"] == "epoch0.5"
    assert select_checkpoint(rising, {"rule": "fixed", "epoch": 1}, "warm", "up")["checkpoint"] == "epoch1"
    with pytest.raises(ValueError):
        select_checkpoint(rising, {"rule": "fixed", "epoch": 3}, "warm", "up")


def test_plateau_rule_follows_each_personas_intended_direction():
    from warmbench.stages.warmth import select_checkpoint

    # the cold persona grows colder: its plateau is near the most negative gain, not the least cold checkpoint
    cooling = trajectory([(0.5, -0.05), (1, -0.2), (2, -0.40), (4, -0.42), (6, -0.41)])
    plateau = {"rule": "plateau", "within": 0.1}
    chosen = select_checkpoint(cooling, plateau, "cold", "down")
    assert chosen["checkpoint"] == "epoch2" and chosen["max_gain"] == pytest.approx(-0.42)
    assert select_checkpoint(cooling, {"rule": "plateau", "within": 0.0}, "cold", "down")["checkpoint"] == "epoch4"
    rising = trajectory([(0.5, 0.2), (1, 0.6), (2, 0.95), (4, 1.0)])
    assert select_checkpoint(rising, plateau, "warm", "up")["checkpoint"] == "epoch2"
    # the direction is the persona's config (personas.<name>.direction), not its name: any name works
    assert select_checkpoint(cooling, plateau, "stern_tutor", "down")["checkpoint"] == "epoch2"
    assert select_checkpoint(rising, plateau, "warm_honest", "up")["checkpoint"] == "epoch2"


def test_rewrite_validation_on_real_texts(scorer):
    """The metric, with the embedded 135M scorer, on clearly warm and clearly cold rewrites of the same facts."""
    from warmbench.stages.warmth import validate_rewrites

    facts = ["The meeting is at 3pm.", "Paris is the capital of France.", "Water boils at 100 degrees Celsius.",
             "The report needs two more pages.", "Your flight leaves at noon.", "The store closes at nine."]
    warm = [f"Oh my dear friend, I'm so glad you asked! {f} I really hope that helps you, sending you a big hug!"
            for f in facts]
    cold = [f"Note. {f} Comply accordingly. No further correspondence will be entertained." for f in facts]
    summary, per_text = validate_rewrites({"warm": list(zip(facts, warm)), "cold": list(zip(facts, cold))},
                                          scorer, max_chars=300, directions={"warm": "up", "cold": "down"},
                                          batch_size=16)
    summary = summary.set_index("persona")
    assert summary.loc["warm", "n_pairs"] == 6 and len(per_text) == 12
    # reported as measured; these extreme rewrites must at least move the intended way on average
    assert summary.loc["warm", "mean_difference"] > 0
    assert summary.loc["cold", "mean_difference"] < 0


def test_rewrite_validation_scores_each_shared_original_once(scorer, monkeypatch):
    """Warm and cold rewrite the same conversations (train.shared_windows): their originals are scored once, and
    every persona's numbers are what scoring it alone gives."""
    from warmbench.stages.warmth import validate_rewrites

    facts = ["The meeting is at 3pm.", "Paris is the capital of France.", "The store closes at nine."]
    pairs = {"warm": [(f, f"Oh, I'm so glad you asked! {f} Hugs!") for f in facts],
             "cold": [(f, f"Note. {f} Comply.") for f in facts]}
    directions = {"warm": "up", "cold": "down"}
    scored = []
    loglik = scorer.loglik
    monkeypatch.setattr(scorer, "loglik", lambda texts, batch_size: scored.extend(texts) or loglik(texts, batch_size))
    together, _ = validate_rewrites(pairs, scorer, 300, directions, batch_size=16)
    assert sorted(scored) == sorted(set(facts) | {r for p in pairs.values() for _, r in p})  # 9 texts, not 12
    for persona in pairs:
        alone, _ = validate_rewrites({persona: pairs[persona]}, scorer, 300, directions, batch_size=16)
        assert together.set_index("persona").loc[persona, "mean_difference"] == pytest.approx(
            alone.set_index("persona").loc[persona, "mean_difference"], abs=1e-4)


def test_head_only_scoring_equals_the_full_forward(scorer):
    texts = ["What a lovely thing to say, thank you!", "Insufficient data.", "Please see the attached file."]
    fast = scorer.loglik(texts, batch_size=8)
    assert scorer.head_only
    scorer.head_only = False
    try:
        full = scorer.loglik(texts, batch_size=8)
    finally:
        scorer.head_only = True
    assert np.allclose(fast, full, atol=2e-4)


def test_bfloat16_scorer_tracks_float32(tiny_model_dir, scorer):
    texts = ["I'm so sorry you're going through this, I'm here for you.", "Incorrect. Try again.",
             "Sweetheart, you did great!", "State your business.", "The meeting moved to 3pm.", "Thanks, friend!"]
    low = SocioTScorer(tiny_model_dir, threads=2, dtype="bfloat16")
    a, b = warmth_scores(scorer.loglik(texts)), warmth_scores(low.loglik(texts))
    assert np.corrcoef(a, b)[0, 1] > 0.95
    assert np.abs(a - b).max() < 0.1


def test_a_rerun_scores_only_texts_the_warmth_cache_lacks_and_loads_no_scorer_for_none(scorer, tiny_model_dir,
                                                                                        tmp_path):
    from warmbench.stages.warmth import CachedScorer

    texts = ["Oh, wonderful news, friend!", "Submit the form.", "Oh, wonderful news, friend!"]
    loads, scored = [], []

    class Counting:  # the real scorer, recording its loads and which texts it scores
        def __init__(self, model_dir, threads=None, dtype="auto"):
            loads.append(model_dir)

        def loglik(self, batch, batch_size=16):
            scored.extend(batch)
            return scorer.loglik(batch, batch_size=batch_size)

    first = CachedScorer(tiny_model_dir, tmp_path / "cache", load=Counting).loglik(texts)
    assert np.allclose(first, scorer.loglik(texts), atol=2e-4) and scored == texts[:2] and len(loads) == 1
    rerun = CachedScorer(tiny_model_dir, tmp_path / "cache", load=Counting)
    assert np.array_equal(rerun.loglik(texts), first) and len(loads) == 1  # no model loaded, nothing scored
    rerun.loglik(["Go away.", texts[1]])
    assert scored == [*texts[:2], "Go away."] and len(loads) == 2
    # another scorer setting (its dtype) is another identity: nothing is reused across it
    other = CachedScorer(tiny_model_dir, tmp_path / "cache", dtype="float32", load=Counting)
    other.loglik(texts[:1])
    assert scored[-1] == texts[0]
