"""Confidence intervals that respect the data, and the comparison test that agrees with them.

Rules (docs/reports.md, "Interval rules"):

- No interval from fewer than MIN_N = 3 values: with n = 2 the t quantile is
  12.7 and the "interval" says nothing; it is reported as "n = 2: no interval".
- Positive quantities (time, throughput, energy, J/sample...) get an interval
  on the log scale: mean x exp(+-t * CV / sqrt(n)), with CV = SD / mean
  (the delta method for log(mean)). It never crosses zero and is the same
  scale as the comparison below. Quantities that may be negative (energy
  with the idle baseline subtracted) keep the linear Student-t interval.
- Two campaigns are compared on the log scale too: log(B/A) with standard
  error sqrt(CV_a^2/n_a + CV_b^2/n_b), Welch-Satterthwaite degrees of freedom,
  and the p-value from that same t distribution. The 95 % CI of B/A excludes
  1 exactly when p < 0.05: the interval and the test cannot disagree.
- A relative systematic uncertainty of the energy source (result.json
  energy.uncertainty.systematic_rel, 1 sigma) is added in quadrature on the
  log scale: half-width sqrt((t * CV/sqrt(n))^2 + (1.96 * sys)^2).
"""
from __future__ import annotations

import math

import pandas as pd
from scipy import stats

MIN_N = 3
LEVEL = 0.95
Z = stats.norm.ppf(0.5 + LEVEL / 2)


def _nan(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def no_interval_reason(n: int) -> str:
    return f"n = {n}: no interval" if n < MIN_N else ""


def t_interval(values, positive: bool = False) -> tuple:
    """(mean, sample SD, low, high) at 95 %; low/high NaN below MIN_N values.

    `positive`: the quantity cannot be negative, so the interval is taken on the log scale
    (no interval when a value is not > 0: the data contradict the assumption).
    """
    values = pd.Series(values, dtype=float).dropna()
    n = len(values)
    if n == 0:
        return math.nan, math.nan, math.nan, math.nan
    mean = float(values.mean())
    std = float(values.std(ddof=1)) if n > 1 else math.nan
    if n < MIN_N:
        return mean, std, math.nan, math.nan
    t = stats.t.ppf(0.5 + LEVEL / 2, n - 1)
    if positive:
        if (values <= 0).any() or mean <= 0:
            return mean, std, math.nan, math.nan
        half = t * std / mean / math.sqrt(n)
        return mean, std, mean * math.exp(-half), mean * math.exp(half)
    half = t * std / math.sqrt(n)
    return mean, std, mean - half, mean + half


def with_systematic(mean, std, n, systematic_rel) -> tuple:
    """(low, high): the statistical log-scale interval widened in quadrature by a relative systematic."""
    if _nan(mean) or mean <= 0 or _nan(systematic_rel):
        return math.nan, math.nan
    stat = 0.0
    if n >= MIN_N and not _nan(std):
        stat = stats.t.ppf(0.5 + LEVEL / 2, n - 1) * std / mean / math.sqrt(n)
    elif n < MIN_N:
        return math.nan, math.nan
    half = math.hypot(stat, Z * float(systematic_rel))
    return mean * math.exp(-half), mean * math.exp(half)


def log_ratio_test(mean_a, sd_a, n_a, mean_b, sd_b, n_b) -> dict:
    """B/A with its 95 % CI and the Welch t-test on the log scale, from summary statistics.

    Returns ratio, low, high, t, df, p; the interval and the p-value are NaN below MIN_N on a side.
    """
    out = {"ratio": math.nan, "low": math.nan, "high": math.nan, "t": math.nan, "df": math.nan, "p": math.nan}
    if any(map(_nan, (mean_a, mean_b))) or mean_a <= 0 or mean_b <= 0:
        return out
    out["ratio"] = ratio = mean_b / mean_a
    if n_a < MIN_N or n_b < MIN_N or _nan(sd_a) or _nan(sd_b):
        return out
    rel_a, rel_b = (sd_a / mean_a) ** 2 / n_a, (sd_b / mean_b) ** 2 / n_b
    var = rel_a + rel_b
    log_ratio = math.log(ratio)
    if var == 0:
        out.update(low=ratio, high=ratio, df=math.inf, t=math.copysign(math.inf, log_ratio) if log_ratio else math.nan,
                   p=0.0 if log_ratio else math.nan)  # identical constant sides: no test, no difference
        return out
    df = var ** 2 / (rel_a ** 2 / (n_a - 1) + rel_b ** 2 / (n_b - 1))
    se = math.sqrt(var)
    crit = stats.t.ppf(0.5 + LEVEL / 2, df)
    t = log_ratio / se
    out.update(low=ratio * math.exp(-crit * se), high=ratio * math.exp(crit * se), t=t, df=df,
               p=float(2 * stats.t.sf(abs(t), df)))
    return out


def summary_interval(mean, sd, n, positive: bool = True) -> tuple:
    """(low, high) from published summary statistics, by the same rules as t_interval."""
    if any(map(_nan, (mean, sd))) or n < MIN_N:
        return math.nan, math.nan
    t = stats.t.ppf(0.5 + LEVEL / 2, n - 1)
    if positive:
        if mean <= 0:
            return math.nan, math.nan
        half = t * sd / mean / math.sqrt(n)
        return mean * math.exp(-half), mean * math.exp(half)
    half = t * sd / math.sqrt(n)
    return mean - half, mean + half
