"""The MLflow registry side of promotion: aliases and the audit log.

MLflow keeps no history of aliases, so every promotion decision, pass or fail, is logged as a run of the
`loan-ews-audit` experiment (tags, metrics and the full decision as JSON). That log is the record of which
version was champion when; `history` reads it back in order.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import mlflow
import pandas as pd
from mlflow import MlflowClient

from model.bundle import ModelBundle
from model.registry import CHALLENGER, CHAMPION, ModelRef, load_bundle, resolve
from model.spec import ModelSpec
from training.evaluate import evaluate, population
from training.promote import Decision, decide, same_label
from training.tracking import ensure_experiment, label_params

log = logging.getLogger(__name__)

AUDIT_EXPERIMENT = "loan-ews-audit"


def label_conflict(client: MlflowClient, name: str, spec: ModelSpec) -> str | None:
    """Why `spec` may not be trained as a new version of `name`, or None: a registered model is one label
    (promotion compares a version with the champion, and the batch shadow-scores it), so the label and
    population of its champion (or, without one, its newest version), as its training run logged them,
    must be the spec's."""
    from mlflow.exceptions import MlflowException

    try:
        champ = resolve(client, ModelRef(name, alias=CHAMPION))
        versions = client.search_model_versions(f"name = '{name}'")
        newest = max(versions, key=lambda x: int(x.version), default=None)
        v = next((x for x in versions if x.version == champ), newest)
        params = client.get_run(v.run_id).data.params if v is not None and v.run_id else {}
    except MlflowException:
        return None  # no such model yet, or a version whose run is gone: nothing to compare with
    mine = label_params(spec)
    differ = [k for k in mine if k in params and params[k] != str(mine[k])]
    if not differ:
        return None
    theirs = ", ".join(f"{k} {params[k]}" for k in differ)
    ours = ", ".join(f"{k} {mine[k]}" for k in differ)
    return (
        f"model {name!r} version {v.version} predicts another label ({theirs}; this spec: {ours}): "
        "a model name is one label, so give this spec a `name` of its own"
    )


def promote(
    client: MlflowClient,
    name: str,
    version: str,
    window_panel: Callable[[ModelBundle], tuple[pd.DataFrame, tuple[str, str]]],
    who: str,
    book_sha256: str = "",
    artifact_root: Path | None = None,
) -> Decision:
    """Score `version` and the champion on the same out-of-time window, set `challenger` on it, and move
    `champion` only if the gates pass. A refused version keeps the `challenger` alias (so the nightly batch
    shadow-scores it). Every decision is appended to the audit log; an attempt that fails before a
    decision (no window in the book, another label than the champion's) moves no alias."""
    champ_v = resolve(client, ModelRef(name, alias=CHAMPION))
    if champ_v == str(version):
        raise ValueError(f"version {version} of {name!r} is already the champion")
    challenger = load_bundle(name, version)
    spec = challenger.model_spec
    champion = load_bundle(name, champ_v) if champ_v is not None else None
    if champion is not None and not same_label(champion, challenger):
        raise ValueError(
            f"champion v{champ_v} and challenger v{version} predict different labels or populations"
        )
    snapshots, window = window_panel(challenger)
    pop = population(snapshots, spec.population.current_only)
    ev_ch = evaluate(challenger, pop, version, spec.seed)
    ev_champ = evaluate(champion, pop, champ_v, spec.seed) if champion is not None else None
    ok, gates, reason = decide(spec.gates, challenger, ev_ch, ev_champ)
    decision = Decision(
        model=name,
        challenger_version=str(version),
        champion_before=champ_v,
        champion_after=str(version) if ok else champ_v,
        promoted=ok,
        reason=reason,
        window=window,
        gates=gates,
        challenger=ev_ch.metrics,
        champion=ev_champ.metrics if ev_champ else None,
        who=who,
        when=datetime.now(UTC).isoformat(timespec="seconds"),
        book_sha256=book_sha256,
    )
    with _undone_on_failure(client, name, str(version)):
        client.set_registered_model_alias(name, CHALLENGER, version)  # a decision is made: the challenger
        if ok:
            client.set_registered_model_alias(name, CHAMPION, version)
            client.delete_registered_model_alias(name, CHALLENGER)
        client.set_model_version_tag(name, version, "loan_ews.promotion", "promoted" if ok else reason[:4000])
        log_decision(decision, artifact_root)
    log.info("promotion of %s v%s: %s", name, version, reason)
    return decision


