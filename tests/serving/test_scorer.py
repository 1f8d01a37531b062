"""The RiskScorer in process: SHAP additivity, reasons by concept (exact group sums, telling values, never
a protected attribute or a missing value), lists and tiers, unseen categories, the fast input path."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from features.build import build_features
from serving.scorer import MIN_TOLD_SHARE, SMALL_FACTORIZE, RiskScorer, _distinct, _plain, _plain_column


@pytest.fixture(scope="module")
def rows(demo_generated, demo_context):
    return build_features(demo_generated.book, "2025-06", context=demo_context)


@pytest.fixture(scope="module")
def scorer(demo_trained) -> RiskScorer:
    _, _, result = demo_trained
    return RiskScorer(result.bundle, top_k=3)


@pytest.fixture(scope="module")
def scored(scorer, rows):
    return scorer.score(rows)


def test_contributions_and_base_value_add_up_to_lightgbms_own_raw_score(scorer, rows) -> None:
    X = scorer.bundle.matrix(rows.head(2000))
    _, contrib, base = scorer.contributions(X)
    np.testing.assert_allclose(
        contrib.sum(axis=1) + base, scorer.bundle.booster.predict(X, raw_score=True), atol=1e-9
    )
    assert contrib.shape == (2000, len(scorer.bundle.features))


def test_a_concept_contribution_is_the_exact_sum_of_its_features_and_the_raw_score_still_adds_up(
    scorer, rows
) -> None:
    X = scorer.bundle.matrix(rows.head(500))
    raw, contrib, base = scorer.contributions(X)
    group = scorer.concept_contributions(contrib)
    cm = scorer.concepts
    for k, c in enumerate(cm.concepts):
        members = [
            j
            for j, f in enumerate(cm.features)
            if scorer.bundle.catalog[f].concept == c and f not in scorer.bundle.model_spec.protected
        ]
        np.testing.assert_allclose(group[:, k], contrib[:, members].sum(axis=1), atol=1e-12)
    protected = contrib[:, cm.protected].sum(axis=1) if cm.protected else 0.0
    np.testing.assert_allclose(base + group.sum(axis=1) + protected, raw, atol=1e-9)
    e = scorer.explain(rows.head(1))
    assert e.base_value + sum(e.concepts.values()) + sum(
        e.contributions[f] for f in scorer.bundle.model_spec.protected if f in e.contributions
    ) == pytest.approx(e.raw_score, abs=1e-9)


def test_reasons_are_the_largest_telling_concepts_with_sentences(scorer, rows, scored) -> None:
    X = scorer.bundle.matrix(rows)
    _, contrib, _ = scorer.contributions(X)
    group = scorer.concept_contributions(contrib)
    tell = scorer.concepts.telling(X, contrib)
    eligible = ((tell.astype(float) @ scorer.concepts.member) > 0) & (group > 0)
    # ... whose telling values carry most of the concept's weight (else its words would misstate it)
    eligible &= (np.where(tell, contrib, 0.0) @ scorer.concepts.member) >= MIN_TOLD_SHARE * group
    for i in range(0, len(rows), 397):
        want = [
            scorer.concepts.concepts[k]
            for k in np.argsort(-np.where(eligible[i], group[i], -np.inf), kind="stable")[:3]
            if eligible[i, k]
        ]
        got = [
            scored.loc[i, f"reason_{k}_concept"] for k in (1, 2, 3) if scored.loc[i, f"reason_{k}_concept"]
        ]
        assert got == want
        contribs = [scored.loc[i, f"reason_{k}_contribution"] for k in range(1, len(got) + 1)]
        assert contribs == sorted(contribs, reverse=True) and all(c > 0 for c in contribs)
        assert all(scored.loc[i, f"reason_{k}_text"] for k in range(1, len(got) + 1))
    t = scorer.bundle.tier_thresholds
    ew = scored["watch_list"] == "early_warning"
    assert ((scored.loc[ew, "pd"] >= t["early_warning"]["red"]) == (scored.loc[ew, "tier"] == "red")).all()
    assert (scored["watch_list"] == np.where(rows["dpd_now"] > 0, "in_arrears", "early_warning")).all()
    assert scored["grade"].between(1, 10).all()


def test_no_reason_is_a_protected_attribute_a_missing_value_or_a_feature_that_cannot_apply(
    scorer, rows, scored
) -> None:
    texts = scored[[f"reason_{k}_text" for k in (1, 2, 3)]].stack()
    assert not texts.str.contains("aged|not available", case=False).any()
    feats = scored[[f"reason_{k}_feature" for k in (1, 2, 3)]].stack()
    assert "age" not in set(feats) and "funding_partner" not in set(feats) and "hpi_missing" not in set(feats)
    values = scored[[f"reason_{k}_value" for k in (1, 2, 3)]]
    told = scored[[f"reason_{k}_concept" for k in (1, 2, 3)]].notna().to_numpy()
    assert values.to_numpy()[told].tolist().count(None) == 0  # every reason tells a value the loan has
    unsecured = (rows["product"] == "unsecured_consumer").to_numpy()
    concepts = scored.loc[unsecured, [f"reason_{k}_concept" for k in (1, 2, 3)]].stack()
    assert "collateral" not in set(concepts)  # an unsecured loan has no collateral to blame


def test_a_loan_in_arrears_has_its_arrears_first_and_the_sentence_leads_with_its_state(scored, rows) -> None:
    behind = (rows["dpd_now"] >= 30).to_numpy()
    assert behind.sum() > 25
    first = scored.loc[behind, "reason_1_concept"]
    assert first.isin(["arrears", "payment_history"]).all(), first.value_counts()
    # "2 missed payments in the last 6 months" led for a loan 60 days past due: its arrears come first
    # whenever they are a reason at all
    told = scored.loc[behind, ["reason_2_concept", "reason_3_concept"]].eq("arrears").any(axis=1)
    late = told & first.ne("arrears")
    assert not late.any(), scored.loc[late[late].index, ["loan_id", "reason_1_text", "reason_2_text"]]
    assert first.eq("arrears").mean() > 0.9, first.value_counts()
    lead = scored.loc[behind & (scored["reason_1_concept"] == "arrears").to_numpy()]
    dpd = rows.loc[lead.index, "dpd_now"]
    assert all(
        t.startswith(f"{d:.0f} days past due now") for t, d in zip(lead["reason_1_text"], dpd, strict=True)
    )


def test_reason_text_reads_like_a_credit_officer_sentence(scored) -> None:
    texts = set(scored["reason_1_text"].dropna())
    assert any("Loan-to-value" in t or "missed" in t.lower() or "Bureau score" in t for t in texts), texts
    assert all("{" not in t and "nan" not in t for t in texts)


def test_flagged_mode_gives_reasons_only_to_red_and_amber(scorer, rows) -> None:
    out = scorer.score(rows.head(5000), reasons="flagged")
    green = out["tier"] == "green"
    assert out.loc[green, "reason_1_concept"].isna().all()
    assert out.loc[~green, "reason_1_concept"].notna().mean() > 0.95
    none = scorer.score(rows.head(50), reasons="none")
    assert none["reason_1_concept"].isna().all()
    np.testing.assert_allclose(none["pd"], out["pd"].head(50), rtol=1e-12)  # raw score vs SHAP sum
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
            assert a.pd == b.pd and a.reasons == b.reasons and a.watch_list == b.watch_list
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


def test_the_typical_loan_is_the_stored_training_median_and_older_bundles_estimate_it() -> None:
    """Which side of a feature is risky is judged against the training median: stored with the reference
    bins of a new bundle; estimated from the bins of an older one (which has no median)."""
    from features.stability import reference_bins
    from serving.scorer import _median

    ref = reference_bins(np.arange(101, dtype=float))
    assert _median(ref) == 50.0
    old = {k: v for k, v in ref.items() if k != "median"}
    assert 40.0 <= _median(old) <= 50.0  # the lower edge of the bin holding the median
    assert np.isnan(_median(None)) and np.isnan(_median({"kind": "cat"}))


def test_a_value_that_reads_as_the_typical_one_is_never_a_reason() -> None:
    """99.6% paid, below a training median of 100%, was told as "Paid 100% of the amounts due over 12
    months", raising the risk; values are compared as the sentence shows them."""
    from types import SimpleNamespace

    from features.catalog import BY_NAME, FEATURE_NAMES
    from serving.scorer import ConceptMap

    names = ["pay_ratio_12m", "current_ltv", "dpd_now"]
    assert set(names) <= set(FEATURE_NAMES)
    bundle = SimpleNamespace(
        features=names,
        catalog=BY_NAME,
        model_spec=SimpleNamespace(protected=()),
        categories={},
        reference={
            "pay_ratio_12m": {"kind": "num", "median": 1.0},
            "current_ltv": {"kind": "num", "median": 0.60},
            "dpd_now": {"kind": "num", "median": 0.0},
        },
    )
    cm = ConceptMap(bundle)
    X = np.array(
        [
            [0.996, 0.604, 0.4],  # each reads as the median: 100%, 60%, 0 days
            [0.90, 0.75, 30.0],  # each on the risky side as shown
        ]
    )
    tell = cm.telling(X, np.ones_like(X))
    assert not tell[0].any() and tell[1].all()
    assert BY_NAME["pay_ratio_12m"].reason_text(0.996) == "Paid 100% of the amounts due over 12 months"


