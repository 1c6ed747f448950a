"""The error a fake Bedrock operation raises; the wire turns it into Bedrock's error response."""

from __future__ import annotations


class BedrockError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
