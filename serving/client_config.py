"""TieredClientConfig: the client's escalation, failover, exploration and logging knobs,
validated once when made so a bad value fails at start-up, not on a request."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from router.ladder import Tier
from serving.checks import SelfCheckConfig
from serving.outcome_log import PromptStorage, check_hash_key, prompt_key
from serving.pricing import CachePricing


@dataclass(frozen=True)
class TieredClientConfig:
    """How the client escalates, fails over, explores and logs. Defaults are production-safe.

    - `max_escalations`: quality escalations allowed per request (None: up to the top tier).
    - `fallback`: a model (priced like a tier) to try when the top tier is unavailable.
    - `failover_down`: if nothing above answered, try cheaper tiers before giving up.
    - `failsafe_tier`: where to start if the router itself raises.
    - `exploration_rate`: chance of starting one tier below the decision, logged with its
      propensity so retraining can correct for it (0 = off).
    - `cascade_explore_rate`: chance that an answer the cascade's verifier accepted below
      the top tier is also answered by the next tier, after the caller has its response
      (a background call; the record is logged when it is done), with the rate logged so
      retraining weights the next tier's labels by inverse propensity
      (training/log_labels.py). Without it the next tier is seen only after a rejection,
      on the hard prompts. 0 = off; it costs about rate x the next tier's price on the
      accepted share of traffic. `close()` waits for the calls in flight.
    - `prompt_caching`: add Converse cache points (pair with conversation ids).
    - `cascade`: when the bundle carries a verifier and cascade policy, judge each answer
      with them (and call the second opinion when the policy asks); `cascade_point` picks
      one of the bundle's operating points by label ("policy" is the bundle's own).
      Answers are logged under `prompt_storage`, like the prompt.
    - `prompt_storage`: FEATURES (default) logs the router's features of the prompt and no
      text (retraining the router works from them); STORE is the opt-in for text (needed
      by `feedback` and by retraining the answer verifier); HASH and DROP keep neither.
    - `prompt_hash_key`: HMAC key for HASH and for FEATURES' `hmac` join key; when empty,
      $TIER_ROUTER_PROMPT_KEY is used (read once, when the config is made).
    """

    use_builtin_checks: bool = True
    max_escalations: int | None = None
    self_check: SelfCheckConfig = field(default_factory=SelfCheckConfig)
    fallback: Tier | None = None
    failover_down: bool = True
    failsafe_tier: int | str = -1
    exploration_rate: float = 0.0
    cascade_explore_rate: float = 0.02
    prompt_caching: bool = False
    prompt_storage: PromptStorage = PromptStorage.FEATURES
    prompt_hash_key: bytes = field(default=b"", repr=False)
    cache_pricing: CachePricing = field(default_factory=CachePricing)
    tags: Mapping[str, str] = field(default_factory=dict)
    sticky_max_conversations: int = 100_000
    sticky_ttl_s: float = 3600.0
    seed: int | None = None
    cascade: bool = True
    cascade_point: str = "policy"

    def __post_init__(self) -> None:
        if self.max_escalations is not None and (
            isinstance(self.max_escalations, bool)
            or not isinstance(self.max_escalations, int)
            or self.max_escalations < 0
        ):
            raise ValueError(f"max_escalations must be None or >= 0, got {self.max_escalations!r}")
        r = self.exploration_rate
        if not isinstance(r, int | float) or not math.isfinite(r) or not 0 <= r < 1:
            raise ValueError(f"exploration_rate must be in [0, 1), got {r!r}")
        r = self.cascade_explore_rate
        if not isinstance(r, int | float) or not math.isfinite(r) or not 0 <= r <= 1:
            raise ValueError(f"cascade_explore_rate must be in [0, 1], got {r!r}")
        if not isinstance(self.prompt_storage, PromptStorage):
            raise ValueError(f"prompt_storage must be a PromptStorage, got {self.prompt_storage!r}")
        if not isinstance(self.prompt_hash_key, bytes | bytearray):
            raise ValueError("prompt_hash_key must be bytes")
        object.__setattr__(self, "prompt_hash_key", prompt_key(self.prompt_hash_key))
        if self.prompt_storage is PromptStorage.HASH:
            check_hash_key(self.prompt_hash_key)
        check_tags(self.tags, "TieredClientConfig.tags")


def check_tags(tags: Mapping[str, str], where: str) -> None:
    """Tags go into every outcome record as they are: strings to strings only."""
    if not isinstance(tags, Mapping):
        raise ValueError(f"{where} must be a mapping of str -> str")
    for k, v in tags.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise ValueError(f"{where}: tag {k!r} must map a string to a string, got {v!r}")
