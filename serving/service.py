"""The BentoML 1.4 service: a thin typed shell around `ScoringRuntime`, behind `RequestGuard`.

Start it with `ews serve`, which checks the model, the store and the book first and runs
`bentoml serve serving.service:LoanEWS`. Configuration comes from the environment, read once when a
worker starts (`ServingSettings`: EWS_MODEL_NAME, EWS_MODEL_REF, EWS_BOOK, EWS_MODELS_DIR,
EWS_USERS_FILE, EWS_AUDIT_LOG, the body limits; MLFLOW_TRACKING_URI). The guard (serving.guard) checks
the API key, role, content type and body size of every request before BentoML parses it, and writes
the audit line of each loan read; the handlers name the loans they read in the request state.
"""

from __future__ import annotations

import logging
from typing import Annotated

import bentoml
from bentoml.exceptions import BentoMLException
from pydantic import Field
from starlette.responses import JSONResponse

from serving.api_models import (
    MAX_BATCH,
    BatchResponse,
    ExplainResponse,
    Id,
    LoanInput,
    ModelInfo,
    Month,
    ScoreResponse,
)
from serving.guard import SYSTEM_PATHS, Access, FailedKeys, RequestGuard, bound_request_paths
from serving.loans import InputError

log = logging.getLogger("loan_ews.service")


def _error(ctx: bentoml.Context, e: InputError) -> JSONResponse:
    ctx.response.status_code = e.status  # BentoML sets the status from the context when there is one
    return JSONResponse(e.body(), status_code=e.status)


def _reads(ctx: bentoml.Context, loans: list[tuple[str, str | None]]) -> None:
    """Name the loans this request reads (loan id, as-of month) for its audit line."""
    ctx.request.state.loans = loans


def _month(m: object) -> str | None:
    return None if m is None else f"{m:%Y-%m}"


def _as_of(item: LoanInput) -> str:
    return f"{item.as_of or item.performance[-1].month:%Y-%m}"


