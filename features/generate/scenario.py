"""The common paths every loan lives through: city house prices and macro and industry stress."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from features.generate.params import CITIES, GeneratorParams
from features.schema import CITY_TIERS


@dataclass
class Scenario:
    first: int  # month index of calendar slot 0
    cities: list[str]
    city_tier: np.ndarray  # tier index per city
    log_hpi: np.ndarray  # (cities, months)
    macro: np.ndarray  # (months,)
    industry_shock: np.ndarray  # (industries in `GeneratorParams.industries` order, months)


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
    cycle = p.hpi_cycle_amplitude * np.sin(2 * np.pi * t / p.hpi_cycle_months) * p.hpi_cycle_unit
    national = cycle + rng.normal(0, p.hpi_national_sigma, months)
    national = np.where((t >= d0) & (t < d1), national - p.downturn_depth, national)
    national = np.where(t >= d1, national + p.hpi_recovery, national)  # slow partial recovery
    drift = np.asarray(p.hpi_drift)[tier_of][:, None]
    beta = np.asarray(p.hpi_beta)[tier_of][:, None]
    growth = (
        drift * (t[None, :] < d0)
        + drift * p.hpi_drift_downturn * (t[None, :] >= d0)
        + beta * national[None, :]
    )
    growth = growth + rng.normal(0, p.hpi_city_sigma, (len(cities), months))
    log_hpi = np.log(100.0) + np.cumsum(growth, axis=1)
    lead, lag = p.macro_lead, p.macro_lag
    bump = np.clip(np.sin(np.pi * (t - d0 + lead) / (p.downturn_months + lead + lag)), 0, None)
    bump = np.where((t >= d0 - lead) & (t < d1 + lag), bump, 0.0) * p.macro_peak
    noise = np.zeros(months)
    e = rng.normal(0, p.macro_sigma, months)
    for i in range(1, months):
        noise[i] = p.macro_ar * noise[i - 1] + e[i]
    macro = bump + noise
    load = np.array([loading for _, loading, _ in p.industries])
    ind_noise = np.zeros((len(load), months))
    e = rng.normal(0, p.industry_sigma, (len(load), months))
    for i in range(1, months):
        ind_noise[:, i] = p.industry_ar * ind_noise[:, i - 1] + e[:, i]
    shock = load[:, None] * macro[None, :] + ind_noise
    return Scenario(first, cities, tier_of, log_hpi, macro, shock)
