"""Run benchmarks, each in a child process so its wall time and peak memory are its own.

python -m bench                 # all
python -m bench generate        # one or several by name (generate panel train serve soak batch quality
                                # shap big)
EWS_SOAK_SECONDS=30 python -m bench soak   # a shorter soak
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

DATA = Path(os.environ.get("EWS_BENCH_DIR", "data/bench"))
BIG_LOANS = int(os.environ.get("EWS_BENCH_LOANS", "200000"))
EWS = [sys.executable, "-m", "ews.cli"]


def run(
    label: str, cmd: list[str], env: dict | None = None, keep_output: bool = False
) -> tuple[float, float]:
    """Run a command; print and return (seconds, peak GiB of the child)."""
    t0 = time.perf_counter()
    sink = None if keep_output else subprocess.DEVNULL
    proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.DEVNULL, env={**os.environ, **(env or {})})
    _, status, usage = os.wait4(proc.pid, 0)
    dt = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"benchmark command failed: {' '.join(cmd)}")
    gib = usage.ru_maxrss / 2**20
    print(f"{label:<58s} {dt:8.1f} s   peak {gib:5.2f} GiB", flush=True)
    return dt, gib


def bench_generate() -> None:
    """Book generation with its oracle: 200,000 loans x 48 months (target < 5 min, < 6 GiB)."""
    print(f"== generate ({BIG_LOANS:,} loans x 48 months, oracle included, Parquet written)")
    run(
        f"ews book generate --loans {BIG_LOANS} --months 48",
        [
            *EWS,
            "book",
            "generate",
            "--loans",
            str(BIG_LOANS),
            "--months",
            "48",
            "--seed",
            "7",
            "--out",
            str(DATA / "book-200k"),
        ],
    )
    run("ews book validate (same book)", [*EWS, "book", "validate", str(DATA / "book-200k")])


def ensure_book(loans: int) -> Path:
    folder = DATA / f"book-{loans // 1000}k"
    if not (folder / "performance.parquet").exists():
        subprocess.run(
            [
                *EWS,
                "book",
                "generate",
                "--loans",
                str(loans),
                "--months",
                "48",
                "--seed",
                "7",
                "--out",
                str(folder),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    return folder


def bench_panel() -> None:
    """Panel over 24 as-of months; two book sizes show memory follows the chunk (target < 3 min, 8 GiB)."""
    print("== panel (features + labels + oracle, 24 as-of months 2023-01..2024-12, 50,000-loan chunks)")
    for loans in (BIG_LOANS // 2, BIG_LOANS):
        book = ensure_book(loans)
        run(
            f"ews features build, {loans:,}-loan book",
            [
                *EWS,
                "features",
                "build",
                "--book",
                str(book),
                "--from",
                "2023-01",
                "--to",
                "2024-12",
                "--out",
                str(DATA / f"panel-{loans // 1000}k.parquet"),
            ],
        )


def bench_store() -> dict[str, str]:
    """A separate MLflow store for benchmark models, so they never mix with the demo registry."""
    store = (DATA / "mlflow").resolve()
    store.mkdir(parents=True, exist_ok=True)
    return {"MLFLOW_TRACKING_URI": f"sqlite:///{store / 'mlflow.db'}", "EWS_MODELS_DIR": str(store)}


def bench_train() -> None:
    """The default spec (24 train + 6 calibration + 6 test as-of months) on the 200,000-loan book:
    panel, fit, calibration, challenger, validation, plots and MLflow logging (target < 10 min)."""
    print(f"== train (default spec, {BIG_LOANS:,}-loan book, 36 as-of months)")
    book = ensure_book(BIG_LOANS)
    run(
        "ews train --spec models/pd_90d_12m.yaml",
        [*EWS, "train", "--spec", "models/pd_90d_12m.yaml", "--book", str(book)],
        env=bench_store(),
        keep_output=True,
    )


def bench_model() -> tuple[dict[str, str], object, str]:
    """The benchmark store's environment, an MLflow client on it (also the process's tracking URI) and
    the default spec's newest version there."""
    import mlflow

    env = bench_store()
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    client = mlflow.MlflowClient()
    return env, client, bench_model_version(client)


def bench_model_version(client) -> str:
    """The newest default-spec version in the benchmark store, trained on the big book (`bench train`)
    first if there is none."""
    if not client.search_model_versions("name = 'loan-ews-pd-12m'"):
        bench_train()
    return str(max(int(v.version) for v in client.search_model_versions("name = 'loan-ews-pd-12m'")))


