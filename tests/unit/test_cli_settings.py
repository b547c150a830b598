import json

from moderation_worker.cli import build_parser, main, settings_from_args


def test_a_flag_wins_over_the_environment_and_the_environment_over_defaults(monkeypatch):
    monkeypatch.setenv("MODERATION_BATCH_SIZE", "32")
    monkeypatch.setenv("MODERATION_INPUT_TOPIC", "from-env")
    settings = settings_from_args(build_parser().parse_args(["run", "--batch-size", "4"]))
    assert settings.batch_size == 4
    assert settings.input_topic == "from-env"
    assert settings.results_topic == "moderation.results"


def test_none_clears_an_optional_setting_and_formats_split_on_commas(monkeypatch):
    monkeypatch.setenv("MODERATION_ALLOWED_FORMATS", "png, jpeg")
    settings = settings_from_args(build_parser().parse_args(["run", "--health-port", "none"]))
    assert settings.health_port is None
    assert settings.allowed_formats == frozenset({"PNG", "JPEG"})


def test_invalid_settings_exit_2_with_the_field_named(capsys):
    assert main(["run", "--batch-size", "0"]) == 2
    assert "batch_size" in capsys.readouterr().err


def test_config_masks_secrets(monkeypatch, capsys):
    monkeypatch.setenv("MODERATION_S3_SECRET_ACCESS_KEY", "very-secret-value")
    monkeypatch.setenv("MODERATION_KAFKA_SASL_PASSWORD", "another-secret")
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    assert "very-secret-value" not in out and "another-secret" not in out
    assert "**********" in out


def test_a_misspelt_variable_is_warned_about_with_the_closest_known_name(monkeypatch, capsys):
    # Given a typo'd secret, a truncated name, and the test suite's own variables
    monkeypatch.setenv("MODERATION_S3_SECRET", "must-never-be-printed")
    monkeypatch.setenv("MODERATION_BATCHSIZE", "4")
    monkeypatch.setenv("MODERATION_TEST_KAFKA_BOOTSTRAP", "127.0.0.1:1")

    assert main(["config", "--log-format", "json"]) == 0

    # I expect one warning per unknown name, naming the closest setting, never the value
    err = capsys.readouterr().err
    lines = [json.loads(line) for line in err.splitlines() if "unknown_setting_variable" in line]
    assert {(w["variable"], w["did_you_mean"]) for w in lines} == {
        ("MODERATION_S3_SECRET", "MODERATION_S3_SECRET_ACCESS_KEY"),
        ("MODERATION_BATCHSIZE", "MODERATION_BATCH_SIZE"),
    }
    assert "must-never-be-printed" not in err


def test_msk_iam_auth_takes_no_password_and_needs_tls():
    from kafka.net.sasl import get_sasl_mechanism

    settings = settings_from_args(
        build_parser().parse_args(
            ["run", "--kafka-security-protocol", "SASL_SSL", "--kafka-sasl-mechanism", "AWS_MSK_IAM"]
        )
    )
    common = settings.kafka_common()
    assert common["sasl_mechanism"] == "AWS_MSK_IAM" and get_sasl_mechanism("AWS_MSK_IAM") is not None
    assert "sasl_plain_username" not in common and "sasl_plain_password" not in common
    assert main(["run", "--kafka-sasl-mechanism", "AWS_MSK_IAM"]) == 2  # PLAINTEXT: refused at start
