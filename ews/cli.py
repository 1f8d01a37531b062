"""The `ews` command line: the composition root, the only module that wires features, training and serving."""

from __future__ import annotations

import json
import logging
import sys
import time
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from ews.settings import Settings

app = typer.Typer(
    help="loan-ews: early-warning default prediction for loan books.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
book_app = typer.Typer(help="Generate, validate and summarise books.", no_args_is_help=True)
app.add_typer(book_app, name="book")
features_app = typer.Typer(help="Point-in-time features and the training panel.", no_args_is_help=True)
app.add_typer(features_app, name="features")

console = Console(stderr=True)
out = Console(soft_wrap=True)


@app.callback()
def main(ctx: typer.Context, verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("alembic", "mlflow", "urllib3", "httpx", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    ctx.obj = Settings()


@contextmanager
def progress_bar():
    """A rich progress bar; yields a callback `(stage, done, total)` for long jobs."""
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
        disable=not console.is_terminal,
    ) as prog:
        tasks: dict[str, int] = {}

        def cb(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = prog.add_task(stage, total=total)
            prog.update(tasks[stage], completed=done, total=total)

        yield cb


def _error_line(msg: str) -> None:
    """`msg` as one line on stderr: never wrapped, never read as markup."""
    console.print(Text.assemble(("error:", "red"), " ", msg), soft_wrap=True)


def _fail(msg: str, code: int = 1) -> None:
    _error_line(msg)
    raise typer.Exit(code)


# ------------------------------------------------------------------------------------------------ book


@book_app.command("generate")
def book_generate(
    ctx: typer.Context,
    loans: Annotated[int, typer.Option(help="Number of loans.")] = 20_000,
    months: Annotated[int, typer.Option(help="Months of performance history.")] = 48,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives byte-identical tables.")] = 7,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Book folder (default: the demo book).")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="parquet or csv")] = "parquet",
) -> None:
    """Generate a synthetic book and its oracle PDs (oracle.parquet, beside the five tables)."""
    from features.book import write_book
    from features.generate import generate_book

    settings: Settings = ctx.obj
    target = out_dir or settings.demo_book
    t0 = time.perf_counter()
    with progress_bar() as cb:
        gen = generate_book(loans, months, seed, progress=cb)
    write_book(
        gen.book,
        target,
        fmt=fmt,
        extras={"oracle": gen.oracle},
        texts={"generator.json": json.dumps(gen.params, indent=2, sort_keys=True, default=str)},
    )
    perf = gen.book.performance
    console.print(
        f"wrote {target}: {len(gen.book.loans):,} loans, {len(perf):,} performance rows, "
        f"{len(gen.oracle):,} oracle rows in {time.perf_counter() - t0:.1f}s"
    )


@book_app.command("validate")
def book_validate(book_dir: Annotated[Path, typer.Argument(help="Book folder.")]) -> None:
    """Check a book against the contract; print every problem. Exit 1 on errors, 0 with warnings only."""
    from features.validation import validate_folder

    try:
        report = validate_folder(book_dir)
    except ValueError as e:
        _fail(str(e))
    for p in report.problems:
        out.print(p.describe(), markup=False, highlight=False)
    n_err, n_warn = len(report.errors), len(report.warnings)
    if n_err:
        out.print(f"INVALID: {n_err} errors, {n_warn} warnings", markup=False)
        raise typer.Exit(1)
    book = report.book
    assert book is not None
    out.print(
        f"VALID: {len(book.loans):,} loans, {len(book.performance):,} performance rows, {n_warn} warnings",
        markup=False,
    )


def _rate_table(title: str, df) -> Table:
    t = Table(title=title)
    t.add_column(df.index.name or "")
    for c in ("snapshots", "defaults", "rate"):
        t.add_column(c, justify="right")
    for idx, row in df.iterrows():
        t.add_row(str(idx), f"{int(row['snapshots']):,}", f"{int(row['defaults']):,}", f"{row['rate']:.2%}")
    return t


