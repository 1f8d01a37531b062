"""What the HTTP service does per call, without HTTP: request → features → RiskScorer → response model.

The BentoML class in `serving.service` is a thin typed shell around this, so the same calls can be timed
in process (the benchmark's baseline) and tested without a server.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pandas as pd

from model.bundle import ModelBundle
from serving.api_models import (
    BatchResponse,
    ExplainResponse,
    LoanInput,
    ModelInfo,
    Reason,
    ScoreResponse,
)
from serving.batcher import MicroBatcher
from serving.loans import BookIndex, InputError, features_of, features_of_inputs
from serving.scorer import RiskScorer

log = logging.getLogger(__name__)


class ScoringRuntime:
    def __init__(self, bundle: ModelBundle, book: BookIndex | None, ref: str, top_k: int = 3) -> None:
        self.scorer = RiskScorer(bundle, top_k)
        self.book = book
        self.ref = ref
        self.loaded_at = datetime.now(UTC).isoformat(timespec="seconds")
        self.rule = bundle.model_spec.label.rule
        self._batcher: MicroBatcher[LoanInput, ScoreResponse] = MicroBatcher(self._score_items)

    # ------------------------------------------------------------------------------------ features
    def _prices(self) -> pd.DataFrame | None:
        return self.book.house_prices if self.book is not None else None

    def _context(self) -> pd.DataFrame | None:
        """The configured book's portfolio context (none without a book: those features are missing)."""
        return self.book.context if self.book is not None else None

    def features_for_input(self, item: LoanInput) -> pd.DataFrame:
        rows, errors = features_of_inputs([item], self._prices(), self.rule, self._context())
        if errors:
            raise errors[0]
        return rows

    def features_for_id(self, loan_id: str, as_of: str | None) -> pd.DataFrame:
        if self.book is None:
            raise InputError(404, [("loan_id", "this server has no book configured (start it with --book)")])
        book, t = self.book.loan_book(loan_id, as_of)
        return features_of(book, loan_id, t, self.rule, self._context())

    # -------------------------------------------------------------------------------------- scoring
    def _responses(self, rows: pd.DataFrame) -> list[ScoreResponse]:
        scored = self.scorer.score(rows, reasons="all")
        out = []
        k = self.scorer.top_k
        for r in scored.itertuples(index=False):
            d = r._asdict()
            reasons = [
                Reason(
                    concept=d[f"reason_{i}_concept"],
                    feature=d[f"reason_{i}_feature"],
                    title=d[f"reason_{i}_title"],
                    value=d[f"reason_{i}_value"],
                    contribution=d[f"reason_{i}_contribution"],
                    text=d[f"reason_{i}_text"],
                )
                for i in range(1, k + 1)
                if d[f"reason_{i}_concept"] is not None
            ]
            out.append(
                ScoreResponse(
                    model_name=self.scorer.model_name,
                    model_version=self.scorer.model_version,
                    loan_id=d["loan_id"],
                    as_of=f"{d['as_of']:%Y-%m}",
                    pd=d["pd"],
                    grade=int(d["grade"]),
                    watch_list=d["watch_list"],
                    tier=d["tier"],
                    raw_score=d["raw_score"],
                    reasons=reasons,
                    unknown_categories=[u for u in d["unknown_categories"].split(";") if u],
                )
            )
        return out

    def _score_items(self, items: list[LoanInput]) -> list[ScoreResponse | BaseException]:
        """Score many request loans in one pass; an item that cannot be scored gets its error."""
        rows, errors = features_of_inputs(items, self._prices(), self.rule, self._context())
        scored = iter(self._responses(rows)) if len(rows) else iter(())
        return [errors[i] if i in errors else next(scored) for i in range(len(items))]

    def score_input(self, item: LoanInput) -> ScoreResponse:
        """One loan given in the request; concurrent calls are scored together (see MicroBatcher)."""
        return self._batcher.submit(item)

    def score_id(self, loan_id: str, as_of: str | None = None) -> ScoreResponse:
        return self._responses(self.features_for_id(loan_id, as_of))[0]

    def score_batch(self, items: list[LoanInput]) -> BatchResponse:
        """Up to 1,000 loans in one call; any loan that cannot be scored fails the call, naming it."""
        results = self._score_items(items)
        problems = [
            (f"loans.{i}.{loc}", msg)
            for i, r in enumerate(results)
            if isinstance(r, InputError)
            for loc, msg in r.problems
        ]
        if problems:
            raise InputError(422, problems)
        return BatchResponse(
            model_name=self.scorer.model_name, model_version=self.scorer.model_version, scores=results
        )

    def explain(self, rows: pd.DataFrame) -> ExplainResponse:
        e = self.scorer.explain(rows)
        return ExplainResponse(
            model_name=self.scorer.model_name,
            model_version=self.scorer.model_version,
            loan_id=str(rows["loan_id"].iloc[0]),
            as_of=f"{rows['as_of'].iloc[0]:%Y-%m}",
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
