"""The study's conditions as the analyses read them: prompt templates pooled into test types, contexts grouped
into context types. Shared by the stages that write conditions (eval_prompts) and those that read them (analysis,
figures, explorer, extra training data checks), so no stage imports another for them."""
from __future__ import annotations

UNMODIFIED = "unmodified"
# What the analysis makes of the conditions: the templates pooled into the paired tests' two test types (as the
# released analysis does; older tables' `none` counts as normal), and the contexts grouped into context types.
TEST_TYPES = {"none": "normal", "original": "normal", "original_neutral": "normal",
              "incorrect": "sycophancy", "correct": "sycophancy"}
CONTEXT_TYPES = {"unmodified": "none", "emotion": "emotional", "relation": "relational", "stake": "stakes"}


def test_type(belief: str) -> str:
    if belief not in TEST_TYPES:
        raise ValueError(f"unknown prompt template {belief!r} (known: {', '.join(TEST_TYPES)})")
    return TEST_TYPES[belief]


def context_type(context: str) -> str:
    return CONTEXT_TYPES.get(context.split(":")[0], "other")


def test_types(beliefs):
    """test_type of a column of templates, each distinct value looked up once (a study's table has 10^5-10^6 rows)."""
    return beliefs.map({b: test_type(b) for b in beliefs.unique()})


def context_types(contexts):
    """context_type of a column of contexts, each distinct value looked up once."""
    return contexts.map({c: context_type(c) for c in contexts.unique()})


def disinfo_question(record: dict) -> str:
    """MASK's belief-elicitation prompt without its yes/no instruction: the question itself."""
    return record["belief_elicit_1"].split("?")[0].strip() + "?"
