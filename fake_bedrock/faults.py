"""Fault injection: throttling, 5xx errors and latency at set rates, from seeded draws."""

from __future__ import annotations

from dataclasses import dataclass

from fake_bedrock.errors import BedrockError


@dataclass(frozen=True)
class FaultConfig:
    """Injected faults, each drawn per request from one seeded generator."""

    throttle_rate: float = 0.0
    error_rate: float = 0.0
    latency_ms: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("throttle_rate", "error_rate"):
            v = getattr(self, name)
            if not isinstance(v, int | float) or not 0 <= v <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {v!r}")
        if not isinstance(self.latency_ms, int | float) or not 0 <= self.latency_ms <= 60_000:
            raise ValueError(f"latency_ms must be in [0, 60000], got {self.latency_ms!r}")


def unavailable() -> BedrockError:
    """The 503 a model that is down (or in an outage) answers with."""
    return BedrockError(503, "ServiceUnavailableException", "Service unavailable.")


def drawn_fault(
    config: FaultConfig, u_throttle: float, u_error: float, u_kind: float
) -> tuple[str, BedrockError] | None:
    """The fault one request's three uniform draws select, with the stat it counts under.

    The caller draws all three for every request, so a seed fixes the fault sequence."""
    if u_throttle < config.throttle_rate:
        return "throttled", BedrockError(
            429, "ThrottlingException", "Too many requests, please wait before trying again."
        )
    if u_error < config.error_rate:
        if u_kind < 0.5:
            return "server_errors", unavailable()
        return "server_errors", BedrockError(
            500, "InternalServerException", "Internal server error."
        )
    return None
