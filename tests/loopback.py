"""Loopback helpers every test folder imports: a free port, and moto's S3 in server mode
on 127.0.0.1.

stop() then start() on the same port simulates an S3 outage: moto keeps its state
in-process, so buckets and objects survive the restart.
"""

from __future__ import annotations

import json
import socket
import uuid
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MotoS3:
    def __init__(self, bucket_prefix: str = "test") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.bucket = f"{bucket_prefix}-{uuid.uuid4().hex[:12]}"  # moto's state is process-wide
        self._server: Any = None

    def start(self) -> None:
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def client(self) -> Any:
        from fake_bedrock.batch import loopback_s3_client

        return loopback_s3_client(self.url)

    def records(self) -> list[dict[str, Any]]:
        """Every JSON line of every object in the bucket."""
        s3 = self.client()
        out: list[dict[str, Any]] = []
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket):
            for obj in page.get("Contents", []):
                body = s3.get_object(Bucket=self.bucket, Key=obj["Key"])["Body"].read()
                out.extend(json.loads(line) for line in body.splitlines() if line.strip())
        return out