def rollback(
    client: MlflowClient, name: str, version: str, who: str, why: str, artifact_root: Path | None = None
) -> Decision:
    """Move `champion` back to `version`, a version the audit log shows was promoted before, without new
    gates (it passed them when it was promoted; a rollback is for when its successor misbehaves). The
    reason is required and the move is a record of the audit log like a promotion."""
    why = why.strip()
    if not why:
        raise ValueError("a rollback needs a reason (--reason)")
    champ_v = resolve(client, ModelRef(name, alias=CHAMPION))
    if champ_v == str(version):
        raise ValueError(f"version {version} of {name!r} is already the champion")
    was = [r for r in history(client, name) if r["decision"] in ("promoted", "rollback")]
    if not any(r["champion_after"] == str(version) for r in was):
        before = sorted({r["champion_after"] for r in was}, key=int)
        raise ValueError(
            f"version {version} of {name!r} was never champion (champions so far: "
            f"{', '.join(before) or 'none'}): a version that was not promoted goes through `ews promote`"
        )
    decision = Decision(
        model=name,
        challenger_version=str(version),
        champion_before=champ_v,
        champion_after=str(version),
        promoted=True,
        reason=f"rollback from v{champ_v}: {why}" if champ_v else f"rollback (there was no champion): {why}",
        window=("", ""),
        gates=[],
        challenger={},  # nothing is measured at a rollback: its metrics are those of its promotion
        who=who,
        when=datetime.now(UTC).isoformat(timespec="seconds"),
        kind="rollback",
    )
    with _undone_on_failure(client, name, str(version)):
        client.set_registered_model_alias(name, CHAMPION, str(version))
        if resolve(client, ModelRef(name, alias=CHALLENGER)) == str(version):  # not shadowed by itself
            client.delete_registered_model_alias(name, CHALLENGER)
        client.set_model_version_tag(name, str(version), "loan_ews.promotion", f"rollback: {why}"[:4000])
        log_decision(decision, artifact_root)
    log.info("rollback of %s to v%s from v%s: %s", name, version, champ_v, why)
    return decision


@contextmanager
def _undone_on_failure(client: MlflowClient, name: str, version: str) -> Iterator[None]:
    """Put the aliases and the version's promotion tag back as they were if the block fails: a champion
    moved without its audit record would be a champion `history` cannot account for (and `rollback`
    would refuse to go back to it)."""
    aliases = {a: resolve(client, ModelRef(name, alias=a)) for a in (CHAMPION, CHALLENGER)}
    tag = (client.get_model_version(name, version).tags or {}).get("loan_ews.promotion")
    try:
        yield
    except BaseException:
        try:
            for alias, was in aliases.items():
                if was is not None:
                    client.set_registered_model_alias(name, alias, was)
                elif resolve(client, ModelRef(name, alias=alias)) is not None:
                    client.delete_registered_model_alias(name, alias)
            if tag is not None:
                client.set_model_version_tag(name, version, "loan_ews.promotion", tag)
            elif "loan_ews.promotion" in (client.get_model_version(name, version).tags or {}):
                client.delete_model_version_tag(name, version, "loan_ews.promotion")
        except Exception:
            log.exception(
                "could not put the aliases of %s back as they were: check `ews registry list`", name
            )
        raise


def trained_on(client: MlflowClient, name: str, version: str) -> str:
    """The sha256 of the book a version was trained on ('' when its run is gone or did not log it)."""
    from mlflow.exceptions import MlflowException

    try:
        run_id = client.get_model_version(name, str(version)).run_id
        return client.get_run(run_id).data.params.get("book_sha256", "")
    except MlflowException:
        return ""


def _model_names(client: MlflowClient) -> list[str]:
    """Every registered model's name, all pages (a search returns 100 by default)."""
    names, token = [], None
    while True:
        page = client.search_registered_models(max_results=1000, page_token=token)
        names += [m.name for m in page]
        token = page.token
        if not token:
            return sorted(names)


