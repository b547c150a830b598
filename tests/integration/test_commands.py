"""The console script's commands, run as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from moderation_worker import samples
from moderation_worker.cli import main

REPO = Path(__file__).resolve().parents[2]


def test_check_prints_the_verdict_of_a_local_photo(tiny_model_dir, tmp_path, capsys):
    photo = tmp_path / "chelsea.png"
    photo.write_bytes(samples.sample_photos(("chelsea.png",))["chelsea.png"])
    assert main(["check", str(photo), "--model-id", str(tiny_model_dir), "--policies", "weapons,drugs"]) == 0
    verdict = json.loads(capsys.readouterr().out)
    assert verdict["image"]["width"] == 451 and verdict["image"]["format"] == "PNG"
    assert [p["id"] for p in verdict["policies"]] == ["weapons", "drugs"]
    assert verdict["model"]["id"] == str(tiny_model_dir)


def test_check_of_a_bad_file_exits_1_with_the_dead_letter_code(tiny_model_dir, tmp_path, capsys):
    bad = tmp_path / "report.pdf"
    bad.write_bytes(samples.not_an_image())
    assert main(["check", str(bad), "--model-id", str(tiny_model_dir)]) == 1
    assert json.loads(capsys.readouterr().out)["code"] == "not_an_image"


def test_run_refuses_to_start_on_an_invalid_policy_pack(tmp_path, capsys):
    pack = tmp_path / "pack.yaml"
    pack.write_text("name: x\nversion: '1'\ninstructions: i\npolicies: []\n")
    assert main(["run", "--scorer", "fake", "--policy-pack", str(pack), "--health-port", "none"]) == 2
    err = capsys.readouterr().err
    assert str(pack) in err and "policies" in err


@pytest.mark.slow
def test_the_demo_runs_the_whole_job_and_stops_everything_it_started(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODERATION_")}
    env["MODERATION_MODEL_LOCAL_FILES_ONLY"] = "true"  # never reach for the Hub in CI
    env["HF_HUB_OFFLINE"] = "1"
    completed = subprocess.run(
        [sys.executable, "-m", "moderation_worker", "demo"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    out = completed.stdout
    assert "VERDICTS ARE MEANINGLESS" in out
    assert "MISSING" not in out
    for code in (
        "not_an_image",
        "corrupt_image",
        "decompression_bomb",
        "unsupported_image",
        "object_not_found",
        "unsupported_url",
        "unknown_policy",
        "invalid_json",
    ):
        assert code in out
    assert "verdict " in out  # the repeated photo was served from the verdict cache
    assert "Stopped the embedded stack." in out
    # The specialists (installed here) give real verdicts beside the random VLM's.
    real = out[out.index("REAL SIGNALS") :]
    rows = {
        line.split()[0]: line
        for line in real.splitlines()[2:]
        if line.strip() and not line.startswith("Stopped")
    }
    assert "demo-known-bad" in rows["known-bad-copy"] and rows["known-bad-copy"].split()[1] == "block"
    assert "payment_card: **** **** **** 1111" in rows["screenshot-card"]
    assert "4111 1111 1111 1111" not in out + completed.stderr
    nudity = [
        float(rows[name].split()[-1])
        for name in rows
        if name.startswith("photo-") and "demo-known-bad" not in rows[name]
    ]
    assert nudity and all(score < 0.2 for score in nudity)


def test_check_with_a_compact_pack_scores_as_its_full_prompts_do_on_the_plain_path(
    tiny_model_dir, tmp_path, capsys
):
    # Given the default pack in the compact layout (its catalogue of rules before the image)
    document = yaml.safe_load((REPO / "policies" / "default.yaml").read_text())
    document["prompt_layout"] = "compact"
    pack = tmp_path / "compact.yaml"
    pack.write_text(yaml.safe_dump(document))
    photo = tmp_path / "chelsea.png"
    photo.write_bytes(samples.sample_photos(("chelsea.png",))["chelsea.png"])

    # When checked with the kept catalogue (the shared prefix) and with one plain pass per policy
    hashes = set()

    def scores(strategy: str, pack_path: Path = pack) -> dict[str, float]:
        argv = ["check", str(photo), "--model-id", str(tiny_model_dir), "--policy-pack", str(pack_path)]
        assert main([*argv, "--scoring-strategy", strategy]) == 0
        verdict = json.loads(capsys.readouterr().out)
        hashes.add(verdict["policy_pack"]["hash"])
        return {p["id"]: p["score"] for p in verdict["policies"]}

    shared, plain = scores("shared_prefix"), scores("plain")
    full = scores("shared_prefix", REPO / "policies" / "default.yaml")

    # I expect every policy scored, the same scores both ways, other scores than the full layout's
    # (the model did read other prompts), and a pack hash of its own
    assert shared.keys() == {p["id"] for p in document["policies"]} == full.keys()
    assert all(abs(shared[k] - plain[k]) < 1e-5 for k in shared)
    assert any(abs(shared[k] - full[k]) > 1e-4 for k in shared)
    assert len(hashes) == 2
