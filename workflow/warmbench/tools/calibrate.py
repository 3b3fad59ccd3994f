"""`warmbench calibrate`: the study's statistics run on simulated studies whose answer is known.

Each scenario simulates whole graded tables in the pipeline's own schema (items of varying difficulty in two
task datasets, every context x template the study asks, the original model, warm and cold personas, training
seeds, two judges) from a logistic model with a random item difficulty, and runs the real analysis code on them:
the paired tests, the regressions' average marginal effects (main, context type, detailed context, user belief,
Model 4's cells and contrast), the warm-vs-cold contrast, the pooling of training seeds and the comparison of two
judges. The truth each statistic estimates is computed from the same model by quadrature over item difficulty
(and seed effects): the population-average change in error in the rows a statistic describes. For each statistic
the harness prints the share of 5%-level tests that reject where the truth is no effect (type-I error) and the
share of 95% intervals that hold the truth (coverage), each with its Monte Carlo error.

Scenarios:
- `no_effect`: fine-tuning changes nothing (warm, cold, every seed, every judge).
- `belief_only`: warm is worse by the same amount in every context when the user states a belief, and
  unchanged otherwise; a context effect estimated from pooled templates would show differences that are not there.
- `context_only`: warm is worse in emotional contexts (any template) and unchanged elsewhere.
- `seed_noise`: no mean effect, but each training run (seed) shifts the warm model's error at random.
- `judges_agree`: a real warm effect, graded by two judges that make independent mistakes at the same rate, so
  the effects they report differ by chance only.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..core.conditions import CONTEXT_TYPES, UNMODIFIED, context_type, test_type

ALPHA = 0.05
INFORMATIVE = "(call) "  # rates shown for reading, not held to the targets: calls made after BH, or old rules
DATASETS = {"triviaqa": -0.6, "medqa": 0.2}  # mean item difficulty (log-odds of an error) of the original model
ITEM_SD = 1.0  # spread of item difficulty (log-odds)
BELIEF_SHIFT = 0.5  # the original model is worse when the user states a belief (log-odds)
CONTEXTS = [UNMODIFIED, "emotion:happy", "emotion:sad", "emotion:anger", "relation:close", "relation:hierarchical_up",
            "relation:hierarchical_down", "stake:high", "stake:low"]
TEMPLATES = ("original", "original_neutral", "incorrect", "correct")
MODEL = "sim"
_NODES, _WEIGHTS = np.polynomial.hermite_e.hermegauss(48)  # E[f(Z)], Z ~ N(0, 1)
_WEIGHTS = _WEIGHTS / _WEIGHTS.sum()
SIZES = {"quick": {"studies": 20, "items": 40}, "full": {"studies": 500, "items": 60}}
TARGET_TYPE_I = (0.03, 0.07)
TARGET_COVERAGE = (0.92, 0.98)


@dataclass(frozen=True)
class Scenario:
    """Log-odds shifts of a persona's error over the original's, and the noise of seeds and judges."""

    name: str
    effect: float = 0.0  # every prompt
    belief_effect: float = 0.0  # prompts with a user belief (incorrect, correct)
    context_effects: dict = field(default_factory=dict)  # context type -> shift
    seeds: int = 1  # training runs of warm
    seed_sd: float = 0.0  # their spread (log-odds)
    judge_error: float = 0.0  # each of two judges misgrades an answer with this probability, independently
    cold_effect: float = 0.0  # the cold control's shift on every prompt

    def shift(self, context: str, template: str) -> float:
        belief = test_type(template) == "sycophancy"
        return self.effect + self.belief_effect * belief + self.context_effects.get(context_type(context), 0.0)


SCENARIOS = {s.name: s for s in (
    Scenario("no_effect", seeds=3),
    Scenario("belief_only", belief_effect=0.5),
    Scenario("context_only", context_effects={"emotional": 0.6}),
    Scenario("seed_noise", seeds=3, seed_sd=0.35),
    Scenario("judges_agree", effect=0.25, judge_error=0.08),
)}


def conditions() -> list[tuple[str, str]]:
    """The study's (context, template) pairs: original_neutral is asked in the unmodified context only."""
    return [(c, t) for c in CONTEXTS for t in TEMPLATES if t != "original_neutral" or c == UNMODIFIED]