@book_app.command("summary")
def book_summary(
    book_dir: Annotated[Path, typer.Argument(help="Book folder.")],
    horizon: Annotated[int, typer.Option(help="Default horizon in months.")] = 12,
) -> None:
    """Size, realised default rates by product, city tier and year, and the oracle AUC (generated books)."""
    import pandas as pd

    from features.summary import default_rates, oracle_auc
    from features.validation import load_book

    try:
        book = load_book(book_dir)
    except ValueError as e:
        _fail(str(e))
    perf = book.performance
    out.print(
        f"book {book_dir}: {len(book.loans):,} loans, {len(book.borrowers):,} borrowers, "
        f"{len(book.collateral):,} collateral, {len(perf):,} performance rows, "
        f"{perf['month'].min():%Y-%m} to {perf['month'].max():%Y-%m}"
    )
    rates = default_rates(book, horizon)
    out.print(
        f"{horizon}-month 90+ DPD default rate of performing loans (complete windows): "
        f"{rates['all']['rate'].iloc[0]:.2%} of {int(rates['all']['snapshots'].iloc[0]):,} loan-months"
    )
    for key in ("product", "city_tier", "year"):
        out.print(_rate_table(f"by {key}", rates[key]))
    oracle_path = Path(book_dir) / "oracle.parquet"
    if oracle_path.exists():
        oracle = pd.read_parquet(oracle_path)
        for h in (3, 6, 12):
            out.print(f"oracle AUC {h:>2}m: {oracle_auc(book, oracle, h):.4f}")
    else:
        out.print("no oracle.parquet: not a generated book")


# ------------------------------------------------------------------------------------------- features


@features_app.command("build")
def features_build(
    ctx: typer.Context,
    book_dir: Annotated[
        Path | None, typer.Option("--book", help="Book folder (default: the demo book).")
    ] = None,
    start: Annotated[str, typer.Option("--from", help="First as-of month, YYYY-MM.")] = "2023-01",
    end: Annotated[str, typer.Option("--to", help="Last as-of month, YYYY-MM.")] = "2025-12",
    horizon: Annotated[int, typer.Option(help="Label horizon in months.")] = 12,
    dpd: Annotated[int, typer.Option(help="Default threshold in days past due.")] = 90,
    out_file: Annotated[Path, typer.Option("--out", help="Panel Parquet file.")] = Path("data/panel.parquet"),
    chunk_loans: Annotated[int, typer.Option(help="Loans per partition (bounds memory).")] = 50_000,
) -> None:
    """Write the panel: one row per performing (loan, as-of month) with features, label and oracle PD."""
    from training.panel import month_range, write_panel

    settings: Settings = ctx.obj
    book_dir = book_dir or settings.demo_book
    t0 = time.perf_counter()
    try:
        months = month_range(start, end)
        with progress_bar() as cb:
            rows = write_panel(book_dir, out_file, months, horizon, dpd, chunk_loans, cb)
    except ValueError as e:
        _fail(str(e))
    console.print(
        f"wrote {out_file}: {rows:,} rows over {len(months)} as-of months in {time.perf_counter() - t0:.1f}s"
    )


# ------------------------------------------------------------------------------------------- training


def _tracking(settings: Settings) -> Path:
    """MLFLOW_TRACKING_URI when set, else the SQLite store under models/; returns the artifact root."""
    import mlflow

    settings.models_dir.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(settings.tracking_uri())
    return settings.models_dir / "mlartifacts"


def _last_month(book_dir: Path):
    """The book's last reporting month (Parquet books: read from the performance table's month column)."""
    import pyarrow.parquet as pq

    from features.months import as_month

    path = Path(book_dir) / "performance.parquet"
    if not path.exists():
        raise ValueError(f"{str(book_dir)!r} has no performance.parquet (training needs a Parquet book)")
    return as_month(pq.read_table(path, columns=["month"])["month"].to_pandas().max())


def _panel(book_dir: Path, months, horizon: int, dpd: int):
    import pandas as pd

    from training.panel import iter_panel_chunks

    with progress_bar() as cb:
        chunks = list(iter_panel_chunks(book_dir, months, horizon, dpd, progress=cb))
    return pd.concat(chunks, ignore_index=True)


