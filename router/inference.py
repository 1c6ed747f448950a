"""What a tier's ladder settings become on the wire: one Converse `inferenceConfig`.

The serving client and the labeler both call Converse with a tier's settings; this is
the single place that maps the ladder's names onto Bedrock's, so they cannot drift.
"""

from __future__ import annotations

from typing import Any

from router.ladder import Tier


def inference_config(tier: Tier) -> dict[str, Any]:
    """Converse `inferenceConfig` for `tier`: maxTokens always, temperature and topP only
    when the ladder sets them (Bedrock's defaults apply otherwise). A new dict each call."""
    config: dict[str, Any] = {"maxTokens": tier.max_tokens}
    if tier.temperature is not None:
        config["temperature"] = tier.temperature
    if tier.top_p is not None:
        config["topP"] = tier.top_p
    return config
