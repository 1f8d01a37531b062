"""Model quality on books the pipeline was never tuned on: a panel of generated books (seeds, sizes, clean
and messy profiles), the default spec trained and tested out of time on each, model AUC over the oracle's
AUC on the same test snapshots, with the master scale's populated grades and its largest grade's share;
O/E beside the point-in-time oracle's ("PIT": each loan's true state, the scenario frozen at the as-of
month, the calibration a PIT model can reach at best) and the grades failing the Jeffreys test, model/PIT;
"blind" is the same over the oracle with each test row scored by the cross-fitted member that never
trained on its loan (`training.ensemble.unseen_raw`): the test window shares its loans with the training
windows and their label windows overlap, so the model can gain by recognising a loan, which production
never allows; and a short card book with the card spec beside a plain LightGBM on the raw history of the
same accounts.

python -m bench quality            # the whole panel (about 8 minutes on 2 cores)
EWS_QUALITY_QUICK=1 python -m bench quality   # one seed per cell, for a quick look
EWS_QUALITY_SEEDS=101,102,103 python -m bench quality   # the tuning seeds (to try a change on, never
                                                        # the panel's seeds)

The panel's seeds (3, 4, 5) are not the seeds any parameter was chosen on (101-103); the figures are
printed per book and as min / median / max, never as one number.
"""

from __future__ import annotations

import os
import time

import pandas as pd

PANEL_SEEDS = (3, 4, 5)
SIZES = ((6_000, 40), (20_000, 48))
PROFILES = ("clean", "mixed")
CARD = {"loans": 30_000, "months": 9, "seed": 8}


def trained_on(n_loans: int, months: int, seed: int, profile_name: str, spec_path: str):
    """Generate a book, build its panel with the book's own context, train the spec out of time."""
    from features.context import context_table
    from features.generate import generate_book, profile
    from features.months import month_range
    from model.spec import load_spec, resolve_windows, test_months_of_book
    from training.fit import train_model
    from training.panel import build_panel

    spec = load_spec(spec_path)
    params = profile(profile_name)
    pit = test_months_of_book(spec, params.end_month, months)  # the PIT oracle's months
    g = generate_book(n_loans, months, seed, params, pit_months=pit)
    book = g.book
    w = resolve_windows(spec, book.performance["month"].min(), book.last_month)
    ctx = context_table(book.performance, book.loans, book.borrowers)
    months_ = month_range(w["train"][0], w["test"][1])
    panel = build_panel(book, months_, spec.label.rule, spec.label.horizon_months, g.oracle, ctx)
    return g, spec, w, panel, train_model(spec, panel, w)


def top_grade_share(res) -> float:
    """The share of the test window's snapshots in its most populated grade (a master scale's
    concentration)."""
    g = res.evaluation.grades
    return float(g["count"].max() / g["count"].sum())


def members(res) -> str:
    """The fewest and most boosting rounds of the cross-fitted members (each stops on its own fold)."""
    r = res.bundle.training["member_rounds"]
    return f"{min(r)}-{max(r)}"


def panel() -> None:
    quick = bool(os.environ.get("EWS_QUALITY_QUICK"))
    chosen = os.environ.get("EWS_QUALITY_SEEDS")
    seeds = tuple(int(x) for x in chosen.split(",")) if chosen else PANEL_SEEDS
    seeds = seeds[:1] if quick else seeds
    print(f"== quality panel: default spec (90+ DPD in 12 months), out of time; seeds {seeds}")
    print(
        f"{'book':<28s} {'AUC':>7s} {'oracle':>7s} {'ratio':>7s} {'blind':>7s} {'O/E':>6s} {'PIT':>5s} "
        f"{'fail':>5s} {'rounds':>6s} "
        f"{'members':>9s} "
        f"{'grades':>6s} {'top':>5s} {'secs':>5s}"
    )
    rows = []
    for profile_name in PROFILES:
        for n, m in SIZES:
            for seed in seeds:
                t0 = time.perf_counter()
                *_, res = trained_on(n, m, seed, profile_name, "models/pd_90d_12m.yaml")
                mm = res.test_metrics
                label = f"{profile_name} {n:,} x {m} seed {seed}"
                rows.append({"book": label, "profile": profile_name, "size": f"{n}x{m}", **mm})
                print(
                    f"{label:<28s} {mm['auc']:7.4f} {mm['oracle_auc']:7.4f} {mm['model_over_oracle']:7.4f} "
                    f"{mm['unseen_over_oracle']:7.4f} {mm['oe']:6.2f} {mm['pit_oracle_oe']:5.2f} "
                    f"{mm['grades_failing_jeffreys']:2.0f}/{mm['pit_oracle_grades_failing_jeffreys']:<2.0f} "
                    f"{res.best_iteration:6d} "
                    f"{members(res):>9s} {mm['grades_populated']:6.0f} "
                    f"{top_grade_share(res):5.0%} {time.perf_counter() - t0:5.0f}",
                    flush=True,
                )
    df = pd.DataFrame(rows)
    for col, what in (("model_over_oracle", "model/oracle"), ("unseen_over_oracle", "blind/oracle")):
        spread(df, col, what, ".4f", lambda r: f"{(r >= 0.97).sum()} of {len(r)} at 0.97 or more")
    # calibration in the large beside the best a point-in-time model can do (the PIT oracle)
    for col, what in (("oe", "O/E model"), ("pit_oracle_oe", "O/E PIT oracle")):
        spread(df, col, what, ".2f", lambda r: f"{r.between(0.9, 1.1).sum()} of {len(r)} within 0.9-1.1")


