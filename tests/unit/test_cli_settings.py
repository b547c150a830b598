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
