"""`moderation-worker eval` through the production path: the tiny model, the specialists pack, the
labelled screenshots shipped in evalsets/, and the console's export format."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from moderation_worker.cli import main
from moderation_worker.evaluation.labels import read_labels
from moderation_worker.policies import load_policy_pack

REPO = Path(__file__).resolve().parents[2]
EVALSET = REPO / "evalsets"


def test_the_shipped_set_gives_real_precision_and_recall_for_the_ocr_rules(tiny_model_dir, tmp_path, capsys):
    figures, plots = tmp_path / "figures.json", tmp_path / "plots"
    code = main([
        "eval", str(EVALSET), "--policy-pack", str(REPO / "policies/specialists.yaml"),
        "--model-id", str(tiny_model_dir), "--json", str(figures), "--plots", str(plots),
    ])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    rows = {(r["policy"], r["source"]): r for r in json.loads(figures.read_text())}
    assert set(rows) == {("personal_data", s) for s in ("vlm", "ocr.personal_data", "combined")}
    ocr = rows[("personal_data", "ocr.personal_data")]
    assert (ocr["examples"], ocr["positives"]) == (24, 12)
    # The rules read every card, IBAN, address and phone drawn, and no near-miss or order number.
    assert ocr["precision"] == 1.0 and ocr["recall"] == 1.0
    for row in rows.values():
        for name in ("roc_auc", "pr_auc", "ece"):
            assert row[name] is None or 0.0 <= row[name] <= 1.0
    assert "ocr.personal_data" in printed and "precision" in printed
    assert (plots / "personal_data.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_fit_writes_a_new_pack_beside_the_old_one_and_never_over_a_file(tmp_path, capsys):
    pack = tmp_path / "pack.yaml"
    shutil.copy(REPO / "policies/default.yaml", pack)
    labels = tmp_path / "labels.jsonl"
    photos = sorted((EVALSET / "personal_data" / "positive").glob("*.png"))[:6]
    others = sorted((EVALSET / "personal_data" / "negative").glob("*.png"))[:6]
    labels.write_text("".join(
        json.dumps({"image_url": str(p), "policy": "weapons", "label": positive, "moderator": "m1"}) + "\n"
        for p, positive in [(p, True) for p in photos] + [(p, False) for p in others]
    ))  # fmt: skip
    before = pack.read_text()
    args = [
        "eval",
        str(labels),
        "--policy-pack",
        str(pack),
        "--scorer",
        "fake",
        "--fit",
        "--target-recall",
        "1",
    ]
    assert main(args) == 0 and main(args) == 0
    assert pack.read_text() == before, "the current pack is never changed"
    first, second = tmp_path / "pack.fit.yaml", tmp_path / "pack.fit-2.yaml"
    assert first.exists() and second.exists()
    fitted = load_policy_pack(first)
    assert fitted.version.endswith("-fit")
    assert "weapons:" in capsys.readouterr().out
    untouched = {p.id: p for p in load_policy_pack(pack).policies}
    for policy in fitted.policies:
        if policy.id != "weapons":
            assert policy == untouched[policy.id]
    assert yaml.safe_load(first.read_text())["name"] == "default"


def test_labels_in_each_shape_and_the_errors_that_name_the_line(tmp_path):
    folder = read_labels(EVALSET)
    assert len(folder) == 24 and {e.policy for e in folder} == {"personal_data"}
    assert sum(e.label for e in folder) == 12
    relative = tmp_path / "labels.jsonl"
    relative.write_text('{"image": "shots/a.png", "policy": "drugs", "label": false}\n\n')
    (example,) = read_labels(relative)
    assert example.image == str((tmp_path / "shots/a.png").resolve()) and example.label is False

    from moderation_worker.errors import ConfigurationError

    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"image": "a.png", "policy": "drugs", "label": true}\n{"image": "b.png", "label": "yes"}\n'
    )
    with pytest.raises(ConfigurationError, match=r"bad\.jsonl:2"):
        read_labels(bad)


def test_a_policy_not_in_the_pack_is_exit_2(tmp_path, capsys):
    labels = tmp_path / "labels.jsonl"
    labels.write_text('{"image": "a.png", "policy": "lasers", "label": true}\n')
    assert main(["eval", str(labels), "--scorer", "fake"]) == 2
    assert "lasers" in capsys.readouterr().err