def demo_champion(book: Path) -> dict[str, str]:
    """A store holding a champion trained on the demo-size book (trained and promoted once)."""
    store = (DATA / "mlflow-demo").resolve()
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{store / 'mlflow.db'}", "EWS_MODELS_DIR": str(store)}
    if not (store / "mlflow.db").exists():
        store.mkdir(parents=True, exist_ok=True)
        for cmd in (["train", "--book", str(book)], ["promote", "--book", str(book)]):
            subprocess.run([*EWS, *cmd], env={**os.environ, **env}, check=True, capture_output=True)
    return env


def bench_key(env: dict[str, str]) -> str:
    """A fresh officer key in the benchmark store (`ews user add`), for the load processes."""
    full = {**os.environ, **env}
    subprocess.run([*EWS, "user", "remove", "bench"], env=full, capture_output=True)
    res = subprocess.run([*EWS, "user", "add", "bench"], env=full, capture_output=True, text=True, check=True)
    return res.stdout.strip().splitlines()[-1]


@contextmanager
def running_server(book: Path, env: dict[str, str]) -> Iterator[tuple[str, subprocess.Popen]]:
    """`ews serve` on a free loopback port until ready; stopped (SIGTERM, which stops its workers) after."""
    import socket

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [*EWS, "serve", "--port", str(port), "--book", str(book)],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(240):
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            raise SystemExit("server did not become ready")
        yield base, proc
    finally:
        proc.terminate()
        proc.wait(60)


def load(
    base: str, bodies_file: Path, key: str, concurrency: int, *args: str, endpoint: str = "/score"
) -> dict:
    """Run `bench.load` in its own process against `base + endpoint`; its JSON summary."""
    res = subprocess.run(
        [sys.executable, "-m", "bench.load", f"{base}{endpoint}", str(bodies_file), str(concurrency), *args],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "EWS_BENCH_KEY": key},
    )
    return json.loads(res.stdout.strip().splitlines()[-1])


def request_bodies(book: Path, n: int = 300) -> Path:
    """`n` performing loans of the book as /score bodies, written once to a JSON file."""
    from features.build import build_features
    from serving.loans import BookIndex

    index = BookIndex.load(book)
    ids = build_features(index.book, index.last_month)["loan_id"]
    bodies = [index.request_json(lid, index.last_month) for lid in ids.sample(n, random_state=1)]
    path = DATA / "serve-bodies.json"
    path.write_text(json.dumps(bodies))
    return path


def bench_serve() -> None:
    """The BentoML server on loopback with the demo model: p50/p99 of a single-loan score with reasons
    (loan in the request) at concurrency 1 and 16, throughput at 16, beside the in-process time."""
    import mlflow
    import numpy as np

    from serving.api_models import LoanInput
    from serving.loans import BookIndex
    from serving.model_loader import load_model
    from serving.runtime import ScoringRuntime

    print("== serve (demo book 20,000 loans, champion, POST /score with the loan in the request)")
    book = ensure_book(20_000)
    env = demo_champion(book)
    bodies_file = request_bodies(book)
    bodies = json.loads(bodies_file.read_text())

    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    rt = ScoringRuntime(load_model("loan-ews-pd-12m", "champion"), BookIndex.load(book), "champion")
    items = [LoanInput.model_validate(b) for b in bodies]
    for it in items[:10]:
        rt.score_input(it)
    times = []
    for it in items:
        t = time.perf_counter()
        rt.score_input(it)
        times.append(time.perf_counter() - t)
    inproc = np.array(times) * 1000
    print(
        f"in-process ScoringRuntime.score_input: p50 {np.percentile(inproc, 50):6.2f} ms   "
        f"p99 {np.percentile(inproc, 99):6.2f} ms"
    )
    batch = items[:16]
    t = time.perf_counter()
    for _ in range(20):
        rt._score_items(batch)  # what the micro-batcher runs for 16 concurrent requests
    batched = 20 * len(batch) / (time.perf_counter() - t)
    print(f"in-process, 16 loans per scoring call (the micro-batcher's pass): {batched:,.0f} loans/s")
    key = bench_key(env)
    with running_server(book, env) as (base, proc):
        ceiling = load(f"{base}/livez", Path("-"), key, 16, "3200", "--get", endpoint="")
        print(
            f"HTTP ceiling, GET /livez (no scoring, same server and client) at concurrency 16: "
            f"{ceiling['rate']:7.1f} requests/s   (client CPU {ceiling['client_cpu_ms']:.2f} ms a request)"
        )
        load(base, bodies_file, key, 16, "320")  # untimed: each worker's first scoring calls warm up
        for conc, n in ((1, 300), (16, 1600)):
            cpu = _server_cpu(proc)
            r = load(base, bodies_file, key, conc, str(n))
            server_ms = (_server_cpu(proc) - cpu) / r["requests"] * 1000
            print(
                f"HTTP concurrency {conc:2d}: p50 {r['p50_ms']:6.2f} ms   p99 {r['p99_ms']:6.2f} ms   "
                f"{r['rate']:7.1f} loans/s   errors {r['errors']} (resent {r['reconnects']})   "
                f"server CPU {server_ms:.2f} ms   client CPU {r['client_cpu_ms']:.2f} ms   "
                f"p50 HTTP / in-process {r['p50_ms'] / np.percentile(inproc, 50):.2f}x"
            )


