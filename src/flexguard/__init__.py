"""flexguard: strictness-adaptive content moderation.

Score once (a 0–100 risk score aligned with a 5-tier rubric, plus a category), then decide
for any strictness with a threshold. Importing this package is cheap: backends, torch and
plotting are imported only when used.
"""

from importlib.metadata import PackageNotFoundError, version

from .data import Benchmark, load_flexbench, load_public
from .errors import ConfigError, DataError, FlexGuardError, UnknownBackendError
from .metrics import Evaluation, PairedComparison, compare_paired, evaluate
from .moderators import Moderator, get_moderator, register
from .rubric import Category, Regime, Tier, score_to_tier
from .schema import Item, ModerationResult
from .thresholds import Policy

try:
    __version__ = version("flexguard")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "Benchmark", "Category", "ConfigError", "DataError", "Evaluation", "FlexGuardError", "Item",
    "ModerationResult", "Moderator", "PairedComparison", "Policy", "Regime", "Tier", "UnknownBackendError",
    "compare_paired", "evaluate", "get_moderator", "load_flexbench", "load_public", "register", "score_to_tier",
]
