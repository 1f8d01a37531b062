"""The RiskScorer in process: additivity of SHAP, reasons, tiers, unseen categories, the fast input path."""

from __future__ import annotations

import numpy as np
import pytest

from features.build import build_features
from serving.scorer import RiskScorer


@pytest.fixture(scope="module")
def rows(demo_generated):
    return build_features(demo_generated.book, "2025-06")


@pytest.fixture(scope="module")
def scorer(demo_trained) -> RiskScorer:
    _, _, result = demo_trained
    return RiskScorer(result.bundle, top_k=3)


def test_contributions_add_up_to_the_raw_score(scorer, rows) -> None:
    raw, contrib, base = scorer.contributions(rows.head(2000))
    np.testing.assert_allclose(contrib.sum(axis=1) + base, raw, atol=1e-9)
    assert contrib.shape == (2000, len(scorer.bundle.features))


def test_matrix_path_gives_the_same_scores_as_lightgbm_on_the_pandas_frame(scorer, rows) -> None:
    b = scorer.bundle
    sample = rows.sample(3000, random_state=1)
    via_frame = b.booster.predict(b.frame(sample), raw_score=True)
    np.testing.assert_array_equal(b.raw_score(sample), via_frame)


def test_reasons_are_the_largest_positive_contributions_with_texts(scorer, rows) -> None:
    sample = rows.head(500).reset_index(drop=True)
    out = scorer.score(sample)
    _, contrib, _ = scorer.contributions(sample)
    names = scorer.bundle.features
    for i in range(0, 500, 37):
        top = [names[j] for j in np.argsort(-contrib[i], kind="stable")[:3] if contrib[i, j] > 0]
        got = [out.loc[i, f"reason_{k}_feature"] for k in (1, 2, 3) if out.loc[i, f"reason_{k}_feature"]]
        assert got == top
        for k in range(1, len(got) + 1):
            c = out.loc[i, f"reason_{k}_contribution"]
            assert c > 0 and out.loc[i, f"reason_{k}_text"]
        assert list(out.loc[i, [f"reason_{k}_contribution" for k in range(1, len(got) + 1)]]) == sorted(
            out.loc[i, [f"reason_{k}_contribution" for k in range(1, len(got) + 1)]], reverse=True
        )
    # tier follows the thresholds and grade the master scale
    t = scorer.bundle.tier_thresholds
    assert ((out["pd"] >= t["red"]) == (out["tier"] == "red")).all()
    assert out["grade"].between(1, 10).all()


def test_reason_text_reads_like_a_credit_officer_sentence(scorer, rows) -> None:
    out = scorer.score(rows.head(3000))
    texts = set(out["reason_1_text"].dropna())
    assert any("Loan-to-value" in t or "missed" in t.lower() or "Bureau score" in t for t in texts), texts


def test_flagged_mode_gives_reasons_only_to_red_and_amber(scorer, rows) -> None:
    out = scorer.score(rows.head(5000), reasons="flagged")
    green = out["tier"] == "green"
    assert out.loc[green, "reason_1_feature"].isna().all()
    assert out.loc[~green, "reason_1_feature"].notna().all()
    none = scorer.score(rows.head(50), reasons="none")
    assert none["reason_1_feature"].isna().all()
    np.testing.assert_array_equal(none["pd"], out["pd"].head(50))
    with pytest.raises(ValueError, match="reasons must be one of"):
        scorer.score(rows.head(5), reasons="some")


def test_unseen_category_is_scored_as_missing_and_flagged(scorer, rows) -> None:
    base = rows.head(20).reset_index(drop=True)
    new = base.copy()
    new["funding_partner"] = "Brand New Trust"
    out = scorer.score(new)
    assert (out["unknown_categories"] == "funding_partner=Brand New Trust").all()
    missing = base.copy()
    missing["funding_partner"] = None
    np.testing.assert_array_equal(out["pd"], scorer.score(missing)["pd"])
    assert (scorer.score(base)["unknown_categories"] == "").all()


def test_request_loans_scored_together_equal_each_scored_alone(champion_scorer, book_index) -> None:
    """The micro-batched input path: one pass over many request loans gives each loan's own score,
    and a loan that cannot be scored fails alone."""
    import threading

    from serving.api_models import LoanInput
    from serving.loans import InputError
    from serving.runtime import ScoringRuntime

    rt = ScoringRuntime(champion_scorer.bundle, book_index, "champion")
    ids = book_index.book.loans["loan_id"].iloc[:60].tolist()
    items = []
    for lid in ids:
        try:
            items.append(LoanInput.model_validate(book_index.request_json(lid)))
        except Exception:  # loans with no row at their last month are skipped
            continue
    alone = [rt._score_items([it])[0] for it in items]
    together = rt._score_items(items + items[:3])  # repeated loan ids go in a second pass
    assert len(together) == len(items) + 3
    for a, b in zip(alone + alone[:3], together, strict=True):
        if isinstance(a, InputError):
            assert isinstance(b, InputError) and str(a) == str(b)
        else:
            assert a.pd == b.pd and a.reasons == b.reasons
    assert sum(isinstance(a, InputError) for a in alone) < len(alone)
    # many threads at once through the batcher: every caller gets its own loan's answer
    got: dict[int, object] = {}

    def call(i: int) -> None:
        try:
            got[i] = rt.score_input(items[i])
        except InputError as e:
            got[i] = e

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(items))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, a in enumerate(alone):
        b = got[i]
        assert (a.pd == b.pd) if not isinstance(a, InputError) else isinstance(b, InputError)


def test_typed_records_match_the_validated_book(demo_generated) -> None:
    """The API builds tables with typed_records; they must equal what the contract validator gives."""
    import pandas as pd

    from features.validation import typed_records, validate_tables

    book = demo_generated.book.subset_loans(demo_generated.book.loans["loan_id"].iloc[:40])
    raw = {
        n: getattr(book, n).astype(object).where(getattr(book, n).notna(), None)
        for n in ("borrowers", "loans", "collateral", "house_prices", "performance")
    }
    validated = validate_tables(raw).book
    for name, df in raw.items():
        fast = typed_records(name, df.to_dict("records"))
        pd.testing.assert_frame_equal(
            fast, getattr(validated, name).reset_index(drop=True), check_index_type=False
        )