def _server_cpu(proc: subprocess.Popen) -> float:
    """CPU seconds (user + system) spent so far by the processes under an `ews serve`: its workers and
    the BentoML supervisor (the server side of a request; the load generator is measured apart)."""
    import psutil

    total = 0.0
    for p in psutil.Process(proc.pid).children(recursive=True):
        try:
            t = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system
    return total


def _worker_rss(proc: subprocess.Popen) -> dict[int, float]:
    """MiB resident of each BentoML worker of an `ews serve` (its descendants), read from /proc."""
    import psutil

    out = {}
    for p in psutil.Process(proc.pid).children(recursive=True):
        try:
            if "worker.service" not in " ".join(p.cmdline()):
                continue
            status = Path(f"/proc/{p.pid}/status").read_text()
        except (psutil.NoSuchProcess, FileNotFoundError):
            continue
        kib = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
        out[p.pid] = kib / 1024
    return out


def bench_soak() -> None:
    """The server under load for minutes: the maximum rate at concurrency 16 (20 s, closed loop), then
    70% of it held for EWS_SOAK_SECONDS (default 180) at a fixed rate from a second process. Prints the
    requests, errors by status, p50/p99 and each worker's RSS at start-up, at the soak's start and end."""
    print("== soak (demo book, champion, POST /score, concurrency 16)")
    soak_s = float(os.environ.get("EWS_SOAK_SECONDS", "180"))
    book = ensure_book(20_000)
    env = demo_champion(book)
    bodies_file = request_bodies(book)
    key = bench_key(env)
    with running_server(book, env) as (base, proc):
        rss0 = _worker_rss(proc)
        peak = load(base, bodies_file, key, 16, "--seconds", "20")
        target = 0.7 * peak["rate"]
        print(
            f"maximum: {peak['rate']:.1f} requests/s over 20 s ({peak['requests']} requests, p50 "
            f"{peak['p50_ms']:.1f} ms, p99 {peak['p99_ms']:.1f} ms, status {peak['status']})"
        )
        rss1 = _worker_rss(proc)
        soak = load(base, bodies_file, key, 16, "--seconds", str(soak_s), "--rate", f"{target:.2f}")
        rss2 = _worker_rss(proc)
    print(
        f"soak: {soak['requests']} requests in {soak_s:.0f} s at {target:.1f}/s (70% of the maximum), "
        f"achieved {soak['rate']:.1f}/s; errors {soak['errors']} (status {soak['status']}), "
        f"{soak['reconnects']} requests sent again on a new connection; "
        f"p50 {soak['p50_ms']:.1f} ms, p99 {soak['p99_ms']:.1f} ms"
    )
    for pid in sorted(rss2):
        print(
            f"worker {pid}: RSS {rss0.get(pid, float('nan')):.0f} MiB after start-up, "
            f"{rss1.get(pid, float('nan')):.0f} MiB at the soak's start, {rss2[pid]:.0f} MiB at its end"
        )
    if soak["errors"]:
        raise SystemExit(f"soak: {soak['errors']} requests failed")


