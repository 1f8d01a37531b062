"""The BentoML 1.4 service: a thin typed shell around `ScoringRuntime`.

Start it with `ews serve` (which runs `bentoml serve serving.service:LoanEWS`). Configuration comes from
the environment, read once when the service starts: EWS_MODEL_NAME, EWS_MODEL_REF (alias or version),
EWS_BOOK (optional), EWS_MODELS_DIR and MLFLOW_TRACKING_URI. A missing model or an unknown bundle schema
stops startup with the reason.
"""

from __future__ import annotations

import logging
from typing import Annotated

import bentoml
from pydantic import Field
from starlette.responses import JSONResponse

from serving.api_models import (
    MAX_BATCH,
    BatchResponse,
    ExplainResponse,
    LoanInput,
    ModelInfo,
    Month,
    ScoreResponse,
)
from serving.loans import InputError

log = logging.getLogger("loan_ews.service")


def _error(e: InputError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status)


# threads: concurrent requests within a worker wait on one another's batch (serving.batcher)
@bentoml.service(name="loan_ews", workers="cpu_count", threads=16, traffic={"timeout": 60})
class LoanEWS:
    """Scores loans for credit officers: PD, grade, tier and the reasons behind a flag."""

    def __init__(self) -> None:
        import mlflow

        from serving.loans import BookIndex
        from serving.model_loader import load_model
        from serving.runtime import ScoringRuntime
        from serving.settings import ServingSettings

        self.runtime = None
        settings = ServingSettings()
        mlflow.set_tracking_uri(settings.tracking_uri())
        bundle = load_model(settings.model_name, settings.model_ref)  # ValueError stops startup
        book = BookIndex.load(settings.book) if settings.book else None
        self.runtime = ScoringRuntime(bundle, book, settings.model_ref, settings.top_k)
        log.info(
            "loan-ews serving %s version %s (%s)%s",
            bundle.name,
            bundle.version,
            settings.model_ref,
            f" with book {settings.book}" if settings.book else "",
        )

    def __is_ready__(self) -> bool:
        return self.runtime is not None

    @bentoml.api
    def score(self, loan: LoanInput) -> ScoreResponse:
        """Score a loan given in full: borrower, loan, collateral and up to 24 months of performance."""
        try:
            return self.runtime.score_input(loan)
        except InputError as e:
            return _error(e)

    @bentoml.api
    def score_by_id(
        self,
        loan_id: Annotated[str, Field(min_length=1, description="A loan of the configured book.")],
        as_of: Annotated[Month | None, Field(description="Month to score at; default the latest.")] = None,
    ) -> ScoreResponse:
        """Score a loan of the configured book by id, as of its latest month or a given month."""
        try:
            return self.runtime.score_id(loan_id, as_of and f"{as_of:%Y-%m}")
        except InputError as e:
            return _error(e)

    @bentoml.api
    def score_batch(
        self,
        loans: Annotated[
            list[LoanInput], Field(min_length=1, max_length=MAX_BATCH, description="1 to 1,000 loans.")
        ],
    ) -> BatchResponse:
        """Score up to 1,000 loans given in full in one call; any bad loan fails the call with its index."""
        ids = [item.loan.loan_id for item in loans]
        dup = sorted({x for x in ids if ids.count(x) > 1}) if len(set(ids)) < len(ids) else []
        try:
            if dup:
                raise InputError(422, [("loans", f"loan ids repeat: {', '.join(dup[:5])}")])
            return self.runtime.score_batch(loans)
        except InputError as e:
            return _error(e)

    @bentoml.api
    def explain(
        self,
        loan_id: Annotated[
            str | None, Field(description="A loan of the configured book, or give `loan`.")
        ] = None,
        as_of: Annotated[Month | None, Field(description="Month, with loan_id; default the latest.")] = None,
        loan: Annotated[
            LoanInput | None, Field(description="A loan given in full, instead of loan_id.")
        ] = None,
    ) -> ExplainResponse:
        """The full SHAP contribution vector of one loan (log-odds), with its base value and raw score."""
        try:
            if (loan_id is None) == (loan is None):
                raise InputError(422, [("loan_id", "give exactly one of loan_id or loan")])
            rows = (
                self.runtime.features_for_input(loan)
                if loan is not None
                else self.runtime.features_for_id(loan_id, as_of and f"{as_of:%Y-%m}")
            )
            return self.runtime.explain(rows)
        except InputError as e:
            return _error(e)

    @bentoml.api
    def model_info(self) -> ModelInfo:
        """Which model this server scores with: name, version, spec, windows, test metrics, thresholds."""
        return self.runtime.info()
