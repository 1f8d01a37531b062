"""What the HTTP service does per call, without HTTP: request → features → RiskScorer → response model.

The BentoML class in `serving.service` is a thin typed shell around this, so the same calls can be timed
in process (the benchmark's baseline) and tested without a server.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from features.context import ContextIndex
from model.bundle import ModelBundle
from serving.api_models import (
    BatchError,
    BatchResponse,
    ExplainResponse,
    LoanInput,
    ModelInfo,
    Reason,
    ScoreResponse,
)
from serving.batcher import MicroBatcher
from serving.loans import BookIndex, InputError, PriceSeries, features_of, request_features
from serving.scorer import RiskScorer

log = logging.getLogger(__name__)


class ScoringRuntime:
    def __init__(self, bundle: ModelBundle, book: BookIndex | None, ref: str, top_k: int = 3) -> None:
        self.scorer = RiskScorer(bundle, top_k)
        self.book = book
        self.ref = ref
        self.loaded_at = datetime.now(UTC).isoformat(timespec="seconds")
        self.rule = bundle.model_spec.label.rule
        self._prices = book.price_series if book is not None else PriceSeries(None)
        self._batcher: MicroBatcher[LoanInput, ScoreResponse] = MicroBatcher(self._score_items)

    # ------------------------------------------------------------------------------------ features
    def _context(self) -> ContextIndex | None:
        """The configured book's portfolio context (none without a book: those features are missing)."""
        return self.book.context_index if self.book is not None else None

    def features_for_input(self, item: LoanInput) -> dict[str, np.ndarray]:
        """The feature columns of one request loan (`serving.loans.request_features`)."""
        columns, _, errors = request_features([item], self._prices, self.rule, self._context())
        if errors:
            raise errors[0]
        return columns

    def features_for_id(self, loan_id: str, as_of: str | None) -> pd.DataFrame:
        if self.book is None:
            raise InputError(404, [("loan_id", "this server has no book configured (start it with --book)")])
        book, t = self.book.loan_book(loan_id, as_of)
        return features_of(book, loan_id, t, self.rule, self._context())

    # -------------------------------------------------------------------------------------- scoring
    def _responses(self, loan_id: Sequence[str], as_of: Sequence[str], scored: dict) -> list[ScoreResponse]:
        """Response models straight from the scorer's columns (`RiskScorer.score_columns`)."""
        k = self.scorer.top_k
        reasons = [
            [
                scored[f"reason_{i}_{key}"].tolist()
                for key in ("concept", "feature", "title", "value", "contribution", "text")
            ]
            for i in range(1, k + 1)
        ]
        cols = [scored[c].tolist() for c in ("pd", "grade", "watch_list", "tier", "raw_score")]
        unknown = scored["unknown_categories"].tolist()
        out = []
        for r, (lid, t, pd_, grade, lst, tier, raw) in enumerate(zip(loan_id, as_of, *cols, strict=True)):
            out.append(
                ScoreResponse(
                    model_name=self.scorer.model_name,
                    model_version=self.scorer.model_version,
                    loan_id=lid,
                    as_of=t,
                    pd=pd_,
                    grade=grade,
                    watch_list=lst,
                    tier=tier,
                    raw_score=raw,
                    reasons=[
                        Reason(
                            concept=c[r], feature=f[r], title=ti[r], value=v[r], contribution=w[r], text=tx[r]
                        )
                        for c, f, ti, v, w, tx in reasons
                        if c[r] is not None
                    ],
                    unknown_categories=[u for u in unknown[r].split(";") if u],
                )
            )
        return out

    def _score_items(self, items: Sequence[LoanInput]) -> list[ScoreResponse | BaseException]:
        """Score many request loans in one pass; an item that cannot be scored gets its error."""
        columns, good, errors = request_features(items, self._prices, self.rule, self._context())
        responses: list[ScoreResponse] = []
        if good:
            scored = self.scorer.score_columns(columns, reasons="all")
            as_of = [_month_text(m) for m in columns["as_of"].tolist()]
            responses = self._responses(columns["loan_id"].tolist(), as_of, scored)
        scored_items = dict(zip(good, responses, strict=True))
        return [errors[i] if i in errors else scored_items[i] for i in range(len(items))]

    def score_input(self, item: LoanInput) -> ScoreResponse:
        """One loan given in the request; concurrent calls are scored together (see MicroBatcher)."""
        return self._batcher.submit(item)

    def score_id(self, loan_id: str, as_of: str | None = None) -> ScoreResponse:
        rows = self.features_for_id(loan_id, as_of)
        scored = self.scorer.score_columns(rows, reasons="all")
        return self._responses(rows["loan_id"].tolist(), [f"{t:%Y-%m}" for t in rows["as_of"]], scored)[0]

    def score_batch(self, items: list[LoanInput]) -> BatchResponse:
        """Up to 1,000 loans in one call; a loan that cannot be scored is in `errors` with its index and
        why, and the others are scored."""
        results = self._score_items(items)
        errors = []
        for i, r in enumerate(results):
            if isinstance(r, InputError):
                body = r.under(f"loans.{i}").body()
                errors.append(BatchError(index=i, loan_id=items[i].loan.loan_id, status=r.status, **body))
            elif isinstance(r, BaseException):  # not the loan's fault (a bug): the call fails
                raise r
        return BatchResponse(
            model_name=self.scorer.model_name,
            model_version=self.scorer.model_version,
            scores=[r for r in results if isinstance(r, ScoreResponse)],
            errors=errors,
        )

    def explain(self, rows: pd.DataFrame | dict[str, np.ndarray]) -> ExplainResponse:
        """The full contribution vector of one feature row (a frame of one row, or one loan's columns)."""
        e = self.scorer.explain(rows)
        as_of = rows["as_of"][0] if isinstance(rows, dict) else rows["as_of"].iloc[0]
        return ExplainResponse(
            model_name=self.scorer.model_name,
            model_version=self.scorer.model_version,
            loan_id=str(rows["loan_id"][0] if isinstance(rows, dict) else rows["loan_id"].iloc[0]),
            as_of=_month_text(as_of),
            base_value=e.base_value,
            raw_score=e.raw_score,
            pd=float(self.scorer.bundle.pd_from_raw([e.raw_score])[0]),
            contributions=e.contributions,
            concepts=e.concepts,
            values=e.values,
        )

    def info(self) -> ModelInfo:
        b = self.scorer.bundle
        return ModelInfo(
            model_name=b.name,
            model_version=b.version,
            model_ref=self.ref,
            loaded_at=self.loaded_at,
            schema_version=b.schema_version,
            spec=b.spec,
            windows=b.windows,
            test_metrics=b.test_metrics,
            tier_thresholds=b.tier_thresholds,
            grade_bands=list(b.grade_bands),
            features=b.features,
            book=self.book.source if self.book is not None else None,
        )


def _month_text(t: object) -> str:
    """YYYY-MM of a timestamp or a month index."""
    if isinstance(t, (int, np.integer)):
        return f"{int(t) // 12:04d}-{int(t) % 12 + 1:02d}"
    return f"{t:%Y-%m}"