# threads: concurrent requests within a worker wait on one another's batch (serving.batcher)
@bentoml.service(name="loan_ews", workers="cpu_count", threads=16, traffic={"timeout": 60})
class LoanEWS:
    """Scores loans for credit officers: PD, grade, tier and the reasons behind a flag."""

    def __init__(self) -> None:
        import mlflow

        from serving.audit import JsonlAuditLog
        from serving.guard import quiet_client_errors
        from serving.loans import BookIndex
        from serving.model_loader import load_model
        from serving.runtime import ScoringRuntime
        from serving.settings import ServingSettings
        from serving.users import UserStore

        self.runtime = None
        self.access: Access | None = None
        settings = ServingSettings()
        quiet_client_errors()
        for name in ("serving", "loan_ews"):  # BentoML's workers log only its own loggers at INFO
            logging.getLogger(name).setLevel(logging.INFO)
        mlflow.set_tracking_uri(settings.tracking_uri())
        bundle = load_model(settings.model_name, settings.model_ref)  # ValueError stops startup
        book = BookIndex.load(settings.book) if settings.book else None
        users = UserStore(settings.users_path, recheck_after=settings.users_recheck_seconds)
        users.check()
        self.runtime = ScoringRuntime(bundle, book, settings.model_ref, settings.top_k)
        self.access = Access(
            users=users,
            audit=JsonlAuditLog(settings.audit_path).open(),
            max_body_bytes=settings.max_body_bytes,
            max_batch_body_bytes=settings.max_batch_body_bytes,
            model_name=bundle.name,
            model_version=bundle.version,
            body_timeout=settings.body_timeout,
            failed_keys=FailedKeys(settings.max_failed_keys),
        )
        log.info(
            "loan-ews serving %s version %s (%s)%s",
            bundle.name,
            bundle.version,
            settings.model_ref,
            " with a book" if book is not None else "",
        )

    def __is_ready__(self) -> bool:
        return self.runtime is not None and self.access is not None

    @bentoml.api
    def score(self, loan: LoanInput, ctx: bentoml.Context) -> ScoreResponse:
        """Score a loan given in full: borrower, loan, collateral and up to 24 months of performance."""
        _reads(ctx, [(loan.loan.loan_id, _as_of(loan))])
        try:
            return self.runtime.score_input(loan)
        except InputError as e:
            return _error(ctx, e.under("loan"))

    @bentoml.api
    def score_by_id(
        self,
        ctx: bentoml.Context,
        loan_id: Annotated[Id, Field(description="A loan of the configured book.")],
        as_of: Annotated[Month | None, Field(description="Month to score at; default the latest.")] = None,
    ) -> ScoreResponse:
        """Score a loan of the configured book by id, as of its latest month or a given month."""
        _reads(ctx, [(loan_id, _month(as_of))])
        try:
            res = self.runtime.score_id(loan_id, _month(as_of))
        except InputError as e:
            return _error(ctx, e)
        _reads(ctx, [(loan_id, res.as_of)])
        return res

    @bentoml.api
    def score_batch(
        self,
        ctx: bentoml.Context,
        loans: Annotated[
            list[LoanInput], Field(min_length=1, max_length=MAX_BATCH, description="1 to 1,000 loans.")
        ],
    ) -> BatchResponse:
        """Score up to 1,000 loans given in full in one call. A loan that cannot be scored (e.g. not
        performing at as_of) is listed in `errors` with its index and why; the others are scored."""
        _reads(ctx, [(item.loan.loan_id, _as_of(item)) for item in loans])
        ids = [item.loan.loan_id for item in loans]
        dup = sorted({x for x in ids if ids.count(x) > 1}) if len(set(ids)) < len(ids) else []
        try:
            if dup:
                raise InputError(422, [("loans", f"loan ids repeat: {', '.join(dup[:5])}")])
            return self.runtime.score_batch(loans)
        except InputError as e:
            return _error(ctx, e)

    @bentoml.api
    def explain(
        self,
        ctx: bentoml.Context,
        loan_id: Annotated[
            Id | None, Field(description="A loan of the configured book, or give `loan`.")
        ] = None,
        as_of: Annotated[Month | None, Field(description="Month, with loan_id; default the latest.")] = None,
        loan: Annotated[
            LoanInput | None, Field(description="A loan given in full, instead of loan_id.")
        ] = None,
    ) -> ExplainResponse:
        """The full SHAP contribution vector of one loan (log-odds), with its base value and raw score."""
        if (loan_id is None) == (loan is None):  # a cross-field rule of the request: 400, as all such
            return _error(ctx, InputError(400, [("loan_id", "give exactly one of loan_id or loan")]))
        if loan is not None and as_of is not None:  # never a month silently ignored
            return _error(
                ctx, InputError(400, [("as_of", "goes with loan_id; a loan given in full has loan.as_of")])
            )
        if loan is not None:
            _reads(ctx, [(loan.loan.loan_id, _as_of(loan))])
            try:
                rows = self.runtime.features_for_input(loan)
            except InputError as e:
                return _error(ctx, e.under("loan"))
        else:
            _reads(ctx, [(loan_id, _month(as_of))])
            try:
                rows = self.runtime.features_for_id(loan_id, _month(as_of))
            except InputError as e:
                return _error(ctx, e)
        res = self.runtime.explain(rows)
        _reads(ctx, [(res.loan_id, res.as_of)])
        return res

    @bentoml.api
    def model_info(self) -> ModelInfo:
        """Which model this server scores with: name, version, spec, windows, test metrics, thresholds."""
        return self.runtime.info()


def _access() -> Access | None:
    """The running worker's `Access`, or None while its service instance is still starting."""
    try:
        return bentoml.get_current_service().access
    except BentoMLException:
        return None


def _openapi() -> dict:
    from serving.openapi import document

    return document(LoanEWS.openapi_spec.asdict())


def _forbid_unknown_fields(service) -> None:
    """BentoML builds each endpoint's body model from its signature and ignores fields it does not
    know; here an unknown top-level field is a 400, as it is inside a loan (a typo such as `as_off`
    must not be scored as if it were absent)."""
    for api in service.apis.values():
        spec = api.input_spec
        if spec.model_config.get("extra") != "forbid":
            api.input_spec = type(
                spec.__name__,
                (spec,),
                {"model_config": {**spec.model_config, "extra": "forbid"}, "__module__": spec.__module__},
            )


_forbid_unknown_fields(LoanEWS)
PATHS = SYSTEM_PATHS | frozenset(api.route for api in LoanEWS.apis.values())
bound_request_paths(PATHS)
LoanEWS.add_asgi_middleware(RequestGuard, access=_access, openapi=_openapi, paths=PATHS)
