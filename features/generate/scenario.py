"""The common paths every loan lives through: city house prices and macro and industry stress."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from features.generate.params import CITIES, INDUSTRIES, GeneratorParams
from features.schema import CITY_TIERS


@dataclass
class Scenario:
    first: int  # month index of calendar slot 0
    months: int  # slots
    cities: list[str]
    city_tier: np.ndarray  # tier index per city
    log_hpi: np.ndarray  # (cities, months)
    macro: np.ndarray  # (months,)
    industries: list[str]
    industry_shock: np.ndarray  # (industries, months)


def make_scenario(
    rng: np.random.Generator, first: int, months: int, window_start: int, window_len: int, p: GeneratorParams
) -> Scenario:
    """A national house-price cycle with a downturn that hits lower tiers harder, and a macro stress bump
    over the downturn plus persistent noise; each industry loads on the macro path."""
    cities = [c for tier in CITY_TIERS for c in CITIES[tier]]
    tier_of = np.array([CITY_TIERS.index(t) for t in CITY_TIERS for _ in CITIES[t]])
    t = np.arange(months)
    d0 = window_start - first + int(p.downturn_start * window_len)
    d1 = d0 + p.downturn_months
    national = 0.6 * np.sin(2 * np.pi * t / 70.0) * 0.002 + rng.normal(0, p.hpi_national_sigma, months)
    national = np.where((t >= d0) & (t < d1), national - p.downturn_depth, national)
    national = np.where(t >= d1, national + p.hpi_recovery, national)  # slow partial recovery
    drift = np.asarray(p.hpi_drift)[tier_of][:, None]
    beta = np.asarray(p.hpi_beta)[tier_of][:, None]
    growth = drift * (t[None, :] < d0) + drift * 0.3 * (t[None, :] >= d0) + beta * national[None, :]
    growth = growth + rng.normal(0, p.hpi_city_sigma, (len(cities), months))
    log_hpi = np.log(100.0) + np.cumsum(growth, axis=1)
    bump = np.clip(np.sin(np.pi * (t - d0 + 3) / (p.downturn_months + 8)), 0, None)
    bump = np.where((t >= d0 - 3) & (t < d1 + 5), bump, 0.0) * p.macro_peak
    noise = np.zeros(months)
    e = rng.normal(0, p.macro_sigma, months)
    for i in range(1, months):
        noise[i] = p.macro_ar * noise[i - 1] + e[i]
    macro = bump + noise
    names = list(INDUSTRIES)
    load = np.array([INDUSTRIES[n][0] for n in names])
    ind_noise = np.zeros((len(names), months))
    e = rng.normal(0, p.industry_sigma, (len(names), months))
    for i in range(1, months):
        ind_noise[:, i] = p.industry_ar * ind_noise[:, i - 1] + e[:, i]
    shock = load[:, None] * macro[None, :] + ind_noise
    return Scenario(first, months, cities, tier_of, log_hpi, macro, names, shock)
