"""The MoCo papers' findings as experiments anyone can rerun: `mocokit experiment NAME [key=value ...]`.

Each experiment is a base config and variants that change one thing (`spec.Experiment`); `run_experiment` pretrains
every variant into its own run folder and writes a table and a figure. See docs/experiments.md for what each shows.
"""

from mocokit.experiments.definitions import EXPERIMENTS
from mocokit.experiments.runner import ExperimentResult, run_experiment
from mocokit.experiments.spec import Experiment, Variant, VariantResult

__all__ = ["EXPERIMENTS", "Experiment", "ExperimentResult", "Variant", "VariantResult", "run_experiment"]
