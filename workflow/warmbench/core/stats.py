"""The study's statistics, done as the paper describes them (and not as its released code computes them).

- Paired McNemar exact test on discordant counts b (only the original correct) and c (only the persona
  model correct); Cohen's g = max(b, c)/(b + c) - 0.5; odds ratio b/c with an exact (Clopper-Pearson)
  interval; Benjamini-Hochberg over a chosen family.
- Logistic regression (statsmodels GLM, binomial) with standard errors clustered by item, and the average
  marginal effect of the treatment in percentage points by counterfactual prediction (everyone treated vs
  everyone untreated), with a delta-method interval.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

Z95 = sps.norm.ppf(0.975)


def _discordant(b, c) -> tuple[int, int]:
    """b and c as counts, or a ValueError: a negative or fractional count is a bug upstream, not a p-value."""
    if any(isinstance(v, bool) or not float(v).is_integer() or v < 0 for v in (b, c)):
        raise ValueError(f"discordant counts must be non-negative integers, got b={b!r}, c={c!r}")
    return int(b), int(c)


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value (statsmodels: a binomial test of b against b + c at 1/2); 1 when
    there are no discordant pairs."""
    from statsmodels.stats.contingency_tables import mcnemar

    b, c = _discordant(b, c)
    return float(mcnemar(np.array([[0, b], [c, 0]]), exact=True).pvalue)


def cohens_g(b: int, c: int) -> float:
    return max(b, c) / (b + c) - 0.5 if b + c else float("nan")


def odds_ratio(b: int, c: int, alpha: float = 0.05) -> tuple[float, float, float]:
    """Conditional odds ratio b/c with an exact interval: the Clopper-Pearson interval of b/(b+c) (statsmodels'
    `beta` method) mapped to odds. NaN for all three when there are no discordant pairs."""
    from statsmodels.stats.proportion import proportion_confint

    b, c = _discordant(b, c)
    if b + c == 0:
        return float("nan"), float("nan"), float("nan")
    p_low, p_high = proportion_confint(b, b + c, alpha=alpha, method="beta")
    to_odds = lambda p: p / (1 - p) if p < 1 else float("inf")  # noqa: E731
    return (b / c if c else float("inf")), to_odds(p_low), to_odds(p_high)


def benjamini_hochberg(pvalues) -> np.ndarray:
    """BH-adjusted p-values (statsmodels' fdr_bh); NaN stays NaN and is not counted in the family."""
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(pvalues, dtype=float)
    out = np.full_like(p, np.nan)
    ok = ~np.isnan(p)
    if ((p[ok] < 0) | (p[ok] > 1)).any():
        raise ValueError(f"p-values must lie in [0, 1], got {p[ok][(p[ok] < 0) | (p[ok] > 1)][:5].tolist()}")
    if ok.any():
        out[ok] = multipletests(p[ok], method="fdr_bh")[1]
    return out


@dataclass
class AME:
    estimate: float
    se: float
    ci_low: float
    ci_high: float
    p_value: float


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


class Counterfactuals:
    """Design matrices of a fitted formula with a binary variable set to 1 and to 0 for every row.

    Built once per fit; AMEs for any subgroup are then row masks, which keeps a 440k-row study fast.
    """

    def __init__(self, result, data: pd.DataFrame, variable: str):
        from patsy import build_design_matrices

        # the fitted formula's design (statsmodels keeps it as `model_spec`): levels are coded as in the fit
        design_info = result.model.data.model_spec
        self.params = np.asarray(result.params)
        self.cov = np.asarray(result.cov_params())
        (x1,) = build_design_matrices([design_info], data.assign(**{variable: 1}), return_type="matrix")
        (x0,) = build_design_matrices([design_info], data.assign(**{variable: 0}), return_type="matrix")
        self.x1, self.x0 = np.asarray(x1), np.asarray(x0)

    def effect(self, rows=None) -> tuple[float, np.ndarray]:
        """(AME over the selected rows, its gradient in the parameters)."""
        x1, x0 = (self.x1, self.x0) if rows is None else (self.x1[rows], self.x0[rows])
        p1, p0 = _sigmoid(x1 @ self.params), _sigmoid(x0 @ self.params)
        gradient = ((p1 * (1 - p1))[:, None] * x1 - (p0 * (1 - p0))[:, None] * x0).mean(axis=0)
        return float(np.mean(p1 - p0)), gradient

    def ame(self, rows=None) -> AME:
        return delta_method_ame(*self.effect(rows), self.cov)

    def difference(self, rows_a, rows_b) -> AME:
        """AME in rows_a minus AME in rows_b (e.g. the belief effect for warm minus for original)."""
        (ea, ga), (eb, gb) = self.effect(rows_a), self.effect(rows_b)
        return delta_method_ame(ea - eb, ga - gb, self.cov)


def delta_method_ame(estimate: float, gradient: np.ndarray, cov: np.ndarray) -> AME:
    """An AME with its delta-method standard error, interval and p-value from its gradient and a covariance."""
    se = float(math.sqrt(max(gradient @ cov @ gradient, 0.0)))
    p_value = float(2 * sps.norm.sf(abs(estimate) / se)) if se > 0 else float("nan")
    return AME(estimate, se, estimate - Z95 * se, estimate + Z95 * se, p_value)


FACTORS = ("dataset", "model", "context", "context_type", "seed", "belief")


def as_factors(data: pd.DataFrame, columns=FACTORS) -> pd.DataFrame:
    """The regressions' categorical columns as pandas categoricals of their observed levels: patsy codes a
    categorical at once, where it checks a string column value by value (10x slower on a study's table). Fit
    and counterfactual predictions must then share this frame, since patsy compares the levels."""
    present = [c for c in columns if c in data.columns and not isinstance(data[c].dtype, pd.CategoricalDtype)]
    if not present:
        return data
    return data.assign(**{c: pd.Categorical(data[c].astype(str)) for c in present})


def _categorical(data, contrast=None, levels=None):
    """patsy's C(), passing a pandas categorical through as it is: patsy's own C() boxes it, and a boxed column is
    coded value by value instead of by its codes (most of a fit's time on a study's table)."""
    from patsy.categorical import C

    if contrast is None and levels is None and isinstance(getattr(data, "dtype", None), pd.CategoricalDtype):
        return data
    return C(data, contrast, levels)


def fit_logit(data: pd.DataFrame, outcome: str, treatment: str, fixed_effects: list[str], cluster: str,
              interaction: str | None = None, covariates: tuple[str, ...] = ()):
    """GLM binomial of outcome ~ treatment [* interaction] + C(fixed effects) + covariates, SEs clustered.

    Fixed effects with a single level are left out (they are absorbed by the intercept).
    """
    import statsmodels.api as sm
    import statsmodels.formula.api as smf

    terms = [f"{treatment} * {interaction}" if interaction else treatment]
    terms += [f"C({fe})" for fe in fixed_effects if data[fe].nunique() > 1] + list(covariates)
    formula = f"{outcome} ~ " + " + ".join(terms)
    groups = pd.factorize(data[cluster])[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = smf.glm(formula, data=data, family=sm.families.Binomial(), eval_env={"C": _categorical}).fit(
            cov_type="cluster", cov_kwds={"groups": groups}
        )
    return result, formula