@app.command("train")
def train(
    ctx: typer.Context,
    spec_path: Annotated[Path, typer.Option("--spec", help="Model spec (YAML).")] = Path(
        "models/pd_90d_12m.yaml"
    ),
    book_dir: Annotated[
        Path | None, typer.Option("--book", help="Book folder (default: the demo book).")
    ] = None,
    register: Annotated[bool, typer.Option(help="Register the model under the spec's name.")] = True,
    tune_trials: Annotated[
        int, typer.Option("--tune", help="Optuna trials on the calibration window before the final fit.")
    ] = 0,
) -> None:
    """Build the panel, fit and calibrate LightGBM, validate out of time, log to MLflow and register."""
    from model.spec import load_spec, resolve_windows
    from training.fit import train_model
    from training.panel import month_range
    from training.tracking import log_training
    from training.tune import tune

    settings: Settings = ctx.obj
    book_dir = book_dir or settings.demo_book
    t0 = time.perf_counter()
    trials: list[dict] = []
    try:
        spec = load_spec(spec_path)
        last = _last_month(book_dir)
        w = resolve_windows(spec, last)
        panel = _panel(
            book_dir,
            month_range(w["train"][0], w["test"][1]),
            spec.label.horizon_months,
            spec.label.dpd_threshold,
        )
        if tune_trials:
            with progress_bar() as cb:
                spec, trials = tune(spec, panel, last, tune_trials, cb)
        result = train_model(spec, panel, last)
    except (ValueError, FileNotFoundError) as e:
        _fail(str(e))
    artifact_root = _tracking(settings)
    run_id, version = log_training(
        result, spec, spec_path, book_dir, len(panel), artifact_root, register, trials
    )
    out.print(f"trained {spec.name} version {version} (run {run_id}) in {time.perf_counter() - t0:.0f}s")
    if trials:
        best = max(trials, key=lambda t: t["value"])
        out.print(
            f"tuning: {len(trials)} trials, best calibration AUC {best['value']:.4f} with {best['params']}"
        )
    out.print("windows: " + ", ".join(f"{k} {a:%Y-%m}..{b:%Y-%m}" for k, (a, b) in result.windows.items()))
    _print_metrics(result.test_metrics, result.challenger_metrics, result.monotonicity)


def _print_metrics(m: dict, ch: dict, mono: dict[str, bool] | None) -> None:
    line = f"test AUC {m['auc']:.4f}  Gini {m['gini']:.4f}  KS {m['ks']:.4f}  ECE {m['ece']:.4f}"
    line += f"  O/E {m['oe']:.2f}"
    out.print(line + f"  capture@5% {m['capture_5pct']:.1%}   challenger AUC {ch['auc']:.4f}")
    if "oracle_auc" in m:
        out.print(f"oracle AUC {m['oracle_auc']:.4f}  model/oracle {m['model_over_oracle']:.4f}")
    if "lead_median_months" in m:
        out.print(
            f"lead time: {m['lead_flagged_share']:.1%} of defaulters flagged red/amber beforehand, median "
            f"{m['lead_median_months']:.0f} months ahead, {m['lead_3m_share']:.1%} at least 3 months ahead"
        )
    if mono is not None:
        bad = [f for f, ok in mono.items() if not ok]
        out.print(
            "monotonicity: all declared directions hold" if not bad else f"monotonicity FAILS for {bad}"
        )


def _client(settings: Settings):
    from mlflow import MlflowClient

    _tracking(settings)
    return MlflowClient()


