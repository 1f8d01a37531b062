"""Run benchmarks, each in a child process so its wall time and peak memory are its own.

python -m bench                 # all
python -m bench generate        # one or several by name
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
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


BENCHES = {"generate": bench_generate, "panel": bench_panel, "train": bench_train}


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