def bench_batch() -> None:
    """ews score-book on the 200,000-loan book at one as-of month, reasons for every loan, against the
    raw LightGBM pred_contrib rate of the same model on the same rows and cores.

    Targets: the whole command at >= 1.0 of the raw rate (the command faster than the kernel it replaced),
    the pipeline (validation, features, scores, reasons, outputs) at >= 0.5, peak memory < 6 GiB. The
    command and the kernel run in turns, EWS_BENCH_BATCH_RUNS times (3); each pair gives one ratio, and
    the median and the range are printed. The pipeline time is the command's own `pipeline_seconds`
    metric in MLflow; the whole command adds interpreter start-up, imports, the registry and the MLflow
    run, shown beside it."""
    import pandas as pd

    from features.build import build_features
    from features.chunks import iter_book_chunks
    from serving.model_loader import load_model

    print(f"== batch (ews score-book, {BIG_LOANS:,}-loan book, as of 2025-12, reasons for every loan)")
    book = ensure_book(BIG_LOANS)
    env, client, version = bench_model()
    bundle = load_model("loan-ews-pd-12m", version)
    feats = pd.concat(
        [build_features(r.book, "2025-12") for r in iter_book_chunks(book, 50_000)], ignore_index=True
    )
    X = bundle.matrix(feats)
    del feats
    runs = []
    for _ in range(int(os.environ.get("EWS_BENCH_BATCH_RUNS", "3"))):
        dt, gib, m = timed_score_book(client, env, version, book, DATA / "scores-200k")
        t = time.perf_counter()
        bundle.booster.predict(X, pred_contrib=True)
        runs.append((dt, gib, m, len(X) / (time.perf_counter() - t)))
    small_dt, _, small_m = timed_score_book(client, env, version, ensure_book(20_000), DATA / "scores-20k")
    dt, gib, m, raw_rate = sorted(runs, key=lambda r: r[0])[len(runs) // 2]  # the median command
    scored, pipe = int(m["count_scored"]), m["pipeline_seconds"]
    whole = sorted(int(r[2]["count_scored"]) / r[0] / r[3] for r in runs)
    pipes = sorted(int(r[2]["count_scored"]) / r[2]["pipeline_seconds"] / r[3] for r in runs)
    print(
        f"pipeline (model loaded to outputs; the reader process starts before the model load), median run: "
        f"{scored:,} loans in {pipe:.1f} s = {scored / pipe:,.0f} loans/s"
    )
    print(
        f"raw pred_contrib, same model, rows and cores, beside it: {raw_rate:,.0f} rows/s "
        f"({bundle.booster.num_trees()} trees)"
    )
    print(
        f"pipeline / raw pred_contrib rate: median {pipes[len(pipes) // 2]:.2f}, range "
        f"{pipes[0]:.2f}-{pipes[-1]:.2f} over {len(runs)} pairs (target >= 0.5)"
    )
    own, reader = m.get("scoring_peak_gib", gib), m.get("reader_peak_gib", 0.0)
    print(
        f"peak memory of the whole command: {own + reader:.2f} GiB (target < 6): scoring process "
        f"{own:.2f} + reader process {reader:.2f} (each one's own peak, summed: an upper bound)"
    )
    print(
        f"whole command / raw pred_contrib rate: median {whole[len(whole) // 2]:.2f}, range "
        f"{whole[0]:.2f}-{whole[-1]:.2f} over {len(runs)} pairs (target >= 1.0); median run {dt:.1f} s = "
        f"{scored / dt:,.0f} loans/s; start-up, registry and MLflow run add {dt - pipe:.1f} s here and "
        f"{small_dt - small_m['pipeline_seconds']:.1f} s on the 20,000-loan book (a fixed cost)"
    )


def timed_score_book(client, env: dict[str, str], version: str, folder: Path, out: Path) -> tuple:
    """`ews score-book` of the default model's `version` on `folder` at 2025-12, reasons for every loan:
    (seconds, peak GiB, the metrics of the MLflow run it logged)."""
    cmd = ["score-book", "--book", str(folder), "--as-of", "2025-12", "--out", str(out)]
    dt, gib = run(
        f"ews score-book {folder.name} --reasons all",
        [*EWS, *cmd, "--model", f"loan-ews-pd-12m:{version}"],
        env=env,
    )
    exp = client.get_experiment_by_name("loan-ews-batch")
    last = client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"], max_results=1)
    return dt, gib, last[0].data.metrics


def bench_big() -> None:
    """A 1,000,000-loan book (EWS_BENCH_HUGE_LOANS) end to end: `ews score-book` with reasons for every
    performing loan at 2025-12, its wall time and peak memory (goal: under 2 minutes, under 4 GiB). The
    book is generated once (minutes, ~12 GiB: the generator is not what this measures) and kept."""

    loans = int(os.environ.get("EWS_BENCH_HUGE_LOANS", "1000000"))
    print(f"== big (ews score-book, {loans:,}-loan book, as of 2025-12, reasons for every performing loan)")
    book = ensure_book(loans)
    env, client, version = bench_model()
    dt, gib, m = timed_score_book(client, env, version, book, DATA / f"scores-{loans // 1000}k")
    scored, pipe = int(m["count_scored"]), m["pipeline_seconds"]
    own, reader = m.get("scoring_peak_gib", gib), m.get("reader_peak_gib", 0.0)
    print(
        f"{scored:,} loans scored with reasons: whole command {dt:.1f} s ({scored / dt:,.0f} loans/s; goal "
        f"< 120 s), pipeline {pipe:.1f} s; peak memory {own + reader:.2f} GiB (goal < 4: scoring process "
        f"{own:.2f} + reader process {reader:.2f}, each one's own peak, summed)"
    )


def bench_shap() -> None:
    """Exact SHAP three ways, on the same rows and cores in one run: LightGBM's pred_contrib, LightGBM's raw
    prediction (no explanation at all) and the SHAP tables of model/shap_tables.py (binning included).
    The default model, the book's performing loans at 2025-12; each rate is the best of 3 interleaved
    repetitions, printed with all three. Target: tables >= 20x pred_contrib, equal to it within 1e-9."""
    import logging

    import numpy as np
    import pandas as pd

    from features.build import build_features
    from features.chunks import iter_book_chunks
    from model.shap_tables import compile_tables
    from serving.model_loader import load_model

    logging.getLogger("model.shap_tables").setLevel(logging.WARNING)
    print(f"== shap (default model, {BIG_LOANS:,}-loan book, performing loans as of 2025-12)")
    book = ensure_book(BIG_LOANS)
    _, client, version = bench_model()
    bundle = load_model("loan-ews-pd-12m", version)
    booster = bundle.booster
    feats = pd.concat(
        [build_features(r.book, "2025-12") for r in iter_book_chunks(book, 50_000)], ignore_index=True
    )
    X = bundle.matrix(feats)
    t = time.perf_counter()
    tables = compile_tables(booster)
    compile_s = time.perf_counter() - t
    if tables is None:
        raise SystemExit("the default model did not compile to SHAP tables (see the log)")
    t = time.perf_counter()
    tables.contributions(X[:10])  # numba: compile, or load from its cache (serial and parallel kernels)
    tables.contributions(X[:5000])
    first_s = time.perf_counter() - t
    print(
        f"{len(X):,} rows x {X.shape[1]} features; {tables.n_trees} trees in {tables.n_groups} groups, "
        f"{tables.n_cells:,} cells ({tables.values.nbytes / 2**20:.1f} MiB), compiled in {compile_s:.2f} s; "
        f"first calls (numba compile or cache load) {first_s:.2f} s"
    )
    kernels = {
        "pred_contrib": lambda: booster.predict(X, pred_contrib=True),
        "raw prediction": lambda: booster.predict(X, raw_score=True),
        "tables": lambda: tables.contributions(X),
    }
    rates: dict[str, list[float]] = {k: [] for k in kernels}
    outputs: dict[str, np.ndarray] = {}
    for _ in range(3):  # interleaved, so a noisy neighbour slows all three alike
        for name, fn in kernels.items():
            t = time.perf_counter()
            outputs[name] = fn()
            rates[name].append(len(X) / (time.perf_counter() - t))
    for name, r in rates.items():
        runs = ", ".join(f"{v:,.0f}" for v in r)
        print(f"{name:<15s} {max(r):>11,.0f} rows/s   best of 3 ({runs})")
    per_run = [a / b for a, b in zip(rates["tables"], rates["pred_contrib"], strict=True)]
    print(
        f"tables / pred_contrib: {max(rates['tables']) / max(rates['pred_contrib']):.1f}x best over best "
        f"(per repetition {min(per_run):.1f}x..{max(per_run):.1f}x; target >= 20x)"
    )
    print(f"tables / raw prediction: {max(rates['tables']) / max(rates['raw prediction']):.2f}x")
    diff = float(np.max(np.abs(outputs["tables"] - outputs["pred_contrib"])))
    print(f"max |tables - pred_contrib| over all rows and columns: {diff:.2e} (target <= 1e-9)")


def bench_quality() -> None:
    """Model/oracle AUC on a panel of generated books and the card spec beside a plain LightGBM."""
    from bench.quality import main as quality

    quality()


BENCHES = {
    "generate": bench_generate,
    "panel": bench_panel,
    "train": bench_train,
    "serve": bench_serve,
    "soak": bench_soak,
    "batch": bench_batch,
    "quality": bench_quality,
    "shap": bench_shap,
    "big": bench_big,
}


def main(argv: list[str]) -> None:
    names = argv or list(BENCHES)
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {unknown}; choose from {list(BENCHES)}")
    DATA.mkdir(parents=True, exist_ok=True)
    print(f"machine: {os.cpu_count()} cores")
    for n in names:
        BENCHES[n]()


if __name__ == "__main__":
    main(sys.argv[1:])