@app.command("promote")
def promote_cmd(
    ctx: typer.Context,
    model: Annotated[str, typer.Option("--model", help="Registered model name.")] = "loan-ews-pd-12m",
    version: Annotated[
        str | None, typer.Option("--version", help="Version to promote (default: the newest).")
    ] = None,
    book_dir: Annotated[
        Path | None, typer.Option("--book", help="Book whose latest out-of-time window decides.")
    ] = None,
) -> None:
    """Gate a version against the champion on the same out-of-time window; move `champion` if it passes.

    Exit 0 when promoted, 2 when refused (the decision and why are in `ews registry history`)."""
    import getpass

    from model.spec import resolve_windows
    from training.panel import month_range
    from training.registry import promote, resolve_version
    from training.tracking import book_fingerprint

    settings: Settings = ctx.obj
    book_dir = book_dir or settings.demo_book
    client = _client(settings)

    def window_panel(spec):
        w = resolve_windows(spec, _last_month(book_dir))["test"]
        panel = _panel(book_dir, month_range(*w), spec.label.horizon_months, spec.label.dpd_threshold)
        return panel, (f"{w[0]:%Y-%m}", f"{w[1]:%Y-%m}")

    try:
        v = resolve_version(client, model, version)
        d = promote(
            client,
            model,
            v,
            window_panel,
            who=settings.user or getpass.getuser(),
            book_sha256=book_fingerprint(book_dir),
            artifact_root=settings.models_dir / "mlartifacts",
        )
    except (ValueError, FileNotFoundError) as e:
        _fail(str(e))
    t = Table(title=f"{model} v{d.challenger_version} on {d.window[0]}..{d.window[1]}")
    for c in ("gate", "value", "limit", "rule", "result"):
        t.add_column(c)
    for g in d.gates:
        t.add_row(g.name, f"{g.value:.4f}", f"{g.limit:.4f}", g.rule, "pass" if g.passed else "FAIL")
    out.print(t)
    c = d.challenger.metrics
    line = (
        f"challenger v{d.challenger_version}: AUC {c['auc']:.4f} ECE {c['ece']:.4f} PSI {c['score_psi']:.4f}"
    )
    if d.champion is not None:
        ch = d.champion.metrics
        line += f"   champion v{d.champion.version}: AUC {ch['auc']:.4f} ECE {ch['ece']:.4f}"
    out.print(line)
    out.print(("PROMOTED: " if d.promoted else "REFUSED: ") + d.reason, markup=False)
    if not d.promoted:
        raise typer.Exit(2)


registry_app = typer.Typer(help="Read the model registry and its audit log.", no_args_is_help=True)
app.add_typer(registry_app, name="registry")


@registry_app.command("history")
def registry_history(
    ctx: typer.Context, model: Annotated[str, typer.Argument(help="Registered model name.")]
) -> None:
    """Every promotion decision for a model, oldest first: who, when, versions, metrics, reason."""
    from training.registry import history

    rows = history(_client(ctx.obj), model)
    if not rows:
        out.print(f"no promotion decisions recorded for {model!r}")
        return
    fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    out.print(f"promotion history of {model} ({len(rows)} decisions, oldest first)")
    for r in rows:
        out.print(
            f"{r['when']}  {r['who']}  {r['decision'].upper():8s}  v{r['challenger_version']}  "
            f"champion {r['champion_before'] or '-'} -> {r['champion_after'] or '-'}  "
            f"window {r['window']}  AUC {fmt(r['challenger_auc'])} vs champion {fmt(r['champion_auc'])}  "
            f"ECE {fmt(r['challenger_ece'])}  {r['reason']}",
            markup=False,
            highlight=False,
        )


