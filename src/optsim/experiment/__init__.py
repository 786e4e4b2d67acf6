"""Configs, running, traces."""
from ..trace import Trace
from .build import build_problem
from .config import (
           ConfigError,
           ExperimentConfig,
           config_hash,
           load_config,
           parse_config,
)
from .runner import evaluate, run_method
from .runs import run

__all__ = ["build_problem", "ConfigError", "ExperimentConfig", "config_hash", "load_config",
           "parse_config", "evaluate", "run", "run_method", "Trace"]
