"""Schemathesis over the OpenAPI document the server publishes: every generated request (valid and
invalid, boundary values included) gets a non-5xx answer that conforms to its documented status, content
type and schema. Bounded (20 examples per operation per phase, a fixed seed) to stay near 10 s."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


def test_schemathesis_finds_no_5xx_and_no_undocumented_answer(served, api_keys, tmp_path) -> None:
    st = Path(sys.executable).with_name("st")
    res = subprocess.run(
        [
            str(st),
            "run",
            f"{served.url}/docs.json",
            "--header",
            f"Authorization: Bearer {api_keys['admin']}",  # admin: every operation is reachable
            "--checks",
            CHECKS,
            "--max-examples",
            "20",
            "--seed",
            "14",
            "--workers",
            "2",
            "--phases",
            "examples,coverage,fuzzing",
            "--suppress-health-check",
            "all",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    out = res.stdout + res.stderr
    counts = re.search(r"(\d+) generated, (\d+) passed", out)
    assert res.returncode == 0 and counts, out[-6000:]
    generated, passed = map(int, counts.groups())
    assert generated == passed and generated > 500, out[-3000:]
    print(f"schemathesis: {generated} requests, all passed (0 5xx)")
