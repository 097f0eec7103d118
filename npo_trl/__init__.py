"""npo-trl: LLM unlearning with Negative Preference Optimization (arXiv 2404.05868) as a TRL trainer."""

from . import losses
from .config import NPOConfig
from .data import DataCollatorForUnlearning, RetainStream
from .trainer import NPOTrainer

__version__ = "0.1.0.dev0"
__all__ = ["NPOConfig", "NPOTrainer", "DataCollatorForUnlearning", "RetainStream", "losses", "__version__"]
