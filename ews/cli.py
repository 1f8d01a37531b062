"""The `ews` command line: the composition root, the only module that wires features, training and serving.

Each command checks its arguments and files first, then loads what it needs and calls one function of a
layer; the logic lives in the layers. Every command names a model the same way: `--model NAME`,
`NAME@alias` or `NAME:version`.

Exit codes: 0 done; 1 failed (nothing written); 2 refused (promotion gates, report checks); 3 done with
loans set aside because they break the contract (validate, score-book); 64 a wrong command line (an
unknown option or command, a missing or malformed argument: sysexits' EX_USAGE, where click says 2, so
a scheduler tells a typo from a refusal); 130 stopped by Ctrl-C, 143 by SIGTERM.
"""

from __future__ import annotations

import atexit
import gc
import json
import logging
import os
import signal
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

try:  # typer 0.29 runs its own copy of click, not the click package
    from typer._click.core import Context
    from typer._click.exceptions import UsageError
except ImportError:  # an earlier typer uses the package
    from click import Context, UsageError

from ews.settings import Settings
from features.catalog import HISTORY_MONTHS

EXIT_FAILED, EXIT_REFUSED, EXIT_REJECTS = 1, 2, 3
EXIT_USAGE = 64  # sysexits.h EX_USAGE
EXIT_STOPPED = 128 + 15  # what a shell reports for SIGTERM


class Stopped(BaseException):
    """A stop signal, raised where the command is, so it unwinds as an error does (a BaseException, so
    no `except Exception` on the way swallows it)."""


def _raise_stopped(signum: int, _frame: object) -> None:
    raise Stopped(signal.Signals(signum).name)


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _Commands(typer.core.TyperGroup):
    """The root command group: a usage error exits EXIT_USAGE, not click's 2 (which this CLI keeps for
    a refusal). Sub-commands parse inside the root's invoke, so both places cover every command."""

    def make_context(self, *args, **kwargs) -> Context:
        try:
            return super().make_context(*args, **kwargs)
        except UsageError as e:
            e.exit_code = EXIT_USAGE
            raise

    def invoke(self, ctx: Context):
        try:
            return super().invoke(ctx)
        except UsageError as e:
            e.exit_code = EXIT_USAGE
            raise


app = typer.Typer(
    cls=_Commands,
    help="loan-ews: early-warning default prediction for loan books.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
book_app = typer.Typer(help="Generate, validate and summarise books.", no_args_is_help=True)
app.add_typer(book_app, name="book")
features_app = typer.Typer(help="Point-in-time features and the training panel.", no_args_is_help=True)
app.add_typer(features_app, name="features")
registry_app = typer.Typer(help="Read the model registry and its audit log.", no_args_is_help=True)
app.add_typer(registry_app, name="registry")

console = Console(stderr=True)
out = Console(soft_wrap=True)

ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model", help="NAME, NAME@alias or NAME:version (default: the settings' model @champion)."
    ),
]
BookOpt = Annotated[Path | None, typer.Option("--book", help="Book folder (default: the demo book).")]
# the range LabelRule accepts, checked as a usage error
ProbationOpt = typer.Option(
    min=1, max=HISTORY_MONTHS, help="Months below the threshold before a cured loan counts."
)


