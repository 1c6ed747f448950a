"""tier-router runtime: load an exported bundle and pick a Bedrock tier in-process.

Depends only on numpy and onnxruntime; never imports training/ or serving/.
"""

from router.bundle import BundleError
from router.decision import Decision
from router.ladder import Ladder, LadderError, Tier
from router.router import Router

__all__ = ["BundleError", "Decision", "Ladder", "LadderError", "Router", "Tier"]
__version__ = "0.1.0"