def versions(client: MlflowClient, name: str | None = None) -> list[dict]:
    """Every registered version (of `name`, or of every model), newest first per model: its aliases,
    when it was registered, what its training run logged (label, test AUC, book) and its promotion."""
    from mlflow.exceptions import MlflowException

    names = [name] if name else _model_names(client)
    rows = []
    for n in names:
        for mv in sorted(client.search_model_versions(f"name = '{n}'"), key=lambda x: -int(x.version)):
            try:
                run = client.get_run(mv.run_id).data if mv.run_id else None
            except MlflowException:
                run = None
            params = run.params if run else {}
            full = client.get_model_version(n, mv.version)  # search results carry no aliases
            rows.append(
                {
                    "model": n,
                    "version": str(mv.version),
                    "aliases": sorted(full.aliases),
                    "registered": datetime.fromtimestamp(mv.creation_timestamp / 1000, UTC).isoformat(
                        timespec="seconds"
                    ),
                    "label": (
                        f"{params['dpd_threshold']}+ DPD in {params['horizon_months']} month"
                        + ("" if str(params["horizon_months"]) == "1" else "s")
                        if "dpd_threshold" in params and "horizon_months" in params
                        else ""
                    ),
                    "test_auc": run.metrics.get("test_auc") if run else None,
                    "window_test": params.get("window_test", ""),
                    "book_sha256": params.get("book_sha256", ""),
                    "promotion": (full.tags or {}).get("loan_ews.promotion", ""),
                }
            )
    return rows


def log_decision(d: Decision, artifact_root: Path | None = None) -> str:
    """Append one decision to the audit log (a run of the audit experiment); returns its run id."""
    exp_id = ensure_experiment(AUDIT_EXPERIMENT, artifact_root)
    with mlflow.start_run(experiment_id=exp_id, run_name=f"promote-{d.model}-v{d.challenger_version}") as run:
        mlflow.set_tags(
            {
                "loan_ews.kind": "promotion",
                "loan_ews.model": d.model,
                "decision": "rollback" if d.kind == "rollback" else "promoted" if d.promoted else "refused",
                "challenger_version": d.challenger_version,
                "champion_before": d.champion_before or "",
                "champion_after": d.champion_after or "",
                "who": d.who,
                "when": d.when,
                "window": f"{d.window[0]}..{d.window[1]}" if any(d.window) else "",
                "reason": d.reason[:4900],
                "book_sha256": d.book_sha256,
            }
        )
        m = {f"challenger_{k}": v for k, v in d.challenger.items()}
        if d.champion is not None:
            m.update({f"champion_{k}": v for k, v in d.champion.items()})
        m.update({f"gate_{g.name}_passed": float(g.passed) for g in d.gates})
        mlflow.log_metrics({k: float(v) for k, v in m.items() if pd.notna(v)})
        mlflow.log_dict(d.to_dict(), "decision.json")
        return run.info.run_id


def history(client: MlflowClient, name: str) -> list[dict]:
    """Every promotion decision for `name`, oldest first."""
    exp = client.get_experiment_by_name(AUDIT_EXPERIMENT)
    if exp is None:
        return []
    runs = client.search_runs(
        [exp.experiment_id],
        # a decision whose record failed half-written (its run FAILED) was undone: it is no decision
        filter_string=f"tags.`loan_ews.model` = '{name}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time ASC"],
        max_results=10_000,
    )
    rows = []
    for r in runs:
        t, m = r.data.tags, r.data.metrics
        rows.append(
            {
                "when": t.get("when", ""),
                "who": t.get("who", ""),
                "decision": t.get("decision", ""),
                "challenger_version": t.get("challenger_version", ""),
                "champion_before": t.get("champion_before", ""),
                "champion_after": t.get("champion_after", ""),
                "window": t.get("window", ""),
                "challenger_auc": m.get("challenger_auc"),
                "champion_auc": m.get("champion_auc"),
                "challenger_ece": m.get("challenger_ece"),
                "reason": t.get("reason", ""),
                "run_id": r.info.run_id,
            }
        )
    return rows
