"""The OpenAPI document the service publishes at /docs.json (the page at / renders it).

BentoML generates it from the typed API methods, but it declares OpenAPI 3.0.2 while pydantic writes
JSON Schema 2020-12 (`type: null`, numeric `exclusiveMinimum`), which is OpenAPI 3.1, and it documents
errors as `{"error": str, "detail": str}` for 400/404/500 only. `document` declares 3.1.0, replaces the
error responses by the bodies this service really sends (`ErrorBody`), per endpoint, and documents the
bearer key and which endpoints need which role.
"""

from __future__ import annotations

import copy

from serving.api_models import EXAMPLE_LOAN, ErrorBody

REF = "#/components/schemas/{model}"
ROLE_DOC = {
    "public": "Public: no key needed.",
    "officer": "Needs an API key (`Authorization: Bearer KEY`) with role officer or admin.",
    "admin": "Needs an API key (`Authorization: Bearer KEY`) with role admin.",
}
ERRORS = {
    400: "Malformed request: not JSON, a missing or unknown field, a value of the wrong type or outside "
    "its range, or a rule across fields broken. `detail[].loc` is the path of each field at fault.",
    401: "No API key, or not a valid one (the same answer for both).",
    403: "The key's role may not call this endpoint.",
    404: "No loan with this id in the configured book (or no book configured).",
    408: "The body did not arrive within the server's time limit.",
    413: "The body is larger than the server's limit; it was not read.",
    415: "The body is not `application/json`.",
    429: "Too many wrong keys from this address lately; retry after `Retry-After` seconds.",
    422: "Well-formed, but the loan cannot be scored as asked: it is not performing at as_of, or has "
    "no row for that month, or the book's validation set it aside (the rule is named), or a batch "
    "repeats a loan id.",
    500: "An error of the server, not of the request.",
    503: "The service is starting, or its audit log cannot be written (no loan is read then).",
}
API_ERRORS = {
    "/score": (400, 401, 408, 413, 415, 422, 429, 500, 503),
    "/score_by_id": (400, 401, 404, 408, 413, 415, 422, 429, 500, 503),
    "/score_batch": (400, 401, 408, 413, 415, 422, 429, 500, 503),
    "/explain": (400, 401, 404, 408, 413, 415, 422, 429, 500, 503),
    "/model_info": (400, 401, 403, 408, 413, 415, 429, 500, 503),
}
INFRA = {"/livez": "public", "/healthz": "public", "/readyz": "public", "/metrics": "admin"}
ROLES = {"/model_info": "admin"}  # every other API path: officer
REQUEST_EXAMPLES = {"/score": {"loan": EXAMPLE_LOAN}, "/score_batch": {"loans": [EXAMPLE_LOAN]}}
DESCRIPTION = """Early-warning default scores for credit officers: PD, grade, tier and the reasons behind \
a flag, for a loan given in full or a loan of the configured book.

Every endpoint but `/livez`, `/readyz` and this page needs an API key, sent as \
`Authorization: Bearer KEY` (created with `ews user add NAME --role officer|admin`). Officers score and \
read loans; `/model_info` and `/metrics` need the admin role. Bodies are JSON (`Content-Type: \
application/json`), at most the server's size limit. Every error is an `ErrorBody` whose `detail[].loc` \
names the field at fault. Every read of a loan is written to the server's audit log."""


def _error_response(status: int) -> dict:
    return {
        "description": ERRORS[status],
        "content": {"application/json": {"schema": {"$ref": REF.format(model="ErrorBody")}}},
    }


def document(generated: dict) -> dict:
    """BentoML's generated document (`Service.openapi_spec.asdict()`), made true to this service."""
    spec = copy.deepcopy(generated)
    spec["openapi"] = "3.1.0"
    spec["info"] = {"title": "loan-ews scoring service", "version": "1", "description": DESCRIPTION}
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    for unused in ("InvalidArgument", "NotFound", "InternalServerError", "TaskStatusResponse"):
        schemas.pop(unused, None)
    error_schema = ErrorBody.model_json_schema(ref_template=REF)
    schemas.update(error_schema.pop("$defs", {}))
    schemas["ErrorBody"] = error_schema
    if "LoanInput" in schemas:  # BentoML's schema objects cannot carry examples: added here
        schemas["LoanInput"]["examples"] = [EXAMPLE_LOAN]
    spec["components"]["securitySchemes"] = {
        "apiKey": {"type": "http", "scheme": "bearer", "description": "An API key from `ews user add`."}
    }
    spec["security"] = [{"apiKey": []}]
    for path, item in spec["paths"].items():
        for op in item.values():
            role = INFRA.get(path) or ROLES.get(path, "officer")
            op["description"] = f"{op.get('description', '')}\n\n{ROLE_DOC[role]}".strip()
            if role == "public":
                op["security"] = []
                continue
            if path in REQUEST_EXAMPLES:
                op["requestBody"]["content"]["application/json"]["example"] = REQUEST_EXAMPLES[path]
            codes = API_ERRORS.get(path, (401, 403, 429))
            op["responses"] = {
                "200": op["responses"].get("200") or op["responses"][200],
                **{str(c): _error_response(c) for c in codes},
            }
    spec["paths"]["/metrics"]["get"]["responses"]["200"] = {
        "description": "Prometheus metrics of this server's workers.",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    }
    return spec