@app.command("report")
def report(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="Registered model name.")] = "loan-ews-pd-12m",
    version: Annotated[
        str | None, typer.Option("--version", help="Version (default: the champion, else the newest).")
    ] = None,
) -> None:
    """The validation summary of a registered model: test metrics against the oracle and the challenger."""
    from training.registry import CHAMPION, alias_version, resolve_version

    client = _client(ctx.obj)
    try:
        v = version or alias_version(client, model, CHAMPION) or resolve_version(client, model)
        v = resolve_version(client, model, v)
    except ValueError as e:
        _fail(str(e))
    mv = client.get_model_version(model, v)
    run = client.get_run(mv.run_id)
    met, par = run.data.metrics, run.data.params
    m = {k[5:]: val for k, val in met.items() if k.startswith("test_")}
    ch = {k[11:]: val for k, val in met.items() if k.startswith("challenger_")}
    aliases = ", ".join(mv.aliases) or "no alias"
    out.print(f"{model} version {v} ({aliases}), run {mv.run_id}")
    out.print(
        f"windows: train {par.get('window_train')}, calibration {par.get('window_calibration')}, "
        f"test {par.get('window_test')}; book sha256 {par.get('book_sha256', '')[:12]}"
    )
    _print_metrics(m, ch, None)
    out.print(
        f"score PSI train vs test {met.get('psi_score', float('nan')):.4f}; "
        f"monotonicity {'passes' if met.get('monotonicity_pass') == 1.0 else 'FAILS'}"
    )
    checks = [("beats the scorecard challenger", m["auc"] > ch["auc"]), ("ECE below 0.01", m["ece"] < 0.01)]
    if "oracle_auc" in m:
        checks = [
            ("AUC at least 0.97 x oracle", m["auc"] >= 0.97 * m["oracle_auc"]),
            ("AUC at most oracle + 0.005 (no leak)", m["auc"] <= m["oracle_auc"] + 0.005),
            *checks,
        ]
    for text, ok in checks:
        out.print(f"  {'PASS' if ok else 'FAIL'}  {text}")
    out.print(f"model card: runs:/{mv.run_id}/validation/model_card.md; plots under runs:/{mv.run_id}/plots")


# -------------------------------------------------------------------------------------------- serving


@app.command("serve")
def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 3000,
    book_dir: Annotated[
        Path | None,
        typer.Option("--book", help="Book to score by loan id (default: the demo book if present)."),
    ] = None,
    model: Annotated[str | None, typer.Option("--model", help="Registered model name.")] = None,
    ref: Annotated[str | None, typer.Option("--ref", help="Alias (champion) or version number.")] = None,
) -> None:
    """Run the BentoML scoring service (bentoml serve serving.service:LoanEWS) until stopped.

    Checks the port, the store, the users file, the book and the model first and refuses with one line
    (exit 1) on a fault; exits 1 if the workers keep failing or are not ready within EWS_STARTUP_TIMEOUT
    seconds; SIGTERM or SIGINT stops the server and every process it started (exit 0)."""
    import json
    import os
    import shutil
    import subprocess
    import tempfile

    settings: Settings = ctx.obj
    book = book_dir or (settings.demo_book if (settings.demo_book / "loans.parquet").exists() else None)
    # the workers read their settings from this environment; the checks run with the same one
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": settings.tracking_uri(),
        "EWS_MODELS_DIR": str(settings.models_dir.resolve()),
        "EWS_MODEL_NAME": model or settings.model_name,
        "EWS_MODEL_REF": ref or settings.model_ref,
        "EWS_USERS_FILE": str(settings.users_path.resolve()),
        "EWS_AUDIT_LOG": str(settings.audit_path.resolve()),
        "BENTOML_DO_NOT_TRACK": "True",
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE"),
    }
    if book is not None:
        env["EWS_BOOK"] = str(Path(book).resolve())
    else:
        env.pop("EWS_BOOK", None)
    check = subprocess.run(
        [sys.executable, "-m", "serving.preflight", host, str(port)],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        verdict = json.loads(check.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        verdict = {"ok": False, "error": f"the startup checks crashed (exit code {check.returncode})"}
    if not verdict["ok"]:
        _fail(f"cannot start the service: {verdict['error']}")
    if verdict["users"] == 0:
        console.print(
            "[yellow]warning:[/yellow] no API keys yet, so every request but /livez and /readyz gets 401: "
            "add one with `ews user add NAME --role officer`",
            soft_wrap=True,
        )
    # BentoML keeps its prometheus multiprocess folder under BENTOML_HOME, shared by every server on the
    # host (and wiped by each one that starts): this server gets a home of its own, removed on exit
    home = tempfile.mkdtemp(prefix="ews-serve-")
    env["BENTOML_HOME"] = home
    cmd = [
        sys.executable,
        "-m",
        "bentoml",
        "serve",
        "serving.service:LoanEWS",
        "--host",
        host,
        "--port",
        str(port),
    ]
    console.print(
        f"starting {verdict['model_name']} version {verdict['model_version']} ({env['EWS_MODEL_REF']}) "
        f"on http://{host}:{port}"
    )
    try:
        rc = _run_server(cmd, env, f"http://{host}:{port}", settings.startup_timeout)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    raise typer.Exit(rc)


def _run_server(cmd: list[str], env: dict[str, str], url: str, startup_timeout: float) -> int:
    """Run the BentoML supervisor until it exits or SIGTERM/SIGINT arrives; the exit code of `ews serve`.

    The supervisor runs in a session of its own (so a terminal's Ctrl-C reaches only this process, which
    forwards it) and is told to stop if this process dies. Whatever happens, everything it started is
    stopped before this returns (`_stop_server`): never a half-up server."""
    import signal
    import subprocess
    import uuid

    stop: list[int] = []
    previous = {
        s: signal.signal(s, lambda signum, _frame: stop.append(signum))
        for s in (signal.SIGTERM, signal.SIGINT)
    }
    server_id = uuid.uuid4().hex
    env = {**env, SERVER_ID: server_id}  # inherited by everything the supervisor starts
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, preexec_fn=_stop_with_parent)
    try:
        not_ready = _wait_ready(proc, url, startup_timeout, stop)
        if stop:
            return 0
        if not_ready:
            _error_line(f"{not_ready}; stopped it (its log is above)")
            return 1
        console.print(f"ready on {url} (docs at {url}/); SIGTERM or Ctrl-C stops it")
        while not stop and proc.poll() is None:
            with suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=0.5)
        if stop:
            return 0
        _error_line(f"the server exited with code {proc.returncode}")
        return proc.returncode or 1
    finally:
        _stop_server(proc, server_id)
        for s, handler in previous.items():
            signal.signal(s, handler)


