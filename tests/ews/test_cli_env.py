"""What every command sets up before it runs: MLflow sends no usage telemetry unless the user asks."""

from __future__ import annotations

import os

import pytest
from typer.testing import CliRunner

from ews.cli import app

runner = CliRunner()


def test_mlflow_telemetry_is_off_unless_the_user_turned_it_on(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "unset")  # records the variable's state, to restore it
    monkeypatch.delenv("MLFLOW_DISABLE_TELEMETRY")
    res = runner.invoke(app, ["book", "validate", str(tmp_path / "no-book")])
    assert res.exit_code == 1  # the command ran (and refused the missing book)
    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "true"
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "false")
    runner.invoke(app, ["book", "validate", str(tmp_path / "no-book")])
    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "false"  # an explicit choice stands


def test_the_probation_option_takes_the_range_the_label_rule_does() -> None:
    from ews.cli import ProbationOpt
    from features.catalog import HISTORY_MONTHS
    from features.labels import LabelRule

    assert (ProbationOpt.min, ProbationOpt.max) == (1, HISTORY_MONTHS)
    LabelRule(90, ProbationOpt.min), LabelRule(90, ProbationOpt.max)  # both ends accepted
    for outside in (ProbationOpt.min - 1, ProbationOpt.max + 1):
        with pytest.raises(ValueError):
            LabelRule(90, outside)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["train", "--bogus"], "No such option: --bogus"),
        (["no-such-command"], "No such command 'no-such-command'"),
        (["book", "generate", "--loans", "x"], "Invalid value for '--loans'"),
        (["book", "validate"], "Missing argument"),
        (["registry"], "Usage:"),  # a group without its command: its help, as a usage error
        (["score-book", "--as-of", "2025-13"], "is not a month"),  # checked as the line is parsed
        (["score-book", "--as-of", "2025-12", "--reasons", "some"], "use 'all' or 'flagged'"),
        (["score-book", "--as-of", "2025-12", "--chunk-loans", "0"], "Invalid value for '--chunk-loans'"),
        # 'dpd_threshold must be positive', exit 1: an internal field's name, and not a usage error
        (["book", "summary", "somewhere", "--dpd", "0"], "Invalid value for '--dpd'"),
        (["book", "summary", "somewhere", "--horizon", "0"], "Invalid value for '--horizon'"),
        (["book", "summary", "somewhere", "--probation", "0"], "Invalid value for '--probation'"),
        (["features", "build", "--probation", "25"], "Invalid value for '--probation'"),
        (["features", "build", "--dpd", "0"], "Invalid value for '--dpd'"),
        # a traceback (bind(): port must be 0-65535), or port 0: bound, never told, never ready
        (["serve", "--port", "99999"], "Invalid value for '--port'"),
        (["serve", "--port", "0"], "Invalid value for '--port'"),
        (["user", "add", "x", "--role", "superuser"], "Invalid value for '--role'"),
    ],
)
def test_a_wrong_command_line_exits_64_not_the_refusal_code(args, says) -> None:
    """click exits 2 on a usage error, the code this CLI gives a refused promotion: a scheduler could not
    tell a typo in a cron line from a gate that said no."""
    res = runner.invoke(app, args)
    assert res.exit_code == 64, (res.exit_code, res.output)
    assert says in res.output
    assert runner.invoke(app, ["--help"]).exit_code == 0


@pytest.mark.slow
def test_ctrl_c_says_the_command_was_stopped_and_exits_130(tmp_path) -> None:
    """Typer exited 130 on Ctrl-C without a word, so a stopped train or batch read as a finished one."""
    import signal
    import subprocess
    import sys
    import time

    import psutil

    out = tmp_path / "book"
    proc = subprocess.Popen(
        [sys.executable, "-m", "ews.cli", "book", "generate", "--loans", "60000", "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as a terminal's foreground job
    )
    try:  # past the imports (about 2 s of CPU), into the generation (about 20 s)
        deadline = time.monotonic() + 60
        while sum(psutil.Process(proc.pid).cpu_times()[:2]) < 6 and time.monotonic() < deadline:
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "error: stopped by SIGINT (Ctrl-C)", err
    assert "Traceback" not in err and not out.exists()  # nothing half-written


def test_the_metrics_line_says_when_calibration_in_the_large_fails(capsys) -> None:
    """A card model's O/E 1.46 (1.09-1.92) passed every check without a word; the scorecard's AUC read
    as the registry's challenger."""
    from ews.cli import _print_metrics

    m = {"auc": 0.64, "gini": 0.29, "ks": 0.26, "ece": 0.004, "capture_5pct": 0.2}
    _print_metrics(
        {
            **m,
            "oe": 1.46,
            "oe_low": 1.09,
            "oe_high": 1.92,
            "lead_flagged_share": 0.2,
            "lead_median_months": 1.0,
            "lead_3m_share": 0.0,
        },
        0.62,
    )
    said = capsys.readouterr().out
    assert "excludes 1 on the test window: the PDs are too low" in said
    assert "scorecard AUC 0.6200" in said and "challenger" not in said
    assert "median 1 month ahead" in said
    _print_metrics({**m, "oe": 1.02, "oe_low": 0.9, "oe_high": 1.15}, None)
    assert "excludes" not in capsys.readouterr().out