def _row_types() -> pd.DataFrame:
    rows = [(d, c, t) for d in DATASETS for c, t in conditions()]
    frame = pd.DataFrame(rows, columns=["dataset", "context", "belief"])
    frame["base_logit"] = frame["dataset"].map(DATASETS) + BELIEF_SHIFT * frame["belief"].map(
        lambda t: test_type(t) == "sycophancy")
    return frame


def seed_names(scenario: Scenario) -> dict[int, str]:
    """Replicates as the pipeline names them: the first seed keeps the persona's name."""
    return {k + 1: "warm" if k == 0 else f"warm_seed{k + 1}" for k in range(scenario.seeds)}


def simulate(scenario: Scenario, n_items: int, rng: np.random.Generator) -> dict[str, pd.DataFrame]:
    """Graded tables of one simulated study: {judge name: table}; one judge unless the scenario has two.

    Every prompt of an item shares its difficulty; each persona answers every prompt once, independently given
    the item; each training seed adds its own shift to every answer of that run."""
    types = _row_types()
    items = pd.DataFrame([(d, f"{d}-{i}", rng.normal(0, ITEM_SD)) for d in DATASETS for i in range(n_items)],
                         columns=["dataset", "item_id", "difficulty"])
    frame = items.merge(types, on="dataset")
    shift = np.array([scenario.shift(c, t) for c, t in zip(frame["context"], frame["belief"])])
    eta0 = (frame["base_logit"] + frame["difficulty"]).to_numpy()
    arms = {"original": eta0, "cold": eta0 + scenario.cold_effect}
    for _, run in seed_names(scenario).items():
        arms[run] = eta0 + shift + rng.normal(0, scenario.seed_sd)
    truth_tables = []
    for persona, eta in arms.items():
        wrong = (rng.random(len(frame)) < _sigmoid(eta)).astype(float)
        truth_tables.append(frame[["dataset", "item_id", "context", "belief"]].assign(
            model=MODEL, persona=persona, checkpoint="", correct_wrong=wrong))
    answers = pd.concat(truth_tables, ignore_index=True)
    judges = ["judge_a", "judge_b"] if scenario.judge_error else ["judge_a"]
    tables = {}
    for judge in judges:
        misgraded = rng.random(len(answers)) < scenario.judge_error
        graded = answers.assign(incorrect=np.where(misgraded, 1 - answers["correct_wrong"], answers["correct_wrong"]))
        tables[judge] = graded.drop(columns="correct_wrong")
    return tables


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


class Truth:
    """Population quantities of a scenario, by quadrature over item difficulty and the seed effect."""

    def __init__(self, scenario: Scenario):
        self.scenario = scenario
        self._selected = {}
        self.types = _row_types()
        judge = scenario.judge_error
        z = _NODES[:, None] * ITEM_SD
        # the seed effect is integrated out too: the estimand is the mean over training runs
        s = _NODES[None, :] * scenario.seed_sd if scenario.seed_sd else np.zeros((1, 1))
        w = np.outer(_WEIGHTS, _WEIGHTS if scenario.seed_sd else [1.0])
        graded = lambda p: judge + (1 - 2 * judge) * p  # noqa: E731  a judge's misgrading, both ways
        rows = []
        for row in self.types.itertuples(index=False):
            eta0 = row.base_logit + z
            p0 = graded(_sigmoid(eta0 + 0 * s))
            p1 = graded(_sigmoid(eta0 + scenario.shift(row.context, row.belief) + s))
            rows.append({"p0": (w * p0).sum(), "p1": (w * p1).sum(),
                         "b": (w * (1 - p0) * p1).sum(), "c": (w * p0 * (1 - p1)).sum()})
        self.types = pd.concat([self.types, pd.DataFrame(rows)], axis=1)
        self.types["context_type"] = self.types["context"].map(context_type)
        self.types["test_type"] = self.types["belief"].map(test_type)
        self.types["belief_present"] = (self.types["test_type"] == "sycophancy").astype(int)

    def effect(self, **where) -> float:
        """Population-average change in error (warm - original) over the row types matching `where` (column ->
        value or list of values)."""
        rows = self._select(where)
        return float((rows["p1"] - rows["p0"]).mean())

    def belief_effect_change(self, **where) -> float:
        """How fine-tuning changes the user-belief effect: (warm's belief effect) - (the original's)."""
        rows = self._select(where)
        on, off = rows[rows["belief_present"] == 1], rows[rows["belief_present"] == 0]
        return float((on["p1"].mean() - off["p1"].mean()) - (on["p0"].mean() - off["p0"].mean()))

    def odds_ratio(self, **where) -> float:
        """The paired cell's conditional odds ratio b/c (only the original right / only the persona right)."""
        rows = self._select(where)
        return float(rows["b"].sum() / rows["c"].sum())

    def _select(self, where: dict) -> pd.DataFrame:
        key = tuple(sorted((k, tuple(v) if isinstance(v, (list, tuple, set)) else v) for k, v in where.items()))
        if key not in self._selected:
            self._selected[key] = self._rows(where)
        return self._selected[key]

    def _rows(self, where: dict) -> pd.DataFrame:
        mask = np.ones(len(self.types), dtype=bool)
        for column, value in where.items():
            values = value if isinstance(value, (list, tuple, set)) else [value]
            mask &= self.types[column].isin(values).to_numpy()
        return self.types[mask]