WORKER = "_bentoml_impl.worker.service"  # in the command line of each BentoML worker
SERVER_ID = "EWS_SERVER_ID"  # in the environment of everything one `ews serve` starts
MAX_WORKER_EXITS = 3  # workers that exit before the server is ready: they are failing, not flaky


def _wait_ready(proc, url: str, timeout: float, stop: list[int]) -> str | None:
    """Poll /readyz until a worker answers 200 (None); otherwise why the server is not ready: the
    supervisor exited, its workers keep exiting (BentoML restarts them forever), or the deadline passed.
    A signal ends the wait too (`stop` is then non-empty)."""
    import httpx

    deadline = time.monotonic() + timeout
    seen: set[int] = set()
    while not stop:
        if proc.poll() is not None:
            return f"the server exited with code {proc.returncode} before it was ready"
        live = _workers(proc.pid)
        seen |= live
        if len(seen - live) >= MAX_WORKER_EXITS:
            return f"its workers keep failing to start ({len(seen - live)} exited before one was ready)"
        if time.monotonic() > deadline:
            return f"the service did not become ready within {timeout:g} s (EWS_STARTUP_TIMEOUT)"
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return None
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    return None


def _workers(pid: int) -> set[int]:
    """The pids of the BentoML workers among the descendants of `pid`."""
    import psutil

    found = set()
    with suppress(psutil.Error):
        for p in psutil.Process(pid).children(recursive=True):
            with suppress(psutil.Error):
                if WORKER in p.cmdline():
                    found.add(p.pid)
    return found


def _stop_with_parent() -> None:
    """In the child, before exec: SIGTERM it if `ews serve` dies (even by SIGKILL), Linux only."""
    if sys.platform == "linux":
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def _started_by(server_id: str) -> list:
    """Every live process carrying this server's SERVER_ID in its environment: the supervisor and its
    workers, also those orphaned by a supervisor that died while starting them (BentoML's workers run
    in sessions of their own, so neither the process group nor the tree finds them all)."""
    import psutil

    found = []
    for p in psutil.process_iter():
        with suppress(psutil.Error):
            if p.environ().get(SERVER_ID) == server_id:
                found.append(p)
    return found