@app.callback()
def main(ctx: typer.Context, verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format=LOG_FORMAT, stream=sys.stderr
    )
    for noisy in ("alembic", "mlflow", "urllib3", "httpx", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # MLflow 3 sends usage telemetry from a background thread by default; a lender's systems send nothing
    # out unasked. Off unless the user sets MLFLOW_DISABLE_TELEMETRY=false; the service's workers inherit it.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    # MLflow draws a tqdm bar on stderr for every artifact download (training reads its own model back);
    # in a command's output, a cron log or a CI log it is noise of carriage returns
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # "Failed to resolve installed pip version": the venv is made by uv, without pip; the logged model's
    # requirements are pinned by `model_requirements()`, so the missing pip version changes nothing
    logging.getLogger("mlflow.utils.environment").setLevel(logging.ERROR)
    # the interpreter's last garbage collections walk every object the imports made (MLflow, SQLAlchemy,
    # LightGBM, scikit-learn: ~0.8 s of each command's exit) to free memory the OS takes back anyway;
    # frozen objects are skipped. Registered first, so it runs after every other exit handler (LIFO).
    atexit.register(gc.freeze)
    # collect the youngest generation every 10,000 net allocations, not 700: importing MLflow, SQLAlchemy
    # and LightGBM makes ~1M long-lived objects, and the default triggers full collections over them that
    # cost each command ~0.7 s of start-up and find almost nothing to free
    gc.set_threshold(10_000, 10, 10)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not where the shell ignores it
        signal.signal(signal.SIGINT, _interrupted)
        # put Python's own back when the command ends (a caller that runs `app` in process keeps its own)
        ctx.call_on_close(lambda: signal.signal(signal.SIGINT, signal.default_int_handler))
    ctx.obj = Settings()


def _interrupted(signum, frame) -> None:
    """Ctrl-C: one line, then Python's KeyboardInterrupt (the command's clean-up runs; exit 130). Typer
    exits 130 on it without a word, so a stopped train or batch looked like a finished one."""
    _error_line("stopped by SIGINT (Ctrl-C)")
    raise KeyboardInterrupt


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


def _fail(msg: str, code: int = EXIT_FAILED) -> None:
    _error_line(msg)
    raise typer.Exit(code)


def _month_arg(value: str | None) -> str | None:
    """A month option checked as the command line is parsed: a malformed one is a usage error (64)."""
    from features.months import parse_month

    if value is not None:
        try:
            parse_month(value)
        except ValueError as e:
            raise typer.BadParameter(str(e)) from None
    return value


def _reasons_arg(value: str) -> str:
    if value not in ("all", "flagged"):
        raise typer.BadParameter(f"{value!r}: use 'all' or 'flagged'")
    return value


BookArg = Annotated[
    Path | None, typer.Argument(metavar="DIR", help="Book folder (or --book DIR).", show_default=False)
]
# a `book` command's --book: the same folder as DIR, and no default (see _one_book)
BookDirOpt = Annotated[Path | None, typer.Option("--book", help="Book folder (or DIR).")]


def _one_book(positional: Path | None, option: Path | None) -> Path:
    """The book a `book` command reads, given positionally or as `--book` (as every other command takes
    it). It has no default: `ews book validate $BOOK` with BOOK unset must not check the demo book and
    pass. Neither, or both naming different folders, is a usage error."""
    if positional is not None and option is not None and Path(positional) != Path(option):
        _fail(f"the book is given twice ({positional} and --book {option}): give one", EXIT_USAGE)
    book = positional if positional is not None else option
    if book is None:
        _fail("Missing argument 'DIR': give the book folder (DIR or --book DIR)", EXIT_USAGE)
    return book


def _book(settings: Settings, book_dir: Path | None) -> Path:
    """The book folder to read, checked to exist before anything loads."""
    folder = book_dir or settings.demo_book
    if not Path(folder).is_dir():
        _fail(f"book folder {str(folder)!r} does not exist")
    return Path(folder)


def _model(settings: Settings, model: str | None, default_alias: str | None = "champion"):
    """The `--model` reference, parsed (cheap; nothing loads). A bare NAME means NAME@`default_alias`
    (None: the newest version)."""
    from model.ref import ModelRef, parse_ref

    try:
        if model is None and default_alias is not None:  # the settings' model and reference (EWS_MODEL_REF)
            return parse_ref(str(ModelRef.of(settings.model_name, settings.model_ref)))
        return parse_ref(model or settings.model_name, default_alias)
    except ValueError as e:  # a wrong --model is a usage error; a wrong EWS_MODEL_NAME a failed start
        _fail(str(e), EXIT_USAGE if model is not None else EXIT_FAILED)


def _tracking(settings: Settings) -> Path:
    """MLFLOW_TRACKING_URI when set, else the SQLite store under models/; returns the artifact root."""
    import mlflow

    settings.models_dir.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(settings.tracking_uri())
    return settings.models_dir / "mlartifacts"


def _client(settings: Settings):
    from mlflow import MlflowClient

    _tracking(settings)
    return MlflowClient()


# ------------------------------------------------------------------------------------------------ book


@book_app.command("generate")
def book_generate(
    ctx: typer.Context,
    loans: Annotated[int, typer.Option(help="Number of loans.")] = 20_000,
    months: Annotated[int, typer.Option(help="Months of performance history.")] = 48,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives byte-identical tables.")] = 7,
    profile_name: Annotated[
        str, typer.Option("--profile", help="clean (the demo book), card or mixed (messy real-world data).")
    ] = "clean",
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Book folder (default: the demo book).")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="parquet or csv")] = "parquet",
    pit_spec: Annotated[
        Path | None,
        typer.Option(
            "--pit-spec",
            help="Also write the point-in-time oracle (true state, scenario frozen at the as-of month) for "
            "this spec's test window: the calibration a PIT model can reach at best.",
        ),
    ] = None,
) -> None:
    """Generate a synthetic book and its oracle PDs (oracle.parquet, beside the five tables)."""
    from features.book import check_replaceable, write_book
    from features.generate import generate_book, profile
    from model.spec import load_spec, test_months_of_book

    settings: Settings = ctx.obj
    target = out_dir or settings.demo_book
    try:
        params = profile(profile_name)
        if fmt not in ("parquet", "csv"):
            raise ValueError(f"unknown book format {fmt!r}; use parquet or csv")
        pit_months = []
        if pit_spec is not None:
            pit_months = test_months_of_book(load_spec(pit_spec), params.end_month, months)
        # before the minutes of generating: never over a folder that is not a book
        check_replaceable(target, {"oracle.parquet", "generator.json"})
        t0 = time.perf_counter()
        with progress_bar() as cb:
            gen = generate_book(loans, months, seed, params, progress=cb, pit_months=pit_months)
        meta = {**gen.params, "profile": profile_name}
        write_book(
            gen.book,
            target,
            fmt=fmt,
            extras={"oracle": gen.oracle},
            texts={"generator.json": json.dumps(meta, indent=2, sort_keys=True, default=str)},
        )
    except ValueError as e:
        _fail(str(e))
    perf = gen.book.performance
    out.print(  # the command's result: stdout (progress and errors go to stderr)
        f"wrote {target} ({profile_name}): {len(gen.book.loans):,} loans, {len(perf):,} performance rows, "
        f"{len(gen.oracle):,} oracle rows in {time.perf_counter() - t0:.1f}s"
    )


@book_app.command("validate")
def book_validate(ctx: typer.Context, book_arg: BookArg = None, book_dir: BookDirOpt = None) -> None:
    """Check a book against the contract; print every problem. Exit 0 when valid (warnings allowed), 3 when
    some loans break the contract (they would be set aside), 1 when the book cannot be used."""
    from features.validation import check_reject_share, validate_folder

    settings: Settings = ctx.obj
    book_dir = _book(settings, _one_book(book_arg, book_dir))
    try:
        report = validate_folder(book_dir)
    except ValueError as e:
        _fail(str(e))
    for p in report.problems:
        out.print(p.describe(), markup=False, highlight=False)
    n_err, n_warn = len(report.errors), len(report.warnings)
    try:
        kept = report.set_aside()
        check_reject_share(kept.loans_rejected, kept.loans_in_book, settings.max_reject_share, "book")
    except ValueError as e:
        out.print(f"UNUSABLE: {e}", markup=False, highlight=False)
        raise typer.Exit(EXIT_FAILED) from None
    book = report.book
    assert book is not None
    if n_err:
        out.print(
            f"VALID WITH REJECTS: {kept.describe()}; {_count(n_err, 'error')}, {_count(n_warn, 'warning')}",
            markup=False,
            highlight=False,
        )
        raise typer.Exit(EXIT_REJECTS)
    out.print(
        f"VALID: {len(book.loans):,} loans, {len(book.performance):,} performance rows, "
        f"{_count(n_warn, 'warning')}",
        markup=False,
    )


def _rate_table(title: str, df) -> Table:
    t = Table(title=title)
    t.add_column(df.index.name or "")
    for c in ("snapshots", "defaults", "rate"):
        t.add_column(c, justify="right")
    for idx, row in df.iterrows():
        rate = "-" if row["rate"] != row["rate"] else f"{row['rate']:.2%}"
        t.add_row(str(idx), f"{int(row['snapshots']):,}", f"{int(row['defaults']):,}", rate)
    return t


@book_app.command("summary")
def book_summary(
    ctx: typer.Context,
    book_arg: BookArg = None,
    book_dir: BookDirOpt = None,
    # ranges checked as usage errors naming the option (exit 64), as every malformed argument is
    horizon: Annotated[int, typer.Option(min=1, help="Default horizon in months.")] = 12,
    dpd: Annotated[int, typer.Option(min=1, help="Default threshold in days past due.")] = 90,
    probation: Annotated[int, ProbationOpt] = 3,
) -> None:
    """Size, realised default rates by product, city tier and year, and the oracle AUC (generated books),
    for any label: e.g. `--dpd 30 --horizon 1` for a short card book."""
    import numpy as np
    import pandas as pd

    from features.labels import LabelRule
    from features.months import add_months, months_text
    from features.summary import default_rates, oracle_aucs
    from features.validation import load_book

    settings: Settings = ctx.obj
    book_dir = _book(settings, _one_book(book_arg, book_dir))
    try:
        rule = LabelRule(dpd, probation)
        kept = load_book(book_dir, settings.max_reject_share)
    except ValueError as e:
        _fail(str(e))
    book = kept.book
    perf = book.performance
    secured = book.loans["collateral_id"].notna().mean() if len(book.loans) else 0.0
    out.print(
        f"book {book_dir}: {len(book.loans):,} loans ({secured:.0%} secured), "
        f"{len(book.borrowers):,} borrowers, "
        f"{len(book.collateral):,} collateral, {len(perf):,} performance rows, "
        f"{perf['month'].min():%Y-%m} to {perf['month'].max():%Y-%m} ({perf['month'].nunique()} months)"
    )
    if kept.rejected:
        out.print(kept.describe(), markup=False, highlight=False)
    rates = default_rates(book, rule, horizon)
    n = int(rates["all"]["snapshots"].iloc[0])
    label = f"{horizon}-month {dpd}+ DPD default rate of performing loans"
    if n == 0:
        last_labelled = add_months(perf["month"].max(), -horizon)
        out.print(
            f"{label}: no performing loan-month has its whole {horizon}-month window inside the book "
            f"(it would have to be at or before {last_labelled:%Y-%m}); try a shorter --horizon"
        )
    else:
        out.print(f"{label} (complete windows): {rates['all']['rate'].iloc[0]:.2%} of {n:,} loan-months")
        for key in ("product", "city_tier", "year"):
            out.print(_rate_table(f"by {key}", rates[key]))
    oracle_path = Path(book_dir) / "oracle.parquet"
    if oracle_path.exists():
        for h, auc in oracle_aucs(book, pd.read_parquet(oracle_path), rule, horizon).items():
            if auc is None:
                out.print(f"no exact oracle for {dpd}+ DPD in {months_text(h)}")
            elif np.isnan(auc):  # no complete window (or no default in one) to rank
                out.print(f"oracle AUC {h:>2}m: n/a (no complete {h}-month window with defaults in the book)")
            else:
                out.print(f"oracle AUC {h:>2}m: {auc:.4f}")
    else:
        out.print("no oracle.parquet: not a generated book")


# ------------------------------------------------------------------------------------------- features


@features_app.command("build")
def features_build(
    ctx: typer.Context,
    book_dir: BookOpt = None,
    start: Annotated[
        str, typer.Option("--from", callback=_month_arg, help="First as-of month, YYYY-MM.")
    ] = "2023-01",
    end: Annotated[
        str, typer.Option("--to", callback=_month_arg, help="Last as-of month, YYYY-MM.")
    ] = "2025-12",
    horizon: Annotated[int, typer.Option(min=1, help="Label horizon in months.")] = 12,
    dpd: Annotated[int, typer.Option(min=1, help="Default threshold in days past due.")] = 90,
    probation: Annotated[int, ProbationOpt] = 3,
    out_file: Annotated[
        Path | None,
        typer.Option("--out", help="Panel Parquet file (default: panel.parquet in EWS_DATA_DIR)."),
    ] = None,
    chunk_loans: Annotated[int, typer.Option(min=1, help="Loans per partition (bounds memory).")] = 50_000,
) -> None:
    """Write the panel: one row per performing (loan, as-of month) with features, label and oracle PD."""
    from features.labels import LabelRule
    from features.months import month_range, parse_month
    from training.panel import write_panel

    settings: Settings = ctx.obj
    folder = _book(settings, book_dir)
    out_file = out_file or settings.data_dir / "panel.parquet"
    t0 = time.perf_counter()
    try:
        asked = month_range(parse_month(start), parse_month(end))
        first, last = _book_months(folder)
        months = [m for m in asked if first <= m <= last]  # an as-of month needs the book's rows at it
        if len(months) == 0:
            raise ValueError(
                f"no as-of month of {start}..{end} is in the book (it reports {first:%Y-%m}..{last:%Y-%m})"
            )
        if len(months) < len(asked):
            console.print(
                f"[yellow]warning:[/yellow] the book reports {first:%Y-%m}..{last:%Y-%m}: as-of months "
                f"{months[0]:%Y-%m}..{months[-1]:%Y-%m} only ({len(asked) - len(months)} of {start}..{end} "
                "are outside it)",
                soft_wrap=True,
            )
        rule = LabelRule(dpd, probation)
        with progress_bar() as cb:
            rows, rejects = write_panel(
                folder, out_file, months, rule, horizon, chunk_loans, cb, settings.max_reject_share
            )
    except ValueError as e:
        _fail(str(e))
    out.print(  # the command's result: stdout
        f"wrote {out_file}: {rows:,} rows over {len(months)} as-of months "
        f"in {time.perf_counter() - t0:.1f}s; "
        f"{rejects.describe()}"
    )


# ------------------------------------------------------------------------------------------- training


def _book_months(book_dir: Path):
    """The book's first and last reporting months, from the performance table's month column alone."""
    import pandas as pd

    from features.book import find_table_file, read_table_columns
    from features.months import as_month

    path = find_table_file(book_dir, "performance")
    if path is None:
        raise ValueError(f"book {str(book_dir)!r} has no performance table")
    perf = read_table_columns(path, ["month"])  # a malformed CSV line: a missing month
    months = pd.to_datetime(perf.get("month", pd.Series(dtype=str)), errors="coerce").dropna()
    if months.empty:
        raise ValueError(f"book {str(book_dir)!r} has no readable performance months")
    return as_month(months.min()), as_month(months.max())


def _panel(settings: Settings, book_dir: Path, months, rule, horizon: int):
    import pandas as pd

    from training.panel import Rejects, iter_panel_chunks

    rejects = Rejects()
    with progress_bar() as cb:
        chunks = list(
            iter_panel_chunks(
                book_dir,
                months,
                rule,
                horizon,
                progress=cb,
                rejects=rejects,
                max_reject_share=settings.max_reject_share,
            )
        )
    if rejects.loans_rejected:
        console.print(f"book {book_dir}: {rejects.describe()}", markup=False, highlight=False)
    return pd.concat(chunks, ignore_index=True)


@app.command("train")
def train(
    ctx: typer.Context,
    spec_path: Annotated[Path, typer.Option("--spec", help="Model spec (YAML).")] = Path(
        "models/pd_90d_12m.yaml"
    ),
    book_dir: BookOpt = None,
    register: Annotated[bool, typer.Option(help="Register the model under the spec's name.")] = True,
    tune_trials: Annotated[
        int, typer.Option("--tune", min=0, help="Optuna trials on the calibration data before the final fit.")
    ] = 0,
) -> None:
    """Build the panel, fit and calibrate LightGBM, validate out of time, log to MLflow and register."""
    from features.months import month_range
    from model.spec import load_spec, resolve_windows
    from training.fit import train_model
    from training.registry import label_conflict
    from training.tracking import log_training
    from training.tune import tune

    settings: Settings = ctx.obj
    folder = _book(settings, book_dir)
    t0 = time.perf_counter()
    trials: list[dict] = []
    tuned = None
    try:
        spec = load_spec(spec_path)
        windows = resolve_windows(spec, *_book_months(folder))
        if register and (conflict := label_conflict(_client(settings), spec.name, spec)):
            raise ValueError(conflict)  # before any work: its versions could never be compared
        months = month_range(windows["train"][0], windows["test"][1])
        panel = _panel(settings, folder, months, spec.label.rule, spec.label.horizon_months)
        if tune_trials:
            with progress_bar() as cb:
                spec, trials, tuned = tune(spec, panel, windows, tune_trials, cb)
        result = train_model(spec, panel, windows, tuned)
    except (ValueError, FileNotFoundError) as e:
        _fail(str(e))
    artifact_root = _tracking(settings)
    run_id, version = log_training(
        result, spec, spec_path, folder, len(panel), artifact_root, register, trials
    )
    what = f"version {version}" if version is not None else "not registered"
    out.print(f"trained {spec.name} {what} (run {run_id}) in {time.perf_counter() - t0:.0f}s")
    if trials:
        best = max(trials, key=lambda t: t["value"])
        out.print(
            f"tuning: {len(trials)} trials, best calibration AUC {best['value']:.4f} with {best['params']}"
        )
    out.print(
        "windows: "
        + ", ".join(
            f"{k} {_span(f'{v[0]:%Y-%m}', f'{v[1]:%Y-%m}')}" if v else f"{k} held-out training loans"
            for k, v in result.windows.items()
        )
    )
    if result.dropped:
        out.print("left out: " + "; ".join(f"{f} ({why})" for f, why in result.dropped.items()), markup=False)
    _print_metrics(result.test_metrics, result.challenger_metrics.get("auc"))
    out.print(
        "monotonicity: all declared directions hold"
        if result.evaluation.monotone
        else f"monotonicity FAILS for {[f for f, ok in result.evaluation.monotonicity.items() if not ok]}"
    )
    for w in result.warnings:
        out.print(f"WARNING degenerate model: {w}", markup=False)
    from training.report import checks

    said = set(result.warned_gates)  # said on the calibration window: not again with the test's figure
    for c in checks(result.bundle):  # the checks `ews report` and promotion apply to this version
        if not c.passed and c.name not in said:
            out.print(f"WARNING fails a gate of `ews report` and promotion: {c.text}", markup=False)
    auc, ch_auc = result.test_metrics["auc"], result.challenger_metrics.get("auc")
    if ch_auc is not None and auc < ch_auc:
        out.print(
            f"WARNING test AUC {auc:.4f} is below the scorecard challenger's {ch_auc:.4f}: the boosted model "
            "adds nothing over a logistic scorecard here",
            markup=False,
        )


def _print_metrics(m: dict, challenger_auc: float | None) -> None:
    from features.months import months_text

    line = f"test AUC {m['auc']:.4f}  Gini {m['gini']:.4f}  KS {m['ks']:.4f}  ECE {m['ece']:.4f}"
    line += f"  O/E {m['oe']:.2f} ({m.get('oe_low', float('nan')):.2f}-{m.get('oe_high', float('nan')):.2f})"
    line += f"  capture@5% {m['capture_5pct']:.1%}"
    if challenger_auc is not None:  # the logistic scorecard, not the registry's challenger alias
        line += f"   scorecard AUC {challenger_auc:.4f}"
    out.print(line)
    low, high = m.get("oe_low", float("nan")), m.get("oe_high", float("nan"))
    if low > 1 or high < 1:  # calibration in the large: not a gate, but a validator reads it first
        out.print(
            f"note: O/E {m['oe']:.2f} ({low:.2f}-{high:.2f}) excludes 1 on the test window: the PDs are too "
            + ("low (more defaults than predicted)" if low > 1 else "high (fewer defaults than predicted)"),
            markup=False,
        )
    if "oracle_auc" in m:
        out.print(f"oracle AUC {m['oracle_auc']:.4f}  model/oracle {m['model_over_oracle']:.4f}")
    if "unseen_auc" in m:  # training.ensemble.unseen_raw says why
        line = f"test AUC by the members blind to each loan {m['unseen_auc']:.4f}"
        if "unseen_over_oracle" in m:
            line += f"  /oracle {m['unseen_over_oracle']:.4f}"
        out.print(line)
    if "grades_populated" in m:
        out.print(
            f"grades: {m['grades_populated']:.0f} of 10 populated, "
            f"{m['grades_failing_jeffreys']:.0f} failing the "
            f"Jeffreys test at 5%; calibration slope {m.get('calibration_slope', float('nan')):.3f}"
        )
    if "pit_oracle_oe" in m:  # features.generate.oracle.pit_oracle says why
        out.print(
            f"point-in-time oracle (true state, scenario frozen at the as-of month): O/E "
            f"{m['pit_oracle_oe']:.2f}, {m['pit_oracle_grades_failing_jeffreys']:.0f} grades failing the "
            "Jeffreys test: the calibration the book's own data allow at best"
        )
    if m.get("lead_median_months", float("nan")) == m.get("lead_median_months", float("nan")):
        out.print(
            f"lead time: {m['lead_flagged_share']:.1%} of defaulters flagged red/amber beforehand, "
            f"median {months_text(round(m['lead_median_months']))} ahead, "
            f"{m['lead_3m_share']:.1%} at least 3 months ahead"
        )


@app.command("promote")
def promote_cmd(ctx: typer.Context, model: ModelOpt = None, book_dir: BookOpt = None) -> None:
    """Gate a version (`NAME:version`; default the newest) against the champion on the same out-of-time
    window; move `champion` if it passes. Exit 0 when promoted, 2 when refused (`ews registry history`)."""
    import getpass

    from features.book import book_fingerprint
    from features.months import month_range
    from model.registry import require
    from model.spec import resolve_test_window, short_history_note
    from training.registry import promote, trained_on

    settings: Settings = ctx.obj
    ref = _model(settings, model, default_alias=None)  # NAME: its newest version
    folder = _book(settings, book_dir)
    client = _client(settings)

    def window_panel(bundle):
        spec = bundle.model_spec
        first, last = _book_months(folder)
        w = resolve_test_window(spec, first, last)  # the training months need not be here
        if note := short_history_note(first, w):
            out.print(note, markup=False)
        panel = _panel(settings, folder, month_range(*w), spec.label.rule, spec.label.horizon_months)
        return panel, (f"{w[0]:%Y-%m}", f"{w[1]:%Y-%m}")

    try:
        v = require(client, ref)
        sha = book_fingerprint(folder)
        trained = trained_on(client, ref.name, v)
        if trained and trained != sha:  # a newer extract is the usual case; a different book is not
            out.print(
                f"note: version {v} was trained on another book (sha256 {trained[:12]}; this one "
                f"{sha[:12]}): the test window's labels are this book's",
                markup=False,
            )
        d = promote(
            client,
            ref.name,
            v,
            window_panel,
            who=settings.user or getpass.getuser(),
            book_sha256=sha,
            artifact_root=settings.models_dir / "mlartifacts",
        )
    except (ValueError, FileNotFoundError) as e:
        _fail(str(e))
    t = Table(title=f"{ref.name} v{d.challenger_version} on {d.window[0]}..{d.window[1]}")
    for c in ("gate", "value", "limit", "rule", "result"):
        t.add_column(c)
    for g in d.gates:
        count = g.name in COUNT_GATES
        t.add_row(
            g.name, _number(g.value, count), _number(g.limit, count), g.rule, "pass" if g.passed else "FAIL"
        )
    out.print(t)
    c = d.challenger
    line = (
        f"challenger v{d.challenger_version}: AUC {c['auc']:.4f} ECE {c['ece']:.4f} PSI {c['score_psi']:.4f}"
    )
    if d.champion is not None:
        line += f"   champion v{d.champion_before}: AUC {d.champion['auc']:.4f} ECE {d.champion['ece']:.4f}"
    out.print(line)
    out.print(
        ("PROMOTED: " if d.promoted else "REFUSED: ") + d.reason.removeprefix("refused: "), markup=False
    )
    if not d.promoted:
        raise typer.Exit(EXIT_REFUSED)


@registry_app.command("history")
def registry_history(ctx: typer.Context, model: ModelOpt = None) -> None:
    """Every promotion decision for a model, oldest first: who, when, versions, metrics, reason."""
    from model.registry import ModelRef, require
    from training.registry import history

    settings: Settings = ctx.obj
    name = _model(settings, model).name
    client = _client(settings)
    try:
        require(client, ModelRef(name))  # no such model: an error, not an empty history
    except ValueError as e:
        _fail(str(e))
    rows = history(client, name)
    if not rows:
        out.print(f"no promotion decisions recorded for {name!r}")
        return
    fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    out.print(f"promotion history of {name} ({_count(len(rows), 'decision')}, oldest first)")
    for r in rows:
        _record(
            f"{r['when']}  {r['who']}  {r['decision'].upper():8s}  v{r['challenger_version']}  "
            f"champion {_v(r['champion_before'])} -> {_v(r['champion_after'])}  "
            f"window {r['window'].strip('.') and r['window'] or '-'}  AUC {fmt(r['challenger_auc'])} "
            f"vs champion {fmt(r['champion_auc'])}  ECE {fmt(r['challenger_ece'])}  {r['reason']}"
        )


def _v(version: str | None) -> str:
    return f"v{version}" if version else "none"


def _record(line: str) -> None:
    """One record of a listing on stdout, as it is: never markup, no colours guessed from its numbers."""
    out.print(line, markup=False, highlight=False)


@registry_app.command("list")
def registry_list(
    ctx: typer.Context,
    model: Annotated[
        str | None, typer.Option("--model", help="NAME: its versions (default: every registered model).")
    ] = None,
) -> None:
    """Every registered version, newest first: aliases, when registered, label, test AUC, test window,
    training book and the last promotion outcome."""
    from mlflow.exceptions import MlflowException

    from training.registry import versions

    settings: Settings = ctx.obj
    name = _model(settings, model).name if model else None
    client = _client(settings)
    try:
        rows = versions(client, name)
    except MlflowException as e:  # an unreadable store: one line, as every command says it
        _fail(f"cannot read the MLflow registry: {e.message}")
    if not rows and name:  # as history, report and promote say it: an unknown name is an error
        _fail(f"no registered model named {name!r} (train one with `ews train`)")
    if not rows:
        out.print("no registered models")
        return
    out.print(f"registered versions of {name}" if name else "registered models, newest version first")
    for r in rows:
        auc = "-" if r["test_auc"] is None else f"{r['test_auc']:.4f}"
        _record(
            f"{r['model']}:{r['version']}  {', '.join(r['aliases']) or '-'}  registered {r['registered']}  "
            f"{r['label'] or '-'}  test AUC {auc} on {r['window_test'] or '-'}  "
            f"book {r['book_sha256'][:12] or '-'}  promotion: {r['promotion'][:120] or '-'}"
        )


@registry_app.command("rollback")
def registry_rollback(
    ctx: typer.Context,
    model: Annotated[str, typer.Option("--model", help="NAME:version, a version that was champion before.")],
    reason: Annotated[str, typer.Option("--reason", help="Why (kept in the audit log).")],
) -> None:
    """Move `champion` back to a version that was champion before, without new gates, as a record of the
    audit log (`ews registry history`). A running service keeps the model it loaded until restarted."""
    import getpass

    from model.registry import require
    from training.registry import rollback

    settings: Settings = ctx.obj
    ref = _model(settings, model, default_alias=None)
    if ref.version is None:
        _fail(f"--model {model!r}: name the version to roll back to, as NAME:version", EXIT_USAGE)
    if not reason.strip():
        _fail("--reason is empty: say why (it is kept in the audit log)", EXIT_USAGE)
    client = _client(settings)
    try:
        require(client, ref)  # no such model or version: a failure, as for promote
    except ValueError as e:
        _fail(str(e))
    try:
        d = rollback(
            client,
            ref.name,
            ref.version,
            who=settings.user or getpass.getuser(),
            why=reason,
            artifact_root=settings.models_dir / "mlartifacts",
        )
    except ValueError as e:
        _fail(str(e), EXIT_REFUSED)
    out.print(
        f"ROLLED BACK: {d.model} champion v{d.champion_before} -> v{d.champion_after} ({reason.strip()})",
        markup=False,
    )


@app.command("report")
def report(ctx: typer.Context, model: ModelOpt = None) -> None:
    """The validation summary of a registered model (default its champion, else its newest version),
    checked against its spec's gates; exit 2 if any check fails (a degenerate model fails)."""
    from model.registry import CHAMPION, ModelRef, load_bundle, require, resolve
    from training.report import checks

    settings: Settings = ctx.obj
    ref = _model(settings, model)
    client = _client(settings)
    explicit = model is not None and ("@" in model or ":" in model)  # NAME@champion means that one
    try:
        if ref.alias == CHAMPION and not explicit and resolve(client, ref) is None:
            v = require(client, ModelRef(ref.name))  # no such model: said before anything else
            ref = ModelRef(ref.name)  # no champion yet: the newest version
            out.print(f"{ref.name} has no champion yet: its newest version, {_v(v)}")
        v = require(client, ref)
        bundle = load_bundle(ref.name, v)
    except ValueError as e:
        _fail(str(e))
    mv = client.get_model_version(ref.name, v)
    w = bundle.windows
    aliases = ", ".join(mv.aliases) or "no alias"
    out.print(f"{ref.name} version {v} ({aliases}), run {mv.run_id}")
    out.print(
        f"windows: train {_span(*w.get('train', []))}, "
        f"calibration {_span(*w.get('calibration', [])) or 'held-out training loans'}, "
        f"test {_span(*w.get('test', []))}"
    )
    _print_metrics(bundle.test_metrics, bundle.training.get("challenger_auc"))
    results = checks(bundle)
    for c in results:
        out.print(f"  {'PASS' if c.passed else 'FAIL'}  {c.text}", markup=False)
    # the checks are the version's own; promotion also compares it with the champion on one window, so a
    # version that passes them all may have been refused (a report that said PASS throughout read as
    # approved)
    out.print(
        "the AUC check is the floor for a first champion; `ews promote` compares a version with the "
        "champion on the same window",
        markup=False,
    )
    decided = (mv.tags or {}).get("loan_ews.promotion")
    out.print(f"promotion: {decided}" if decided else "promotion: not yet decided", markup=False)
    out.print(f"model card: runs:/{mv.run_id}/validation/model_card.md; plots under runs:/{mv.run_id}/plots")
    if not all(c.passed for c in results):
        raise typer.Exit(EXIT_REFUSED)


# -------------------------------------------------------------------------------------------- serving


@app.command("serve")
def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    # a port outside 1-65535 is a usage error naming --port (0 would bind a port no one is told of)
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 3000,
    book_dir: Annotated[
        Path | None,
        typer.Option("--book", help="Book to score by loan id (default: the demo book if present)."),
    ] = None,
    model: ModelOpt = None,
) -> None:
    """Run the BentoML scoring service (bentoml serve serving.service:LoanEWS) until stopped.

    Checks the port, the store, the users file, the book and the model first and refuses with one line
    (exit 1) on a fault; exits 1 if the workers keep failing or are not ready within EWS_STARTUP_TIMEOUT
    seconds; SIGTERM or SIGINT stops the server and every process it started (exit 0)."""
    import os

    from serving import supervisor

    settings: Settings = ctx.obj
    ref = _model(settings, model)
    book = book_dir or (settings.demo_book if (settings.demo_book / "loans.parquet").exists() else None)
    # the workers read their settings from this environment; the checks run with the same one
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": settings.tracking_uri(),
        "EWS_MODELS_DIR": str(settings.models_dir.resolve()),
        "EWS_MODEL_NAME": ref.name,
        "EWS_MODEL_REF": ref.ref,
        "EWS_USERS_FILE": str(settings.users_path.resolve()),
        "EWS_AUDIT_LOG": str(settings.audit_path.resolve()),
        "BENTOML_DO_NOT_TRACK": "True",
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE"),
        # uvicorn takes a loopback caller's X-Forwarded-For as its address: any local client (or one behind
        # a proxy that passes the header on) could dodge the wrong-key limit and write any address into
        # the log. No proxy is trusted: every caller is the address its connection comes from
        "FORWARDED_ALLOW_IPS": "",
    }
    if book is not None:
        env["EWS_BOOK"] = str(Path(book).resolve())
    else:
        env.pop("EWS_BOOK", None)
    with supervisor.StopSignals() as stop:  # from here to the end, a stop signal is a clean stop
        _serve(settings, host, port, env, stop)