def test_no_reason_repeats_a_value_another_window_already_told(scorer, scored, rows) -> None:
    """'1 missed payment in the last 3 months | 1 missed payment in the last 6 months' is one payment, and
    a first lien's LTV with prior liens is its LTV: told once. A concept with nothing else to tell gives
    no reason (it had given one made only of the repeat: a new-user trial met it) and the next one does."""
    catalog = scorer.bundle.catalog
    by_measure: dict[str, list[str]] = {}
    for f in scorer.bundle.features:
        if catalog[f].measure:
            by_measure.setdefault(catalog[f].measure, []).append(f)
    step = {f: catalog[f].display_step or 1.0 for f in scorer.bundle.features}
    checked = repeats = 0
    for i in np.flatnonzero(scored["reason_1_text"].notna().to_numpy()):
        reasons = [scored[f"reason_{k}_text"].iloc[i] for k in (1, 2, 3)]
        reasons = [r.split("; ") for r in reasons if isinstance(r, str)]
        said = [s for r in reasons for s in r]
        for members in by_measure.values():
            told = {}  # shown value -> the sentences of members with it that were said
            for f in members:
                v = rows[f].iloc[i]
                text = catalog[f].reason_text(None if v != v else float(v))
                if text in said:
                    told.setdefault(round(v / step[f]), []).append(text)
            for texts in told.values():
                checked += 1
                if len(texts) > 1:
                    repeats += 1
    assert checked > 1000
    assert repeats == 0, (repeats, checked)


