from pathlib import Path

import pytest
import yaml

from moderation_worker.cli import main
from moderation_worker.errors import ConfigurationError, ErrorCode, PermanentError
from moderation_worker.policies import Calibration, load_policy_pack

DEFAULT_PACK = Path(__file__).resolve().parents[2] / "policies" / "default.yaml"

REQUIRED_TOPICS = {
    "sexual_content",
    "sexual_content_minors",
    "graphic_violence",
    "weapons",
    "hate_symbols",
    "self_harm",
    "drugs",
    "personal_data",
    "misleading_claims",
    "scam_spam",
}


def _write(tmp_path: Path, document: dict) -> Path:
    path = tmp_path / "pack.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def test_the_default_pack_loads_and_covers_every_required_topic():
    pack = load_policy_pack(DEFAULT_PACK)
    assert set(pack.by_id()) >= REQUIRED_TOPICS
    assert pack.by_id()["sexual_content_minors"].action.value == "block"


def test_every_prompt_puts_the_shared_instructions_first_and_the_question_last():
    pack = load_policy_pack(DEFAULT_PACK)
    for policy in pack.policies:
        prompt = pack.prompt(policy)
        assert prompt.startswith(pack.instructions)
        assert prompt.endswith(f"Question: {policy.question}\n{pack.answer_format}")


def test_an_invalid_pack_is_refused_naming_the_file_and_the_field(tmp_path):
    document = yaml.safe_load(DEFAULT_PACK.read_text())
    document["policies"][3]["threshold"] = 1.5
    path = _write(tmp_path, document)
    with pytest.raises(ConfigurationError) as caught:
        load_policy_pack(path)
    message = str(caught.value)
    assert str(path) in message
    assert "policies[3] (id=weapons).threshold" in message


def test_duplicate_ids_unknown_fields_and_bad_actions_are_refused(tmp_path):
    document = yaml.safe_load(DEFAULT_PACK.read_text())
    document["policies"].append(dict(document["policies"][0]))
    with pytest.raises(ConfigurationError, match="appears more than once"):
        load_policy_pack(_write(tmp_path, document))
    document = yaml.safe_load(DEFAULT_PACK.read_text())
    document["policies"][0]["treshold"] = 0.5
    with pytest.raises(ConfigurationError, match=r"policies\[0\] \(id=sexual_content\).treshold"):
        load_policy_pack(_write(tmp_path, document))
    document = yaml.safe_load(DEFAULT_PACK.read_text())
    document["policies"][2]["action"] = "delete"
    with pytest.raises(ConfigurationError, match="action"):
        load_policy_pack(_write(tmp_path, document))


def test_a_missing_or_unparseable_file_is_refused_clearly(tmp_path):
    with pytest.raises(ConfigurationError, match="cannot read"):
        load_policy_pack(tmp_path / "absent.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("policies: [unclosed")
    with pytest.raises(ConfigurationError, match="not valid YAML"):
        load_policy_pack(broken)


def test_the_content_hash_ignores_comments_but_not_rules(tmp_path):
    text = DEFAULT_PACK.read_text()
    original = load_policy_pack(DEFAULT_PACK).content_hash
    commented = tmp_path / "commented.yaml"
    commented.write_text("# another comment\n" + text)
    assert load_policy_pack(commented).content_hash == original
    changed = tmp_path / "changed.yaml"
    changed.write_text(text.replace("threshold: 0.6", "threshold: 0.65", 1))
    assert load_policy_pack(changed).content_hash != original


def test_selecting_a_subset_keeps_pack_order_and_rejects_unknown_ids():
    pack = load_policy_pack(DEFAULT_PACK)
    assert [p.id for p in pack.select(["weapons", "drugs"])] == ["weapons", "drugs"]
    assert [p.id for p in pack.select(["drugs", "weapons"])] == ["weapons", "drugs"]
    with pytest.raises(PermanentError) as caught:
        pack.select(["weapons", "lasers"])
    assert caught.value.code is ErrorCode.UNKNOWN_POLICY
    assert "lasers" in caught.value.message


def test_identity_calibration_keeps_the_score_and_platt_scaling_moves_it():
    assert Calibration().apply(0.3) == 0.3
    sharper = Calibration(scale=2.0, bias=0.0)
    assert sharper.apply(0.5) == pytest.approx(0.5)
    assert sharper.apply(0.8) > 0.8
    assert Calibration(scale=1.0, bias=-1.0).apply(0.5) < 0.5


def test_policies_validate_command_exits_non_zero_on_an_invalid_pack(tmp_path, capsys):
    assert main(["policies", "validate", str(DEFAULT_PACK)]) == 0
    assert "10 policies" in capsys.readouterr().out
    document = yaml.safe_load(DEFAULT_PACK.read_text())
    del document["instructions"]
    assert main(["policies", "validate", str(_write(tmp_path, document))]) == 1
    assert "instructions: Field required" in capsys.readouterr().err


def test_a_compact_pack_lists_every_rule_before_the_image_and_asks_each_policy_by_number(tmp_path):
    document = yaml.safe_load(DEFAULT_PACK.read_text())
    document["prompt_layout"] = "compact"
    personal_index = [p["id"] for p in document["policies"]].index("personal_data")
    document["policies"][personal_index]["context"] = ["ocr"]
    pack = load_policy_pack(_write(tmp_path, document))
    preamble = pack.preamble()

    # Every rule of the pack, numbered in pack order, whatever an event selects
    assert preamble.startswith(pack.instructions)
    for number, policy in enumerate(pack.policies, 1):
        assert f"\n{number}. {policy.title}\nRule: {policy.rule}\nQuestion: {policy.question}\n" in preamble
    # Each prompt names its policy by number and title only
    weapons = pack.by_id()["weapons"]
    number = [p.id for p in pack.policies].index("weapons") + 1
    assert pack.prompt(weapons) == f"Policy {number}: {weapons.title}.\n{pack.answer_format}"
    # OCR context differs per image, so it stays in the policy's own part
    personal_prompt = pack.prompt(pack.by_id()["personal_data"], ocr_text="call 555")
    assert (
        personal_prompt.startswith(f"Policy {personal_index + 1}: ")
        and "<<<\ncall 555\n>>>" in personal_prompt
    )
    # The full layout has nothing before the image
    assert load_policy_pack(DEFAULT_PACK).preamble() == ""


def test_the_layout_is_part_of_the_hash_and_the_default_layout_keeps_old_hashes(tmp_path):
    document = yaml.safe_load(DEFAULT_PACK.read_text())
    written_before_the_field = load_policy_pack(_write(tmp_path, document)).content_hash
    document["prompt_layout"] = "full"
    assert load_policy_pack(_write(tmp_path, document)).content_hash == written_before_the_field
    document["prompt_layout"] = "compact"
    assert load_policy_pack(_write(tmp_path, document)).content_hash != written_before_the_field
    document["prompt_layout"] = "tiny"
    with pytest.raises(ConfigurationError, match="prompt_layout"):
        load_policy_pack(_write(tmp_path, document))
