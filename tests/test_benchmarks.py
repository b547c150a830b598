"""The benchmark suite (benchmarks/) runs end to end in quick mode and writes a well-formed report.

Times are never asserted: only that every section ran, and that every figure is a positive number backed
by its raw samples. The GPU section runs on the CPU with its scaled-down config (``--gpu-section-on-cpu``),
so its code is exercised on machines without a GPU.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
SECTIONS = {"1", "2", "3", "4", "5", "6", "7", "8"}

pytestmark = pytest.mark.slow


def _run(tmp_path: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "benchmarks", "--cache-dir", str(tmp_path / "cache"), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str]:
    tmp_path = tmp_path_factory.mktemp("benchmarks")
    out = tmp_path / "quick.json"
    done = _run(tmp_path, "--quick", "--gpu-section-on-cpu", "--out", str(out))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    return json.loads(out.read_text()), done.stdout


def test_the_report_describes_the_machine_and_the_run(quick_run):
    report, _ = quick_run
    machine = report["machine"]
    for key in ("cpu_model", "cpu_cores_logical", "ram_gib", "os", "python", "torch", "transformers", "date"):
        assert machine[key], key
    assert machine["gpu_count"] == len(machine["gpu_names"])
    assert report["options"]["quick"] is True
    assert set(report["sections"]) == SECTIONS


def test_every_section_ran_and_every_figure_is_a_positive_median_of_its_samples(quick_run):
    report, _ = quick_run
    for number, section in report["sections"].items():
        assert "error" not in section["info"], (number, section["info"].get("error"))
        assert "skipped" not in section, number
        assert section["figures"], f"section {number} has no figures"
        for key, figure in section["figures"].items():
            samples = figure["samples"]
            assert samples and figure["n"] == len(samples), (number, key)
            assert all(isinstance(s, int | float) and s > 0 for s in samples), (number, key, samples)
            assert figure["median"] == pytest.approx(statistics.median(samples)), (number, key)
            assert figure["unit"], (number, key)


def test_ratios_come_from_figures_of_the_same_run_and_targets_are_reported_not_asserted(quick_run):
    report, _ = quick_run
    for number, section in report["sections"].items():
        for key, ratio in section["ratios"].items():
            numerator, denominator = (section["figures"][name]["median"] for name in ratio["of"])
            assert ratio["value"] == pytest.approx(numerator / denominator), (number, key)
        for target in section["targets"]:
            assert isinstance(target["met"], bool) and target["value"] > 0, (number, target)
    # The section 1 comparison the targets are about is there (without targets in quick mode).
    layouts = report["sections"]["1"]["ratios"]
    assert "1img/4pol/full/plain_over_shared_prefix" in layouts
    assert {"1img/4pol/full_plain_over_compact", "glm-layer/4pol/full_shared_prefix_over_compact"} <= set(
        layouts
    )
    assert report["sections"]["2"]["targets"] and report["sections"]["3"]["targets"]


def test_the_table_is_printed(quick_run):
    _, stdout = quick_run
    for number in sorted(SECTIONS):
        assert f"== {number}. " in stdout
    assert "shared_prefix ms" in stdout and "events/s" in stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the GPU section runs for real")
def test_without_a_gpu_the_gpu_section_is_skipped_with_no_figures(tmp_path):
    out = tmp_path / "gpu.json"
    done = _run(tmp_path, "--sections", "5", "--out", str(out), timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    section = json.loads(out.read_text())["sections"]["5"]
    assert section["skipped"] == "no GPU on this machine"
    assert section["figures"] == {} and section["targets"] == []
    assert "skipped: no GPU on this machine" in done.stdout
