"""The labeling tests' fixtures; they live in test_labeling_support.py with the helpers."""

from test_labeling_support import (  # noqa: F401
    bucket,
    lab,
    ladder,
    ladder_path,
    mmlu,
    s3_url,
    start_server,
)