def _stop_server(proc, server_id: str, grace: float = 20.0) -> None:
    """Stop the supervisor and every process it started: SIGTERM to the supervisor, which stops its
    workers; after `grace` seconds SIGKILL to whatever still carries the server's id."""
    import subprocess

    import psutil

    with suppress(psutil.NoSuchProcess):
        psutil.Process(proc.pid).terminate()
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and _started_by(server_id):
        with suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=0.2)  # reaps the supervisor once it exits
    left = _started_by(server_id)
    if left:
        console.print(f"stopping {len(left)} process(es) that did not stop within {grace:g} s")
        for p in left:
            with suppress(psutil.NoSuchProcess):
                p.kill()
        psutil.wait_procs(left, timeout=5)
    proc.wait()


# ----------------------------------------------------------------------------------------------- users

user_app = typer.Typer(help="API keys of the scoring service and their roles.", no_args_is_help=True)
app.add_typer(user_app, name="user")


def _users(settings: Settings):
    from serving.users import UserStore

    return UserStore(settings.users_path)


@user_app.command("add")
def user_add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="User name (letters, digits, . _ @ -).")],
    role: Annotated[
        str, typer.Option(help="officer (score and read loans) or admin (also model info and metrics).")
    ] = "officer",
) -> None:
    """Create a user and print its API key, once (only a salted hash is stored, in EWS_USERS_FILE)."""
    store = _users(ctx.obj)
    try:
        key = store.add(name, role)
    except ValueError as e:
        _fail(str(e))
    console.print(f"added {name} ({role}) to {store.path}; the key is shown only now:", soft_wrap=True)
    out.print(key, markup=False, highlight=False)


@user_app.command("list")
def user_list(ctx: typer.Context) -> None:
    """The users and their roles (never their keys)."""
    store = _users(ctx.obj)
    try:
        users = store.users()
    except ValueError as e:
        _fail(str(e))
    if not users:
        out.print(f"no users in {store.path}")
        return
    for u in users:
        out.print(
            f"{u.name}\t{u.role}\tkey ews_{u.key_id}_…\tcreated {u.created}", markup=False, highlight=False
        )


@user_app.command("remove")
def user_remove(ctx: typer.Context, name: Annotated[str, typer.Argument(help="User name.")]) -> None:
    """Delete a user: its key stops working at the running server's next request."""
    store = _users(ctx.obj)
    try:
        removed = store.remove(name)
    except ValueError as e:
        _fail(str(e))
    if not removed:
        _fail(f"no user {name!r} in {store.path}")
    console.print(f"removed {name}")