def test_a_concept_whose_weight_its_words_cannot_carry_gives_no_reason(scorer, scored, rows) -> None:
    """'City tier: tier1; Product: secured consumer' was a first reason worth 0.369 in log-odds where
    those two values gave 0.058: the rest came from the funding partner (never told) and months on book
    (no risky side). A concept's telling values must carry at least MIN_TOLD_SHARE of its weight."""
    X = scorer.bundle.matrix(rows)
    _, contrib, _ = scorer.contributions(X)
    cm = scorer.concepts
    group = scorer.concept_contributions(contrib)
    tell = cm.telling(X, contrib)
    telling_part = np.where(tell, contrib, 0.0) @ cm.member
    eligible = (telling_part > 0) & (group > 0)
    weak = eligible & (telling_part < MIN_TOLD_SHARE * group)
    told = scored[[f"reason_{k}_concept" for k in (1, 2, 3)]].to_numpy()
    behind = (rows["dpd_now"] >= 30).to_numpy()
    skipped = 0
    for i in np.flatnonzero(weak.any(axis=1)):
        top = [cm.concepts[k] for k in np.argsort(-np.where(eligible[i], group[i], -np.inf))[:3]]
        for k in np.flatnonzero(weak[i]):
            c = cm.concepts[k]
            if c == "arrears" and behind[i]:  # a loan 30+ days behind is told its arrears first, always
                continue
            assert c not in told[i], (scored["loan_id"].iloc[i], c, told[i])
            skipped += c in top  # a reason under the former rule
    assert skipped > 10, skipped  # the rule matters on the demo book


