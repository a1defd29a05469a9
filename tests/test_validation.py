"""Bad settings are rejected when the config is composed: Enum choices by Hydra, ranges and force-added keys
by runner.validation, before any MLflow run exists and before TensorFlow is imported."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import OmegaConf

from runner.validation import Bounds, ConfigError, bounded, check_config
from tests.conftest import compose_config, config_options

GROUPS = ("model", "dataset", "task", "tracking")


@pytest.mark.parametrize("group", GROUPS)
def test_hydra_lists_no_schema_among_a_groups_options(group):
    with pytest.raises(MissingConfigException) as error:
        compose_config([f"{group}=no_such_option"])
    listed = str(error.value).split(f"Available options in '{group}':")[1].split("Config search path")[0].split()
    assert listed == config_options(group)  # the yaml entries only: no *_schema


def test_an_internal_schema_entry_is_not_an_option():
    with pytest.raises(MissingConfigException, match="Could not find 'model/mobilenet_v2_schema'"):
        compose_config(["model=mobilenet_v2_schema"])


#: what an option needs the user to set
REQUIRED = {"dataset=folder": ["dataset.path=/data"]}


@pytest.mark.parametrize("option", [f"{g}={o}" for g in ("model", "dataset", "task") for o in config_options(g)]
                         + [f"experiment={o} quick=true" for o in config_options("experiment")])
def test_every_option_and_quick_preset_as_shipped_passes_the_checks(option):
    check_config(compose_config([*option.split(), *REQUIRED.get(option, [])]))


def test_a_force_added_unknown_key_is_rejected_with_the_closest_setting():
    with pytest.raises(ConfigError) as error:
        check_config(compose_config(["+task.epoch=3"]))
    assert str(error.value).splitlines() == [
        "[convlab] config rejected: task.epoch is not a setting of task=train; did you mean task.epochs?",
        "  fix: write task.epochs=3 (no leading +)",
    ]


def test_a_force_added_key_in_a_nested_node_and_at_the_top_are_rejected():
    nested = r"task.head.unit is not a setting of task.head; did you mean task.head.units\?"
    with pytest.raises(ConfigError, match=nested):
        check_config(compose_config(["task=finetune", "+task.head.unit=3"]))
    with pytest.raises(ConfigError, match=r"(?s)colour is not a setting of the config.*settings of the config are: mo"):
        check_config(compose_config(["+colour=red"]))


@pytest.mark.parametrize("override,choices", [
    ("task.mode=featurs", "[features, frozen, finetune]"),
    ("task.head.pooling=max", "[flatten, avg]"),
    ("task.head.optimizer=rmsporp", "rmsprop"),
])
def test_a_value_outside_an_enum_fails_at_compose_listing_the_choices(override, choices):
    with pytest.raises(ConfigCompositionException) as error:
        compose_config(["task=finetune", override])
    assert "expected one of" in str(error.value.__cause__) and choices in str(error.value.__cause__)


def test_enum_values_still_read_as_the_plain_strings_the_libraries_compare():
    cfg = compose_config(["task=finetune", "task.mode=frozen", "dataset=folder", "dataset.path=x"])
    assert cfg.task.mode == "frozen" and f"{cfg.task.head.pooling}" == "flatten"
    assert OmegaConf.to_yaml(cfg.task).count("mode: frozen") == 1 and cfg.dataset.color_mode == "rgb"


def test_every_value_out_of_range_is_named_in_one_error():
    cfg = compose_config(["task.epochs=0", "dataset.split_sizes=[10,0,5]", "model.dropout=1.0",
                          "task.learning_rate=0", "task.steps_per_epoch=null"])
    with pytest.raises(ConfigError) as error:
        check_config(cfg)
    message = str(error.value)
    for problem in ("model.dropout=1.0 must be in [0, 1)", "dataset.split_sizes=[10, 0, 5] must be >= 1 (each element)",
                    "task.epochs=0 must be >= 1", "task.learning_rate=0.0 must be > 0"):
        assert problem in message
    assert "steps_per_epoch" not in message  # null always passes


def test_bounds_admit_exactly_their_range():
    unit = Bounds(ge=0, le=1)
    assert [unit.admits(v) for v in (-0.01, 0, 0.5, 1, 1.01)] == [False, True, True, True, False]
    fraction = Bounds(ge=0, lt=1)
    assert fraction.admits(0) and not fraction.admits(1) and fraction.describe() == "in [0, 1)"
    assert Bounds(gt=0).describe() == "> 0" and Bounds(ge=1).describe() == ">= 1"


def test_bounded_fields_work_in_any_schema():
    @dataclass
    class Probe:
        alpha: float = bounded(0.4, ge=0, le=1)
        sizes: list = bounded(factory=lambda: [1, 2], ge=1)

    check_config(OmegaConf.structured(Probe))
    with pytest.raises(ConfigError, match=r"alpha=1.5 must be in \[0, 1\]"):
        check_config(OmegaConf.merge(OmegaConf.structured(Probe), {"alpha": 1.5}))


@pytest.mark.e2e
@pytest.mark.parametrize("args,message", [
    (["+task.epoch=3"], "task.epoch is not a setting of task=train; did you mean task.epochs?"),
    (["-m", "task.epochs=1,0"], "task.epochs=0 must be >= 1"),  # a swept value: before the parent run
])
def test_the_cli_rejects_a_bad_config_in_one_message_before_any_run(run_cli, tmp_path, args, message):
    proc = run_cli(*args, expect_ok=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[0] == f"[convlab] config rejected: {message}"
    assert "Traceback" not in proc.stderr and "fix: " in proc.stderr
    assert not (tmp_path / "mlflow.db").exists()  # the store (run_cli's MLFLOW_TRACKING_URI) never opened


def test_a_required_value_left_unset_is_rejected_before_the_run():
    with pytest.raises(ConfigError, match=r"dataset.path is not set"):
        check_config(compose_config(["dataset=folder"]))


def test_an_unknown_bundled_photo_fails_at_compose_listing_the_bundled_ones():
    with pytest.raises(ConfigCompositionException) as error:
        compose_config(["dataset=photos", "dataset.names=[moon]"])
    assert "expected one of [chelsea, coffee, astronaut, rocket]" in str(error.value.__cause__)
