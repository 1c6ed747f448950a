"""Argument types shared by every `tier-router` subcommand.

Each raises argparse.ArgumentTypeError with a message naming the bad value, so argparse
exits 2 with "argument --flag: ...". A path the OS cannot use (too long, NUL byte) is
treated as absent rather than crashing the parser.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

N = TypeVar("N", int, float)


def usable(p: Path, test: Callable[[Path], bool]) -> bool:
    try:
        return test(p)
    except (OSError, ValueError):
        return False


def _present(test: Callable[[Path], bool], missing: str, name: str) -> Callable[[str], Path]:
    """A path type that passes `test` (else "<missing>: value"); `name` is what argparse
    calls the type."""

    def parse(value: str) -> Path:
        p = Path(value)
        if not usable(p, test):
            raise argparse.ArgumentTypeError(f"{missing}: {value}")
        return p

    parse.__name__ = parse.__qualname__ = name
    return parse


existing_file = _present(Path.is_file, "no such file", "existing_file")
existing_dir = _present(Path.is_dir, "no such directory", "existing_dir")
existing_bundle = _present(Path.exists, "no such bundle directory or archive", "existing_bundle")


def out_file(value: str) -> Path:
    """A file to (over)write in an existing directory."""
    p = Path(value)
    if usable(p, Path.is_dir):
        raise argparse.ArgumentTypeError(f"{value} is a directory; give a file path")
    if not usable(p.parent, Path.exists) or len(p.name.encode()) > 255:
        raise argparse.ArgumentTypeError(f"directory {p.parent} does not exist")
    return p


def new_file(value: str) -> Path:
    """A file that must not exist yet (logs are never clobbered)."""
    p = Path(value)
    if usable(p, Path.exists):
        raise argparse.ArgumentTypeError(f"{value} already exists; give a new path")
    return out_file(value)


def out_dir(value: str) -> Path:
    p = Path(value)
    if usable(p, Path.exists) and not usable(p, Path.is_dir):
        raise argparse.ArgumentTypeError(f"{value} exists and is not a directory")
    return p


def parse_as(conv: Callable[[str], N], value: str, what: str) -> N:
    """`conv(value)`, or "expected <what>, got 'value'" when it does not parse (float
    lets nan and inf through: range checks say what is wrong with them)."""
    try:
        return conv(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {value!r}") from None


def _number(value: str, what: str) -> float:
    v = parse_as(float, value, what)
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
    return v


def positive_float(value: str) -> float:
    v = _number(value, "a number > 0")
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {value}")
    return v


def nonneg_float(value: str) -> float:
    v = _number(value, "a number >= 0")
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value}")
    return v


def rate(value: str) -> float:
    v = _number(value, "a number in [0, 1]")
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {value}")
    return v


def int_in(lo: int, hi: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        v = parse_as(int, value, "an integer")
        if not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"expected an integer in [{lo}, {hi}], got {v}")
        return v

    return parse


def positive_int(value: str) -> int:
    v = parse_as(int, value, "a positive integer")
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return v


def int_list(value: str) -> tuple[int, ...]:
    try:
        out = tuple(int(x) for x in value.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers like 32,128, got {value!r}"
        ) from None
    if not out or any(k < 1 for k in out):
        raise argparse.ArgumentTypeError(f"cluster counts must be >= 1, got {value!r}")
    return out


def add_bootstrap(p: argparse.ArgumentParser, what: str) -> None:
    """`--bootstrap N`: resamples of the evaluation prompts for 95% intervals of `what`."""
    p.add_argument(
        "--bootstrap",
        type=int_in(0, 100_000),
        default=200,
        metavar="N",
        help=f"resamples for 95%% intervals of {what} (default 200, 0: none)",
    )


# Flags that mean the same in several commands, so their type and help are written once.


def add_bundle(p: argparse.ArgumentParser) -> None:
    """`--bundle`: the router bundle a command reads (directory or archive)."""
    p.add_argument(
        "--bundle", type=existing_bundle, required=True, help="bundle directory or archive"
    )


class Renamed(argparse.Action):
    """Stores the value like a plain option; an old spelling of the flag (listed in
    `deprecated`) still works and says once on stderr which name to use instead."""

    def __init__(self, *args: Any, deprecated: tuple[str, ...] = (), **kwargs: Any) -> None:
        self.deprecated = deprecated
        super().__init__(*args, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        if option_string in self.deprecated:
            print(
                f"{parser.prog}: warning: {option_string} is deprecated; use "
                f"{self.option_strings[0]} (same meaning)",
                file=sys.stderr,
            )
        setattr(namespace, self.dest, values)


def add_renamed(
    p: argparse.ArgumentParser, flag: str, *old: str, **kwargs: Any
) -> argparse.Action:
    """`flag`, also accepted under its `old` names with a deprecation warning."""
    kwargs.setdefault("dest", flag.lstrip("-").replace("-", "_"))
    return p.add_argument(flag, *old, action=Renamed, deprecated=old, **kwargs)


def add_tiers(p: argparse.ArgumentParser, help: str = "tier ladder TOML") -> None:
    """`--ladder` (old name `--tiers`): the tier ladder a command trains, runs or labels
    against. Stored as `tiers`."""
    add_renamed(
        p,
        "--ladder",
        "--tiers",
        dest="tiers",
        type=existing_file,
        required=True,
        metavar="LADDER.toml",
        help=f"{help} (--tiers: the old name, deprecated)",
    )


def add_max_train(p: argparse.ArgumentParser) -> None:
    """`--max-train N`: the training-prompt sample of `train` and `retrain`."""
    p.add_argument(
        "--max-train",
        type=positive_int,
        default=None,
        help="use at most N training prompts, sampled (default: all)",
    )


PROMPT_STORAGES = ("features", "store", "hash", "drop")


def add_prompt_storage(p: argparse.ArgumentParser) -> None:
    """`--prompt-storage`: what the outcome log keeps of each prompt and answer."""
    p.add_argument(
        "--prompt-storage",
        choices=PROMPT_STORAGES,
        default="features",
        help="what the outcome log keeps of prompts and answers: features (the router's "
        "features of the prompt, no text; retrain works from them), store (the text: the "
        "opt-in that feedback and the verifier's retraining need), hash (an HMAC; the key "
        "from $TIER_ROUTER_PROMPT_KEY) or drop (lengths only); with $TIER_ROUTER_PROMPT_KEY "
        "set, features also logs an HMAC join key",
    )


def prompt_storage_error(value: str) -> str | None:
    """Why `--prompt-storage value` cannot run here (None: it can)."""
    if value == "hash":
        from serving.outcome_log import PROMPT_KEY_ENV, prompt_key

        if not prompt_key(b""):
            return (
                f"--prompt-storage hash needs a secret key in ${PROMPT_KEY_ENV} (an unkeyed "
                "hash of a short prompt can be reversed by guessing)"
            )
    return None


def log_location(value: str) -> str | Path:
    """An outcome log: an existing file, or `s3://bucket/prefix` (every object under it)."""
    if value.startswith("s3://"):
        from serving.log_source import LogSourceError, split_s3

        try:
            split_s3(value)
        except LogSourceError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
        return value
    return existing_file(value)


def add_logs(
    p: argparse.ArgumentParser,
    *old: str,
    help: str = "outcome log(s): files (plain or gzipped JSONL) or s3://bucket/prefix/ (read as "
    "streams; S3 endpoint and credentials from the AWS environment)",
    required: bool = True,
) -> None:
    """`--log L [L ...]`: the serving outcome logs a command reads (one name in every
    command; `old` names still work, with a deprecation warning)."""
    note = f" ({', '.join(old)}: the old name, deprecated)" if old else ""
    add_renamed(
        p, "--log", *old, type=log_location, nargs="+", required=required, metavar="LOG",
        default=None, help=help + note,
    )  # fmt: skip


def add_grades(p: argparse.ArgumentParser) -> None:
    """`--grades G [G ...]`: graded feedback joined to the logs by request id."""
    p.add_argument(
        "--grades",
        type=log_location,
        nargs="+",
        default=None,
        metavar="GRADES",
        help="graded feedback, JSONL lines {\"request_id\", \"score\" in [0, 1], \"tier\" "
        "(optional: default the answer the caller got)}, joined by request id: the only "
        "labels of cascade-judged answers (files or s3:// prefixes, read like --log)",
    )


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Appends `(default: X)` to an option's help, so `--help` says what leaving it out
    means; skipped where the help already names the default or there is none to name
    (None, on/off flags, empty lists)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        d = action.default
        if (
            not action.option_strings
            or d is None
            or d is argparse.SUPPRESS
            or isinstance(d, bool)
            or d in ((), [], "")
            or "default" in text.lower()
        ):
            return text
        return f"{text} (default: %(default)s)"