@app.command("score-book")
def score_book_cmd(
    ctx: typer.Context,
    as_of: Annotated[str, typer.Option("--as-of", help="Month to score, YYYY-MM.")],
    book_dir: Annotated[
        Path | None, typer.Option("--book", help="Book folder (default: the demo book).")
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", help="NAME@alias or NAME@version (default: the champion).")
    ] = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Output folder (default: data/scores).")
    ] = None,
    reasons: Annotated[str, typer.Option(help="Reasons for 'all' loans or only 'flagged' ones.")] = "all",
    chunk_loans: Annotated[int, typer.Option(help="Loans per chunk (bounds memory).")] = 50_000,
) -> None:
    """Nightly batch: score every performing loan at an as-of month; write scores, watchlist, rejects
    and summary (all or nothing); shadow-score the challenger; log the run to MLflow."""
    import mlflow

    from serving.batch import BatchConfig, parse_as_of, run_key, score_book
    from serving.model_loader import load_model, resolve
    from serving.scorer import RiskScorer
    from training.tracking import book_fingerprint, ensure_experiment

    settings: Settings = ctx.obj
    book_dir = book_dir or settings.demo_book
    name, _, ref = (model or f"{settings.model_name}@{settings.model_ref}").partition("@")
    ref = ref or "champion"
    artifact_root = _tracking(settings)
    t0 = time.perf_counter()
    try:
        cfg = BatchConfig(
            book_dir, parse_as_of(as_of), out_dir or settings.data_dir / "scores", reasons, chunk_loans
        )
        bundle = load_model(name, ref)
        scorer = RiskScorer(bundle, settings.top_k)
        shadow = None
        client = mlflow.MlflowClient()
        ch = resolve(client, name, "challenger")
        if ch is not None and ch != bundle.version:
            shadow = RiskScorer(load_model(name, ch), settings.top_k)
        sha = book_fingerprint(book_dir)
        key = run_key(sha, cfg, name, bundle.version)
        start = time.perf_counter()

        def cb(stage: str, done: int, total: int, _bar=None) -> None:
            rate = done / max(time.perf_counter() - start, 1e-9)
            bar(f"{stage} ({rate:,.0f} loans/s)", done, total)

        with progress_bar() as bar:
            summary = score_book(cfg, scorer, key, shadow, cb)
        pipeline = time.perf_counter() - start  # validation to outputs, without start-up and MLflow
    except (ValueError, FileNotFoundError) as e:
        _fail(str(e))
    took = time.perf_counter() - t0
    exp = ensure_experiment("loan-ews-batch", artifact_root)
    with mlflow.start_run(experiment_id=exp, run_name=f"score-book-{cfg.as_of:%Y-%m}"):
        mlflow.set_tags({"loan_ews.kind": "score_book", "run_key": key})
        mlflow.log_params(
            {
                "book": str(book_dir),
                "book_sha256": sha,
                "as_of": f"{cfg.as_of:%Y-%m}",
                "model": name,
                "model_version": bundle.version,
                "reasons": reasons,
                "chunk_loans": chunk_loans,
                "shadow_version": shadow.model_version if shadow else "",
            }
        )
        c = summary["counts"]
        metrics = {
            **{f"count_{k}": v for k, v in c.items()},
            "psi_score": summary["psi"]["score"],
            "mean_pd": summary["mean_pd"] or 0.0,
            "watchlist_loans": summary["watchlist"]["loans"],
            "watchlist_exposure": summary["watchlist"]["exposure"],
            "seconds": took,
            "loans_per_second": c["scored"] / took,
            "pipeline_seconds": pipeline,
            "pipeline_loans_per_second": c["scored"] / pipeline,
        }
        metrics.update({f"psi_{f}": v for f, v in summary["psi"]["features"].items() if v == v})
        if summary["shadow"]:
            metrics["shadow_rank_correlation"] = summary["shadow"]["rank_correlation"]
            metrics["shadow_red_overlap"] = summary["shadow"]["red_overlap"]
        mlflow.log_metrics(metrics)
        mlflow.log_artifact(str(cfg.target / "summary.json"))
    c, w, t = summary["counts"], summary["watchlist"], summary["tiers"]
    out.print(
        f"scored {c['scored']:,} of {c['loans_in_book']:,} loans at {cfg.as_of:%Y-%m} with {name} "
        f"v{bundle.version} in {took:.1f}s ({c['scored'] / took:,.0f} loans/s): "
        f"{c['not_performing']:,} not performing, {c['rejected']:,} rejected"
    )
    out.print(
        f"watchlist: {w['loans']:,} loans (red {t['red']:,}, amber {t['amber']:,}), exposure "
        f"{w['exposure']:,.0f} of {w['book_exposure']:,.0f}; new {w['new']}, tier up {w['tier_up']}, "
        f"tier down {w['tier_down']}, left {w['left_the_list']}"
    )
    shifted = ", ".join(summary["psi"]["shifted_above_0.25"]) or "none"
    out.print(f"score PSI {summary['psi']['score']:.4f}; features shifted (PSI > 0.25): {shifted}")
    if summary["shadow"]:
        sh = summary["shadow"]
        out.print(
            f"shadow challenger v{sh['challenger_version']}: rank correlation "
            f"{sh['rank_correlation']:.4f}, red overlap {sh['red_overlap']:.2%}"
        )
    out.print(f"outputs in {cfg.target}")


if __name__ == "__main__":  # pragma: no cover
    app()
