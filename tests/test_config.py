"""Config loading and strict --config_mod overrides."""
import pytest
from omegaconf import OmegaConf

import main
from tools.core.config import apply_overrides, load_yaml, save_config


def load_config(path, overrides=()):
    return apply_overrides(load_yaml(path), overrides)
from tools.core.errors import UserError


def _write(tmp_path, text="model:\n  channels: 32\ntrain:\n  lr: 0.001\n  max_steps: 10\n"):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_overrides_apply_with_types(tmp_path):
    cfg = load_config(_write(tmp_path), ["model.channels=64", "train.lr=2e-4"])
    assert cfg.model.channels == 64 and isinstance(cfg.model.channels, int)
    assert cfg.train.lr == pytest.approx(2e-4)


def test_unknown_key_is_named(tmp_path):
    with pytest.raises(UserError, match="train.max_step"):
        load_config(_write(tmp_path), ["train.max_step=5"])
    with pytest.raises(UserError, match="nonsense"):
        load_config(_write(tmp_path), ["nonsense=1"])


def test_malformed_override_and_missing_file(tmp_path):
    with pytest.raises(UserError, match="key=value"):
        load_config(_write(tmp_path), ["train.lr"])
    with pytest.raises(UserError, match="not found"):
        load_config(tmp_path / "absent.yaml")


def test_resolved_config_saved(tmp_path):
    cfg = OmegaConf.create({"a": 1, "b": "${a}"})
    save_config(cfg, tmp_path / "config.yaml")
    assert OmegaConf.load(tmp_path / "config.yaml") == {"a": 1, "b": 1}


def test_main_unknown_config_mod_fails_naming_key(tmp_path, capsys):
    cfg_path = _write(tmp_path)
    args = main.build_parser().parse_args(["--exp", "generate", "--pretrain_config", str(cfg_path),
                                           "--config_mod", "model.chanels=3"])
    with pytest.raises(UserError, match="model.chanels"):
        main.assemble_config(args)


def test_main_run_section_overridable(tmp_path):
    args = main.build_parser().parse_args(["--exp", "generate", "--pretrain_config", str(_write(tmp_path)),
                                           "--batch_size", "3", "--config_mod", "run.seed=7"])
    cfg = main.assemble_config(args)
    assert cfg.run.batch_size == 3 and cfg.run.seed == 7 and cfg.run.exp == "generate"


def test_help_lists_every_flag(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in ["--exp", "--id", "--seed", "--data", "--data_path", "--batch_size", "--pretrain_config",
                 "--diffusion_config", "--first_stage_folder", "--first_model", "--config_mod", "--fresh"]:
        assert flag in text
    for stage in ["generate", "check_data", "first_stage", "ddpm", "segment", "predict", "eval", "pipeline"]:
        assert stage in text


def test_unbuilt_stage_exits_nonzero_with_message(monkeypatch, capsys):
    from tools.core import stages

    monkeypatch.setitem(stages.STAGES, "eval", stages.Stage("x", "tools.no_such_module:run"))
    assert main.main(["--exp", "eval"]) == main.EXIT_NOT_AVAILABLE
    assert "not available yet" in capsys.readouterr().err


def test_user_error_exits_2_with_message(tmp_path, capsys):
    code = main.main(["--exp", "generate", "--pretrain_config", str(tmp_path / "missing.yaml")])
    assert code == main.EXIT_USER_ERROR
    assert "missing.yaml" in capsys.readouterr().err