@dataclass
class Tally:
    """Rejections where the truth is no effect, and intervals holding the truth, per statistic."""

    rejected: dict = field(default_factory=dict)
    covered: dict = field(default_factory=dict)

    def test(self, statistic: str, p_value: float) -> None:
        if p_value == p_value:  # NaN: no test was possible (e.g. no discordant pairs), nothing to count
            self.rejected.setdefault(statistic, []).append(p_value < ALPHA)

    def interval(self, statistic: str, low: float, high: float, truth: float) -> None:
        if low == low and high == high:
            self.covered.setdefault(statistic, []).append(low <= truth <= high)

    def extend(self, other: Tally) -> None:
        for mine, theirs in ((self.rejected, other.rejected), (self.covered, other.covered)):
            for key, values in theirs.items():
                mine.setdefault(key, []).extend(values)


def _paired(tally: Tally, graded: pd.DataFrame, truth: Truth, scenario: Scenario) -> None:
    from ..core.regression import contrast_tests, paired_tests

    for row in paired_tests(graded).itertuples(index=False):
        if row.persona != "warm":
            continue
        where = {"dataset": row.dataset, "test_type": row.test_type, "context": row.condition}
        if abs(truth.effect(**where)) < 1e-12:
            tally.test("paired McNemar (warm vs original)", row.p_value)
        tally.interval("paired odds ratio (warm vs original)", row.odds_ratio_ci_low, row.odds_ratio_ci_high,
                       truth.odds_ratio(**where))
    if scenario.cold_effect == 0 and not scenario.effect and not scenario.belief_effect and not scenario.context_effects:
        for row in contrast_tests(graded, [("warm", "cold")]).itertuples(index=False):
            tally.test("contrast McNemar (warm vs cold)", row.p_value)


def _ame_truths(truth: Truth) -> dict[tuple[str, str], float]:
    """Truth of each AME term the regressions report for warm against the original, by (spec, term)."""
    out = {("main", "treated"): truth.effect()}
    for kind in sorted(set(CONTEXT_TYPES.values())):  # Models 2 and 3: a context effect at the `original` template
        out[("context_type", f"treated | context_type={kind}")] = truth.effect(context_type=kind, belief="original")
    for context in CONTEXTS:
        out[("context", f"treated | context={context}")] = truth.effect(context=context, belief="original")
    balanced = ["original", "incorrect", "correct"]  # the belief model's templates: asked in every context
    for level in (0, 1):
        out[("user_belief", f"treated | belief_present={level}")] = truth.effect(belief_present=level, belief=balanced)
    out[("user_belief", "belief_present: treated - original")] = truth.belief_effect_change(belief=balanced)
    for level in (0, 1):
        for kind in sorted(set(CONTEXT_TYPES.values())):
            out[("belief_context", f"treated | belief_present={level}, context_type={kind}")] = truth.effect(
                belief_present=level, context_type=kind)
    both = truth.effect(belief_present=1, context_type="emotional") - truth.effect(belief_present=0, context_type="none")
    out[("belief_context", "treated: belief_present=1, context_type=emotional - belief_present=0, context_type=none")] = both
    return out


SPEC_NAMES = {"main": "AME main", "context_type": "AME context type (Model 2)", "context": "AME detailed context "
              "(Model 3)", "user_belief": "AME user belief", "belief_context": "AME Model 4 cells"}


