"""A request as the clients take it, and as the client's walks use it once routed.

`ConverseOptions` is the one list of a request's keyword options: the sync and async
clients' `converse` and `converse_stream` all take it, so a new option is added once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

from router.decision import Decision
from serving.checks import Check
from serving.conversation import ConverseRequest, RequestError
from serving.snapshot import Cascade

# What `converse` answers: a prompt, a Converse message list, or a built request.
RequestLike = str | ConverseRequest | Sequence[Mapping[str, Any]]


class ConverseOptions(TypedDict, total=False):
    """A request's keyword options; each may be left out.

    - `system`: the system prompt (replaces a ConverseRequest's own).
    - `tool_config`: Converse `toolConfig` (replaces a ConverseRequest's own).
    - `conversation_id`: pins later turns to the tier this conversation is on.
    - `tags`: added to the config's tags in this request's outcome record.
    - `checks`: run after the client's own checks on every answer.
    - `request_id`: the record's id (a random one when left out).
    """

    system: str | None
    tool_config: Mapping[str, Any] | None
    conversation_id: str | None
    tags: Mapping[str, str] | None
    checks: Sequence[Check]
    request_id: str | None


def check_options(options: Mapping[str, object], where: str) -> None:
    """Raise TypeError for a keyword ConverseOptions does not have, as a signature would."""
    for name in options:
        if name not in ConverseOptions.__optional_keys__:
            raise TypeError(f"{where}() got an unexpected keyword argument {name!r}")


@dataclass(frozen=True)
class RequestPlan:
    """A validated, routed request: everything the walk and the record need."""

    t0: float
    req: ConverseRequest
    text: str
    request_id: str
    tags: dict[str, str]
    decision: Decision
    route_error: str | None
    cascade: Cascade | None  # from the same bundle snapshot as `decision`
    p_router: list[float]
    start: int
    conversation_id: str | None
    sticky: bool
    pinned_index: int | None
    exploration: dict[str, Any] | None
    checks: tuple[Check, ...]
    start_reason: str = "router decision"  # why the walk starts at `start` (logged)
    # prompt_storage=features: the router's features of `text` (router.prompt_features),
    # or None and why not (logged in the record's `prompt`).
    features: Any | None = None
    no_features: str | None = None


def normalize_request(
    request: RequestLike,
    system: str | None,
    tool_config: Mapping[str, Any] | None = None,
) -> ConverseRequest:
    """Any accepted request shape as a validated ConverseRequest (RequestError if not)."""
    if isinstance(request, ConverseRequest):
        if system is not None or tool_config is not None:
            return ConverseRequest.build(
                request.messages, system or request.system, tool_config or request.tool_config
            )
        return request
    if isinstance(request, str):
        if not request.strip():
            raise RequestError("prompt must be a non-empty string")
        return ConverseRequest.from_prompt(request, system, tool_config)
    return ConverseRequest.build(request, system, tool_config)