def test_an_ordinary_value_and_a_fact_another_sentence_says_are_never_reasons(scorer, scored, rows) -> None:
    """A number without a declared risk direction has no risky side ("171 months to maturity", "19 months
    on book"); "Behind on payments now" beside "60 days past due now" says it twice; the borrower's city's
    house prices beside the collateral's (the same city) twice again."""
    catalog = scorer.bundle.catalog
    undirected = {
        f for f in scorer.bundle.features if catalog[f].dtype == "num" and catalog[f].direction == 0
    }
    assert {"remaining_term", "months_on_book", "balance_ratio"} <= undirected
    firsts = set(scored[[f"reason_{k}_feature" for k in (1, 2, 3)]].stack())
    assert not firsts & undirected, firsts & undirected
    texts = scored[[f"reason_{k}_text" for k in (1, 2, 3)]].fillna("").agg(" | ".join, axis=1)
    assert not texts.str.contains("past due now; Behind on payments now").any()
    assert not texts.str.contains("months to maturity|month on book|months on book|amount lent").any()
    said = texts.str.extract(r"borrower's city moved ([-+][\d.]+%)")[0]
    again = texts.str.extract(r"collateral's city moved ([-+][\d.]+%) in 12")[0]
    both = said.notna() & (said == again)  # the same move of the same city, twice
    assert not both.any(), texts[both].head()


def test_a_change_on_the_safe_side_of_zero_is_never_a_reason(scorer, scored, rows) -> None:
    """'Loan-to-value has moved -3 points since origination' was a risk because the typical loan's fell 7;
    'Balance changed -5.4%' too. A signed change is a reason only on its risky side of zero."""
    catalog = scorer.bundle.catalog
    signed = [f for f in scorer.bundle.features if catalog[f].signed]
    assert {"ltv_change", "balance_trend_6m"} <= set(signed)
    told = 0
    for k in (1, 2, 3):
        feature = scored[f"reason_{k}_feature"]
        for f in signed:
            on = (feature == f).to_numpy()
            told += on.sum()
            shown = np.round(rows.loc[on, f] / (catalog[f].display_step or 1.0))
            assert (catalog[f].direction * shown > 0).all(), (f, rows.loc[on, f].describe())
    texts = scored[[f"reason_{k}_text" for k in (1, 2, 3)]].fillna("").agg(" | ".join, axis=1)
    assert not texts.str.contains(r"Loan-to-value has moved [-+]0 points|Loan-to-value has moved -").any()
    assert not texts.str.contains(r"Balance changed -").any()
    assert told > 0  # the rule leaves the risky side told


def test_a_category_that_defaults_less_than_the_book_is_never_a_reason(scorer, scored) -> None:
    """'City tier: tier1' was told of a red card account though tier1 defaults least: a category is a
    reason only where its training default rate is above the book's."""
    ref = scorer.bundle.reference
    cats = [f for f in scorer.bundle.features if f in scorer.bundle.categories and f in ref]
    safer = {f: {c for c, r in ref[f]["default_rates"].items() if r <= ref[f]["base_rate"]} for f in cats}
    assert sum(len(v) for v in safer.values()) > 3  # the demo book has such categories
    told = 0
    for k in (1, 2, 3):
        for f in cats:
            on = scored[f"reason_{k}_feature"] == f
            told += on.sum()
            values = set(scored.loc[on, f"reason_{k}_value"].astype(str))
            assert not values & safer[f], (f, values & safer[f])
    assert told > 0  # riskier categories are still told


def test_a_model_without_dpd_now_as_input_still_tells_a_loan_in_arrears_its_arrears_first(
    demo_trained, demo_panel_sample, demo_generated, rows
) -> None:
    """The rule reads the loan's DPD from its features, not from the model's inputs: a model that leaves
    `dpd_now` out (an early spec may) tells a loan 30+ days past due its arrears first all the same. With
    `dpd_now` not an input, setting it moves no score and no contribution, only the rule."""
    from model.spec import resolve_windows
    from training.fit import train_model

    spec, _, _ = demo_trained
    quick = spec.model_copy(
        update={
            "exclude_features": ["dpd_now"],
            "windows": spec.windows.model_copy(update={"train_months": 3}),
            "lightgbm": spec.lightgbm.model_copy(update={"n_estimators": 60, "early_stopping_rounds": 20}),
        }
    )
    book = demo_generated.book
    w = resolve_windows(quick, book.performance["month"].min(), book.last_month)
    scorer = RiskScorer(train_model(quick, demo_panel_sample, w).bundle, top_k=3)
    assert "dpd_now" not in scorer.bundle.features
    cols = ["reason_1_concept", "reason_2_concept", "reason_3_concept"]
    out = scorer.score(rows)
    later = out[cols[1:]].eq("arrears").any(axis=1) & out["reason_1_concept"].ne("arrears")
    later &= (rows["dpd_now"] < 30).to_numpy()
    assert later.sum() >= 10  # arrears a reason, but not the first, for loans not yet 30 days behind
    behind = rows.loc[later.to_numpy()].assign(dpd_now=60.0)
    again = scorer.score(behind)
    np.testing.assert_allclose(again["pd"], out.loc[later, "pd"], rtol=1e-12)  # the model is blind to it
    assert again["reason_1_concept"].eq("arrears").all(), again["reason_1_concept"].value_counts()