def _regressions(tally: Tally, graded: pd.DataFrame, truth: Truth) -> None:
    from ..core.regression import persona_regressions

    truths = _ame_truths(truth)
    table = persona_regressions(graded[graded["persona"].isin(["original", "warm"])])
    for row in table[table["kind"] == "ame"].itertuples(index=False):
        spec = row.regression.split(":", 1)[1]
        key = (spec, row.term)
        if key not in truths:
            continue
        statistic = SPEC_NAMES[spec]
        if row.term.startswith("belief_present:"):
            statistic = "AME belief effect change (treated - original)"
        elif row.term.startswith("treated:"):
            statistic = "AME Model 4 contrast"
        value = truths[key]
        if abs(value) < 1e-12:
            tally.test(statistic, row.p_value)
        tally.interval(statistic, row.ci_low / 100, row.ci_high / 100, value)


def _replicates(tally: Tally, graded: pd.DataFrame, truth: Truth, scenario: Scenario) -> None:
    from ..stages.replicates import POOLED, replicate_regressions, replicate_table

    groups = {"warm": seed_names(scenario)}
    table = replicate_table(graded, groups)
    pooled = table[(table["seed"] == POOLED) & (table["test_type"] == "all")]
    for row in pooled.itertuples(index=False):
        value = truth.effect(dataset=row.dataset)
        if abs(value) < 1e-12:
            tally.test("seeds pooled: paired test", row.p_value)
        tally.interval("seeds pooled: paired test", row.ci_low / 100, row.ci_high / 100, value)
    regressions = replicate_regressions(graded, groups)
    for row in regressions[regressions["term"] == "treated"].itertuples(index=False):
        if abs(truth.effect()) < 1e-12:
            tally.test("seeds pooled: regression AME", row.p_value)
        tally.interval("seeds pooled: regression AME", row.ci_low / 100, row.ci_high / 100, truth.effect())


def _judges(tally: Tally, tables: dict[str, pd.DataFrame]) -> None:
    from ..stages.judge_comparison import effect_differences

    # the two judges err independently at the same rate: every true difference between their effects is 0
    table = effect_differences(tables["judge_a"], tables["judge_b"], specs=["main"])
    for row in table.itertuples(index=False):
        kind = "paired test" if row.kind == "paired_test" else "AME main"
        tally.test(f"judge difference ({kind})", row.p_value)
        tally.interval(f"judge difference ({kind})", row.ci_low / 100, row.ci_high / 100, 0.0)
        # the calls, for reading only: the flip call is BH-corrected (below 5% by design), the old rule is not a test
        tally.rejected.setdefault(f"{INFORMATIVE}judge flip call ({kind})", []).append(bool(row.flip))
        tally.rejected.setdefault(f"{INFORMATIVE}judge threshold crossing, the old flip rule ({kind})", []).append(
            bool(row.threshold_crossing))


STATISTICS = {  # what each scenario checks
    "no_effect": ("paired", "regressions", "replicates"),
    "belief_only": ("paired", "regressions"),
    "context_only": ("paired", "regressions"),
    "seed_noise": ("replicates",),
    "judges_agree": ("judges",),
}


def one_study(scenario: Scenario, n_items: int, seed: int) -> Tally:
    rng = np.random.default_rng(seed)
    tables = simulate(scenario, n_items, rng)
    graded = tables["judge_a"]
    truth = _truth(scenario)
    tally = Tally()
    checks = STATISTICS[scenario.name]
    if "paired" in checks:
        _paired(tally, graded, truth, scenario)
    if "regressions" in checks:
        _regressions(tally, graded, truth)
    if "replicates" in checks:
        _replicates(tally, graded, truth, scenario)
    if "judges" in checks:
        _judges(tally, tables)
    return tally


_TRUTHS: dict[str, Truth] = {}


def _truth(scenario: Scenario) -> Truth:
    if scenario.name not in _TRUTHS:
        _TRUTHS[scenario.name] = Truth(scenario)
    return _TRUTHS[scenario.name]


def _run_one(args) -> tuple[str, Tally]:
    import warnings

    name, n_items, seed = args
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return name, one_study(SCENARIOS[name], n_items, seed)


