"""The one way to load a run configuration: typed dataclasses read from YAML, with overrides.

A config file has the sections of :class:`RunConfig`; every key is checked against its dataclass
and its type, so a typo or a bad value fails with one line naming the key and what is allowed::

    objective.weights.mode: 'entropi' is not allowed; choose one of: uniform, static, entropy

Overrides use dotted keys and YAML values: ``--set optim.lr=2e-6 --set rollout.n=8``. The
resolved config is written into the run directory as ``config.yaml``.

The package imports without torch: :mod:`restlit.config.sections` and :mod:`restlit.config.method` (the ``objective`` section) hold the dataclasses,
:mod:`restlit.config.loading` reads and writes them.
"""

from restlit.config.loading import ConfigError, check_ranges, load_config, save_config, to_dict
from restlit.config.method import CurriculumConfig, LossConfig, ObjectiveConfig, WeightConfig
from restlit.config.sections import (
    AblationConfig,
    DataConfig,
    LoggingConfig,
    LoraConfig,
    MlflowConfig,
    ModelConfig,
    OptimConfig,
    RolloutConfig,
    RunConfig,
    SamplingConfig,
    SFTConfig,
    TrainerConfig,
    WandbConfig,
)
from restlit.rewards import Ramp, RewardConfig

__all__ = [
    "AblationConfig",
    "ConfigError",
    "CurriculumConfig",
    "DataConfig",
    "LoggingConfig",
    "LoraConfig",
    "LossConfig",
    "MlflowConfig",
    "ModelConfig",
    "ObjectiveConfig",
    "OptimConfig",
    "Ramp",
    "RewardConfig",
    "RolloutConfig",
    "RunConfig",
    "SFTConfig",
    "SamplingConfig",
    "TrainerConfig",
    "WandbConfig",
    "WeightConfig",
    "check_ranges",
    "load_config",
    "save_config",
    "to_dict",
]
