"""The validation pack's tables, on small frames whose answer is known."""

from __future__ import annotations

import numpy as np
import pandas as pd

from training.evaluate import fairness_table


def test_the_fairness_table_names_its_age_bands_as_a_reader_would() -> None:
    """The last band read '60-199' (the band's upper edge, an implementation detail); it is '60+'."""
    rows = pd.DataFrame({"age": [25, 35, 45, 55, 65, 70, np.nan], "borrower_type": ["individual"] * 7})
    y = np.array([0, 1, 0, 1, 0, 1, 0])
    table = fairness_table(rows, y, np.full(7, 0.3), np.zeros(7, dtype=bool))
    ages = table.loc[table["attribute"] == "age band", "group"].tolist()
    assert sorted(ages) == sorted(["0-29", "30-39", "40-49", "50-59", "60+", "unknown"]), table
    assert table.loc[table["group"] == "60+", "snapshots"].item() == 2
