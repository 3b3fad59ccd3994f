import numpy as np
import pytest

from warmbench.warmth import COLD_PREFIXES, WARM_PREFIXES, SocioTScorer, bootstrap_se, warmth_scores


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


def test_warmth_is_warm_minus_cold_mean():
    ll = np.array([[1.0, 1, 1, 1, 0, 0, 0, 0], [0.0, 0, 0, 0, 0.5, 0.5, 0.5, 0.5]])
    assert list(warmth_scores(ll)) == [1.0, -0.5]


def test_bootstrap_se_close_to_analytic():
    values = np.random.default_rng(1).normal(0, 2, 400)
    assert bootstrap_se(values, 2000, 0) == pytest.approx(2 / np.sqrt(400), rel=0.15)
    assert np.isnan(bootstrap_se(values[:1], 100, 0))
