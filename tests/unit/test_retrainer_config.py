"""The retrainer's learners: section (errors naming learners.<model>.<field>) and the models-topic keys."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from retrainer import LearnerSpec, retrainer_config
from schemas.config import parse_monitor_config
from schemas.events import ModelVersion
from schemas.exceptions import ConfigError
from streams.retrainer_app import current_key, model_version_messages, version_key

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
MODELS = """\
models:
  asr: {task: classification, performance: {threshold: 0.85}}
  price: {task: regression, performance: {threshold: 2.0}}
"""


def _fields(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        retrainer_config(parse_monitor_config(text))
    return [field for field, _ in info.value.problems]


def test_monitored_models_without_an_entry_get_the_default_learner_of_their_task() -> None:
    cfg = retrainer_config(parse_monitor_config(MODELS))
    assert cfg.learners == {"asr": LearnerSpec(kind="logistic_regression"), "price": LearnerSpec(kind="linear_regression")}


def test_an_entry_is_validated_into_a_learner_spec() -> None:
    cfg = retrainer_config(parse_monitor_config(MODELS + """\
learners:
  asr: {kind: hoeffding_adaptive_tree_classifier, holdout_size: 50, min_training_examples: 100, warm_start: true}
  unmonitored: {kind: adaptive_random_forest, params: {n_models: 3}}
"""))
    assert cfg.learners["asr"].kind == "hoeffding_adaptive_tree_classifier" and cfg.learners["asr"].warm_start
    assert cfg.learners["unmonitored"].params == {"n_models": 3}
    assert cfg.learners["price"].kind == "linear_regression"


@pytest.mark.parametrize(
    ("learners", "fields"),
    [
        ("asr: {holdout: 10}", ["learners.asr.holdout"]),
        ("asr: {kind: svm}", ["learners.asr.kind"]),
        ("asr: {promotion_margin: -1}", ["learners.asr.promotion_margin"]),
        ("asr: {params: {n_models: 3}}", ["learners.asr.params"]),
        ("asr: {min_training_examples: 500, buffer_size: 100}", ["learners.asr"]),
        ("price: {kind: logistic_regression}", ["learners.price.kind"]),
        ("asr: {holdout_size: 1}\n  price: {kind: adaptive_random_forest}", ["learners.asr.holdout_size", "learners.price.kind"]),
    ],
)
def test_errors_name_the_bad_field(learners: str, fields: list[str]) -> None:
    assert _fields(MODELS + "learners:\n  " + learners + "\n") == fields


def test_monitor_config_keeps_learner_names_to_model_names() -> None:
    with pytest.raises(ConfigError) as info:
        parse_monitor_config("learners: {'bad name': {}}")
    assert [f for f, _ in info.value.problems][0].startswith("learners.")


def test_models_topic_key_rules() -> None:
    records = [
        ModelVersion(model="a/b:c", version="3", status="candidate", created_at=T0),
        ModelVersion(model="a/b:c", version="3", status="rejected", created_at=T0),
        ModelVersion(model="a/b:c", version="4", status="promoted", created_at=T0),
        ModelVersion(model="a/b:c", version="4", status="rolled_back", created_at=T0),
    ]
    keys = [key for key, _, _ in model_version_messages(records)]
    assert keys == [b"a/b:c@3", b"a/b:c@3", b"a/b:c@4", b"a/b:c", b"a/b:c@4"], "only promoted records are current"
    assert current_key("a/b:c") == b"a/b:c" and version_key("a/b:c", "4") == b"a/b:c@4"
    assert [k for k, _, _ in model_version_messages(records, announce_current=False)] == [b"a/b:c@3", b"a/b:c@3", b"a/b:c@4", b"a/b:c@4"]
    headers = dict(model_version_messages(records[2:3])[0][2])
    assert headers["ce_type"] == b"dev.driftline.model_version.promoted"
