"""npo-trl: LLM unlearning with Negative Preference Optimization (arXiv 2404.05868) as a TRL trainer.

Names are imported on first use, as TRL does: `import npo_trl.losses` needs torch only, and `from npo_trl import
NPOTrainer` brings in TRL and transformers.
"""

import importlib

__version__ = "0.1.0.dev0"
_EXPORTS = {
    "NPOConfig": "config",
    "NPOTrainer": "trainer",
    "DataCollatorForUnlearning": "data",
    "RetainStream": "data",
}
__all__ = ["NPOConfig", "NPOTrainer", "DataCollatorForUnlearning", "RetainStream", "losses", "__version__"]


def __getattr__(name):
    if name == "losses":
        return importlib.import_module(".losses", __name__)
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)


def __dir__():
    return __all__