def spread(df: pd.DataFrame, col: str, what: str, fmt: str, count) -> None:
    """min / median / max of a column over all books and by profile and size, with a count."""
    for key, g in [("all books", df), *df.groupby(["profile", "size"])]:
        r = g[col]
        name = key if isinstance(key, str) else f"{key[0]} {key[1]}"
        print(
            f"{what:<14s} {name:<22s} min {r.min():{fmt}}  median {r.median():{fmt}}  "
            f"max {r.max():{fmt}}  ({count(r)})"
        )


def raw_history_frame(book, as_of: pd.Timestamp, lags: int = 6) -> pd.DataFrame:
    """A plain model's inputs: the account's last `lags` months of raw servicing fields side by side, and
    its static fields, for accounts with a row at `as_of`: no feature engineering at all."""
    from features.months import month_number

    perf = book.performance
    months = pd.date_range(end=as_of, periods=lags, freq="MS")
    p = perf[perf["month"].isin(months)]
    wide = p.pivot_table(
        index="loan_id",
        columns="month",
        values=["days_past_due", "balance", "scheduled_payment", "paid_amount"],
        aggfunc="first",
    )
    wide.columns = [f"{v}_{month_number(as_of) - month_number(m)}" for v, m in wide.columns]
    loans = book.loans.set_index("loan_id")[["principal", "interest_rate", "term_months", "borrower_id"]]
    b = book.borrowers.set_index("borrower_id")[["annual_income", "bureau_score", "birth_year"]]
    static = loans.join(b, on="borrower_id").drop(columns="borrower_id")
    now = p[p["month"] == as_of].set_index("loan_id")
    return wide.join(static).loc[now.index]


def card() -> None:
    """The card spec (30+ DPD next month, last labelled month as test, held-out calibration) against a
    plain LightGBM on six months of raw history trained on the month before the test month."""
    import lightgbm as lgb

    from training import metrics

    print(
        f"== card book: {CARD['loans']:,} accounts x {CARD['months']} months "
        f"(card profile, seed {CARD['seed']}), 30+ DPD in 1 month"
    )
    g, spec, w, panel_, res = trained_on(
        CARD["loans"], CARD["months"], CARD["seed"], "card", "models/card_30d_1m.yaml"
    )
    test = res.evaluation.scores
    t = w["test"][0]
    y_test = test.set_index("loan_id")["label"]
    ours = test.set_index("loan_id")["pd"]
    prev = t - pd.DateOffset(months=1)
    train = panel_[(panel_["as_of"] == prev) & (panel_["label"] >= 0)].set_index("loan_id")["label"]
    X_tr = raw_history_frame(g.book, prev).reindex(train.index)
    X_te = raw_history_frame(g.book, t).reindex(y_test.index)
    plain = lgb.LGBMClassifier(n_estimators=200, learning_rate=0.05, verbose=-1, random_state=7)
    plain.fit(X_tr, train.to_numpy())
    p_plain = plain.predict_proba(X_te[X_tr.columns])[:, 1]
    oracle = metrics.auc(y_test.to_numpy(), test.set_index("loan_id")["oracle"].to_numpy())
    a_ours = metrics.auc(y_test.to_numpy(), ours.to_numpy())
    a_plain = metrics.auc(y_test.to_numpy(), p_plain)
    print(f"test month {t:%Y-%m}: {len(y_test):,} accounts, {int(y_test.sum()):,} reach 30+ DPD next month")
    print(
        f"loan-ews card spec     AUC {a_ours:.4f}  ({res.best_iteration} rounds; "
        f"left out {len(res.dropped)} features; {res.test_metrics['grades_populated']:.0f} grades "
        f"populated, the largest holds {top_grade_share(res):.0%})"
    )
    print(f"plain LightGBM (raw)   AUC {a_plain:.4f}  (trained on {prev:%Y-%m}, {len(train):,} accounts)")
    print(
        f"oracle                 AUC {oracle:.4f}; loan-ews / oracle {a_ours / oracle:.4f}, "
        f"plain / oracle {a_plain / oracle:.4f}"
    )


def main() -> None:
    card()
    panel()


if __name__ == "__main__":
    main()