def _span(*months: str) -> str:
    """A window of months as said: `2024-07..2024-12`, or `2025-11` for one month (not 2025-11..2025-11);
    "" for none."""
    if not months:
        return ""
    return months[0] if months[0] == months[-1] else f"{months[0]}..{months[-1]}"


def _count(n: int, noun: str) -> str:
    """`1 warning`, `2 warnings`."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


COUNT_GATES = ("monotonicity", "iterations", "distinct_pds")  # gates whose value is a count


def _number(x: float, count: bool = False) -> str:
    """A gate's value or limit: a count as a whole number (23 rounds, 0 failing directions, not 0.0000),
    a rate to 4 places."""
    return f"{x:.0f}" if count or (float(x).is_integer() and abs(x) >= 1) else f"{x:.4f}"


def _serve(settings: Settings, host: str, port: int, env: dict[str, str], stop) -> None:
    """`ews serve` once its environment is set: the start-up checks, then the server; a stop signal at
    any point stops what runs and exits 0."""
    import shutil

    from serving import supervisor

    verdict = supervisor.preflight(host, port, env, stop)
    if verdict.get("stopped"):
        console.print("stopped during the start-up checks")
        raise typer.Exit(0)
    if not verdict["ok"]:
        _fail(f"cannot start the service: {verdict['error']}")
    if verdict["users"] == 0:
        console.print(
            "[yellow]warning:[/yellow] no API keys yet, so every request but /livez and /readyz gets 401: "
            "add one with `ews user add NAME --role officer`",
            soft_wrap=True,
        )
    home = supervisor.server_home()  # removed on exit (and by the next server if this one is killed)
    env["BENTOML_HOME"] = str(home)
    # BentoML's workers make temp folders (bentoml-uds-*, bentoml-client-*) they never remove when killed:
    # inside the server's home they go with it
    (home / "tmp").mkdir()
    env["TMPDIR"] = str(home / "tmp")
    ref = env["EWS_MODEL_REF"]  # an alias says which; a version asked by number is not said twice
    alias = "" if ref == str(verdict["model_version"]) else f" ({ref})"
    console.print(
        f"starting {verdict['model_name']} version {verdict['model_version']}{alias} on http://{host}:{port}"
    )
    try:
        rc = supervisor.run_server(
            supervisor.bentoml_command(host, port),
            env,
            f"http://{host}:{port}",
            settings.startup_timeout,
            say=console.print,
            error=_error_line,
            stop=stop,
        )
    finally:
        shutil.rmtree(home, ignore_errors=True)
    raise typer.Exit(rc)


# ----------------------------------------------------------------------------------------------- users

user_app = typer.Typer(help="API keys of the scoring service and their roles.", no_args_is_help=True)
app.add_typer(user_app, name="user")


def _users(settings: Settings):
    from serving.users import UserStore

    return UserStore(settings.users_path)


def _role_arg(value: str) -> str:
    """A role the service knows, or a usage error naming --role (exit 64, as every wrong argument)."""
    from serving.users import ROLES

    if value not in ROLES:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(ROLES)}")
    return value


@user_app.command("add")
def user_add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="User name (letters, digits, . _ @ -).")],
    role: Annotated[
        str,
        typer.Option(
            callback=_role_arg,
            help="officer (score and read loans) or admin (also model info and metrics).",
        ),
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
    """Delete a user: its key stops working at the running server within a second."""
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
    as_of: Annotated[str, typer.Option("--as-of", callback=_month_arg, help="Month to score, YYYY-MM.")],
    book_dir: BookOpt = None,
    model: ModelOpt = None,
    out_dir: Annotated[
        Path | None,
        typer.Option("--out", help="Output folder (default: scores/ in EWS_DATA_DIR, data/ unless set)."),
    ] = None,
    reasons: Annotated[
        str, typer.Option(callback=_reasons_arg, help="Reasons for 'all' loans or only 'flagged' ones.")
    ] = "all",
    chunk_loans: Annotated[int, typer.Option(min=1, help="Loans per chunk (bounds memory).")] = 50_000,
) -> None:
    """Nightly batch: score every performing loan at an as-of month; write scores, watchlist, rejects and
    summary (all or nothing); shadow-score the challenger; log the run to MLflow.

    Exit codes: 0 done, every loan scored or not performing; 3 done with rejects (rows that break the
    contract, loan ids not in the loans table, malformed CSV lines: see OUT/YYYY-MM/rejects.csv); 1 failed
    with a one-line message (unusable book, no rows at the as-of month, too many rejects, no model, a
    write error): nothing written, the previous outputs stay; 64 a wrong command line (nothing read);
    130 stopped by Ctrl-C, 143 by SIGTERM (one line, nothing half-written)."""
    from features.book import book_fingerprint
    from features.stability import PSI_SHIFTED
    from serving.batch import BatchConfig, log_batch_run, parse_as_of, run_key, score_book
    from serving.reader import ReadPlan, start_process_reader

    settings: Settings = ctx.obj
    ref = _model(settings, model)
    folder = _book(settings, book_dir)
    try:
        cfg = BatchConfig(
            folder, parse_as_of(as_of), out_dir or settings.data_dir / "scores", reasons, chunk_loans
        )
    except ValueError as e:
        _fail(str(e))
    t0 = time.perf_counter()
    # SIGTERM (a scheduler's stop) unwinds like an error: the reader is stopped, nothing half-written stays,
    # and one line says so; the outputs are whole either way (the swap is atomic)
    previous = signal.signal(signal.SIGTERM, _raise_stopped)
    # the book is read, validated and featurised in a reader process started before MLflow, LightGBM and
    # the model load here (both hold the GIL: in one process they would take turns on one core)
    reader = start_process_reader(ReadPlan(cfg.book_dir, cfg.as_of, cfg.chunk_loans), LOG_FORMAT)
    try:
        from model.registry import CHALLENGER, ModelRef, load_bundle, require, resolve
        from serving.scorer import RiskScorer

        artifact_root = _tracking(settings)
        client = _client(settings)
        bundle = load_bundle(ref.name, require(client, ref))
        scorer = RiskScorer(bundle, settings.top_k)
        shadow = None
        ch = resolve(client, ModelRef(ref.name, alias=CHALLENGER))
        if ch is not None and ch != bundle.version:
            shadow = RiskScorer(load_bundle(ref.name, ch), settings.top_k)
        sha = book_fingerprint(folder)
        key = run_key(sha, cfg, ref.name, bundle.version)
        start = time.perf_counter()

        def cb(stage: str, done: int, total: int) -> None:
            rate = done / max(time.perf_counter() - start, 1e-9)
            bar(f"{stage} ({rate:,.0f} loans/s)", done, total)

        with progress_bar() as bar:
            summary = score_book(cfg, scorer, key, shadow, cb, settings.max_reject_share, source=reader)
        # from the model loaded to the outputs written: without start-up and MLflow, and without the part of
        # the book's read that ran beside the model load
        pipeline = time.perf_counter() - start
    except (ValueError, OSError) as e:
        _fail(str(e))
    except Stopped as e:
        _fail(
            f"stopped by {e}: nothing half-written stays (the outputs are the previous set, or this "
            "run's if the stop came during its final swap)",
            EXIT_STOPPED,
        )
    finally:
        signal.signal(signal.SIGTERM, previous)
        if reader is not None:
            reader.close()
    took = time.perf_counter() - t0
    peak = reader.peak_rss_gib if reader is not None else None
    # the outputs are published: a run log that fails is a warning, not a failed batch (MLflow's store
    # logs such a failure as a traceback of its own; this says it in one line)
    store_log = logging.getLogger("mlflow.store.db.utils")
    level = store_log.level
    store_log.setLevel(logging.CRITICAL)
    try:
        log_batch_run(cfg, summary, sha, key, took, pipeline, artifact_root, peak)
    except Exception as e:  # MLflow, SQLAlchemy and the file system raise their own kinds
        why = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        console.print(
            Text.assemble(
                ("warning:", "yellow"),
                f" the outputs are written ({cfg.target}), but the MLflow run of this "
                f"batch was not logged: {type(e).__name__}: {why}",
            ),
            soft_wrap=True,
        )
    finally:
        store_log.setLevel(level)
    c, wl = summary["counts"], summary["watchlist"]
    out.print(
        f"scored {c['scored']:,} of {c['loans_in_book']:,} loans at {cfg.as_of:%Y-%m} with {ref.name} "
        f"v{bundle.version} in {took:.1f}s ({c['scored'] / took:,.0f} loans/s): "
        f"{c['not_performing']:,} not performing, {c['rejected']:,} rejected"
    )
    for name, lst in summary["lists"].items():
        out.print(
            f"{name.replace('_', ' ')}: {lst['loans']:,} loans, "
            f"red {lst['red']:,} ({lst['red_share']:.2%} of the "
            f"list, capacity {lst['red_capacity']:.0%}), amber {lst['amber']:,} ({lst['amber_share']:.2%}, "
            f"capacity {lst['amber_capacity']:.0%})"
        )
    out.print(
        f"watchlist: {wl['loans']:,} loans, exposure {wl['exposure']:,.0f} of {wl['book_exposure']:,.0f}; "
        f"new {wl['new']}, tier up {wl['tier_up']}, tier down {wl['tier_down']}, left {wl['left_the_list']}"
        + _left_by_reason(wl.get("left_by_reason") or {})
    )
    shifted = ", ".join(summary["psi"]["shifted_above_0.25"]) or "none"
    out.print(f"score PSI {summary['psi']['score']:.4f}; features shifted (PSI > {PSI_SHIFTED}): {shifted}")
    if summary["shadow"]:
        sh = summary["shadow"]
        out.print(
            f"shadow challenger v{sh['challenger_version']}: rank correlation "
            f"{sh['rank_correlation']:.4f}, red overlap {sh['red_overlap']:.2%} "
            "(loans red in both lists over loans red in either)"
        )
    if summary["rejects"]["lines"]:
        rules = ", ".join(f"{r} {n}" for r, n in summary["rejects"]["by_rule"].items())
        out.print(
            f"rejects: {_count(summary['rejects']['lines'], 'line')}: {_count(c['rejected'], 'loan')}, "
            f"{_count(c['orphan_ids_rejected'], 'loan id')} not in the loans table; "
            f"{_count(c['orphan_rows_rejected'], 'performance row')} of no loan; {rules}",
            markup=False,
            highlight=False,
        )
    for w in summary["warnings"]:  # plausibility, not the contract: scored all the same, but said
        rows = f" ({_count(w['rows'], 'row')})" if w["rows"] else ""
        out.print(f"warning: {w['rule']}: {w['message']}{rows}", markup=False, highlight=False)
    out.print(f"outputs in {cfg.target}")
    if summary["rejects"]["lines"]:
        raise typer.Exit(EXIT_REJECTS)


def _left_by_reason(counts: dict[str, int]) -> str:
    """' (304 now green, 134 not scored: see left.csv)': why loans left the watchlist, where any did."""
    parts = [f"{n:,} {why}" for why, n in counts.items() if n]
    return f" ({', '.join(parts)}: see left.csv)" if parts else ""


if __name__ == "__main__":  # pragma: no cover
    app()