_PLAIN_VALUES = [None, 1.0, -0.0, 0.0, 2.5, "a", "b", "0"]
_RAW_VALUES = [None, np.nan, pd.NA, pd.NaT, 1.0, np.float32(2.5), 3, "a", "b", -0.0, 0.0]


@given(st.lists(st.sampled_from(range(len(_RAW_VALUES))), min_size=1, max_size=SMALL_FACTORIZE))
def test_a_requests_few_values_are_formatted_as_the_batchs_many(picks) -> None:
    """A request's few rows take a loop, a batch's many take pd.factorize: the same values and codes, so a
    loan's reason sentences do not depend on how many loans share its call."""
    raw = np.array([_RAW_VALUES[i] for i in picks], dtype=object)
    many = np.tile(raw, SMALL_FACTORIZE // len(raw) + 2)  # past the threshold: the factorize path
    assert _plain_column(raw).tolist() == _plain_column(many)[: len(raw)].tolist()
    plain = np.array([_PLAIN_VALUES[i % len(_PLAIN_VALUES)] for i in picks], dtype=object)
    codes, uniq = _distinct(plain)
    big_codes, big_uniq = _distinct(np.tile(plain, SMALL_FACTORIZE // len(plain) + 2))
    assert codes.tolist() == big_codes[: len(plain)].tolist()
    assert [_plain(u) for u in uniq] == [_plain(u) for u in big_uniq]  # factorize gives NaN for None
    assert [uniq[c] for c in codes] == plain.tolist()


def test_concept_sums_are_the_same_for_any_row_count_and_never_negative_zero(scorer) -> None:
    """A concept's contribution is its features' running sum, left to right: a loan gets the same figure
    alone or among thousands, and an all-zero concept reads 0.0 (not -0.0) in /explain's JSON."""
    rng = np.random.default_rng(3)
    n_feat = len(scorer.bundle.features)
    contrib = rng.normal(size=(3000, n_feat)) * 10.0 ** rng.integers(-12, 2, size=(3000, n_feat))
    contrib[:5] = -0.0
    many = scorer.concept_contributions(contrib)
    alone = np.vstack([scorer.concept_contributions(contrib[i : i + 1]) for i in range(0, 3000, 97)])
    assert np.array_equal(many[::97], alone)
    cm = scorer.concepts
    for k in range(len(cm.concepts)):  # the plain loop in feature order, from 0.0
        ref = np.zeros(len(contrib))
        for j in np.flatnonzero(cm.member[:, k] > 0):
            ref += contrib[:, j]
        assert np.array_equal(many[:, k], ref)
    assert not np.signbit(many[:5]).any()


def test_contributions_that_do_not_add_up_to_lightgbms_raw_score_stop_a_large_call(scorer, rows) -> None:
    """The additivity check samples a large call (2,000 evenly spaced rows): tables that misread the model
    (here one group of trees off by 0.01 in log-odds) are caught, never scored."""
    import copy
    import dataclasses

    from serving.scorer import ADDITIVITY_SAMPLE

    tables = scorer.bundle.shap_tables()
    assert tables is not None
    values = tables.values.copy()
    values[tables.val_off[0] : tables.val_off[1]] += 0.01
    bundle = copy.copy(scorer.bundle)
    bundle.__dict__["_shap_tables"] = dataclasses.replace(tables, values=values)
    X = scorer.bundle.matrix(rows)
    assert len(X) > 2 * ADDITIVITY_SAMPLE
    with pytest.raises(RuntimeError, match="do not add up"):
        RiskScorer(bundle).contributions(X)
    RiskScorer(scorer.bundle).contributions(X)  # the true tables pass the same check