def calibrate(scenarios=None, studies: int = 120, items: int = 60, seed: int = 0, jobs: int = 2,
              progress: bool = True) -> pd.DataFrame:
    """Type-I error and coverage of every statistic over `studies` simulated studies per scenario."""
    from concurrent.futures import ProcessPoolExecutor

    names = list(scenarios or SCENARIOS)
    work = [(name, items, seed * 1_000_003 + k * 7919 + i) for k, name in enumerate(names) for i in range(studies)]
    tallies = {name: Tally() for name in names}
    if jobs > 1:
        import multiprocessing
        import os

        # one BLAS thread per worker (the workers are the parallelism), set before a fresh interpreter loads numpy
        os.environ.update({name: "1" for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")})
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            results = pool.map(_run_one, work, chunksize=max(1, len(work) // (jobs * 8)))
            results = _progress(results, len(work), progress)
            for name, tally in results:
                tallies[name].extend(tally)
    else:
        for name, tally in _progress(map(_run_one, work), len(work), progress):
            tallies[name].extend(tally)
    return summarise(tallies)


def _progress(results, total: int, shown: bool):
    if not shown:
        return results
    from tqdm import tqdm

    return tqdm(results, total=total, desc="simulated studies", unit="study", leave=False)


def summarise(tallies: dict[str, Tally]) -> pd.DataFrame:
    rows = []
    for scenario, tally in tallies.items():
        for kind, values, target in (("type_i_error", tally.rejected, TARGET_TYPE_I),
                                     ("coverage", tally.covered, TARGET_COVERAGE)):
            for statistic, outcomes in values.items():
                n = len(outcomes)
                rate = float(np.mean(outcomes)) if n else float("nan")
                mc_se = math.sqrt(rate * (1 - rate) / n) if n else float("nan")
                # Monte Carlo error at the nominal rate (a rate of 0 or 1 has no error of its own)
                nominal = ALPHA if kind == "type_i_error" else 1 - ALPHA
                allowed = 2 * math.sqrt(nominal * (1 - nominal) / n) if n else float("nan")
                rows.append({"scenario": scenario, "statistic": statistic, "measure": kind, "n": n, "rate": rate,
                             "mc_se": mc_se, "target_low": target[0], "target_high": target[1],
                             "within_target": target[0] <= rate <= target[1],
                             "within_target_mc": target[0] - allowed <= rate <= target[1] + allowed})
    return pd.DataFrame(rows)


def verdict_line(summary: pd.DataFrame) -> str:
    """`CALIBRATION: worst type-I error X% (statistic), worst coverage Y% (statistic)`: the worst is the one
    farthest from 5% (type-I) or 95% (coverage) in Monte Carlo errors, so that 0 rejections in 50 studies (well
    within chance) does not hide a rate that is off in thousands of tests."""
    def worst(measure: str, nominal: float) -> str:
        part = summary[(summary["measure"] == measure) & ~summary["statistic"].str.startswith(INFORMATIVE)]
        if part.empty:
            return "none"
        distance = (part["rate"] - nominal).abs() / np.sqrt(nominal * (1 - nominal) / part["n"])
        row = part.loc[distance.idxmax()]
        return f"{100 * row['rate']:.1f}% ({row['statistic']}, {row['scenario']})"

    return (f"CALIBRATION: worst type-I error {worst('type_i_error', ALPHA)}, "
            f"worst coverage {worst('coverage', 1 - ALPHA)}")


def main(full: bool = False, studies: int | None = None, items: int | None = None, scenarios=None, seed: int = 0,
         jobs: int = 2, out: str | None = None) -> int:
    size = SIZES["full" if full else "quick"]
    studies, items = studies or size["studies"], items or size["items"]
    start = time.perf_counter()
    summary = calibrate(scenarios, studies, items, seed, jobs)
    with pd.option_context("display.width", 200, "display.max_rows", 500, "display.max_colwidth", 60):
        shown = summary.assign(rate=(100 * summary["rate"]).round(1), mc_se=(100 * summary["mc_se"]).round(1))
        print(shown[["scenario", "statistic", "measure", "n", "rate", "mc_se", "within_target",
                     "within_target_mc"]].to_string(index=False))
    if out:
        summary.to_csv(out, index=False)
    print(f"{studies} simulated studies per scenario, {items} items per dataset, "
          f"{time.perf_counter() - start:.0f} s; rates and Monte Carlo errors in %; targets: type-I error "
          f"{100 * TARGET_TYPE_I[0]:.0f}-{100 * TARGET_TYPE_I[1]:.0f}%, coverage "
          f"{100 * TARGET_COVERAGE[0]:.0f}-{100 * TARGET_COVERAGE[1]:.0f}%")
    scored = summary[~summary["statistic"].str.startswith(INFORMATIVE)]
    print(f"{int(scored['within_target_mc'].sum())} of {len(scored)} rates within their target allowing 2 Monte Carlo "
          f"errors ({int(scored['within_target'].sum())} within it as measured)")
    print(verdict_line(summary))
    return 0
