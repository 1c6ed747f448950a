"""The outcomes contract's token estimate: one token per four characters, rounded up.

Costs are compared in tokens the recorded data does not always carry (a prompt's input
tokens never, an answer's output tokens sometimes); every estimate of them goes through
here so training, evaluation, the cascade policy and the labeler price a call alike.
"""

from __future__ import annotations

import math

CHARS_PER_TOKEN = 4


def estimate_tokens(chars: int) -> int:
    """ceil(chars / 4): the tokens of a text of `chars` characters."""
    return math.ceil(chars / CHARS_PER_TOKEN)


def prompt_tokens(chars: int) -> int:
    """Input tokens of a prompt of `chars` characters: at least one, as every call is billed."""
    return max(1, estimate_tokens(chars))
