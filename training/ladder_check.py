"""Check a tier ladder against an outcomes file before any work is done with the two.

A typo in a tier's `outcomes_key` used to train quietly: that tier had no labels, its
pass rate was NaN, and the policy routed everything to the top tier. The likeliest
mistake with one's own data, so it is refused up front with the key, the ladder line
that sets it, and the keys the file does have that look closest.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from pathlib import Path

from outcomes import OutcomeRecord
from router.ladder import Ladder, LadderError, Tier

_TABLE = re.compile(r"^\s*\[\[?\s*([A-Za-z_]+)\s*\]?\]\s*(#.*)?$")
_KEY_LINE = re.compile(r"^\s*outcomes_key\s*=")


def outcomes_key_lines(ladder_path: Path) -> dict[str, int]:
    """Line number of each table's `outcomes_key`, by table: "tier[0]", ..., "second_opinion".

    Best effort (a ladder written with inline tables has no such lines): a table missing
    here is reported without a line number.
    """
    try:
        text = ladder_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return {}
    lines: dict[str, int] = {}
    table: str | None = None
    tiers = 0
    for n, line in enumerate(text.splitlines(), 1):
        m = _TABLE.match(line)
        if m:
            if m.group(1) == "tier" and line.strip().startswith("[["):
                table = f"tier[{tiers}]"
                tiers += 1
            else:
                table = m.group(1)
            continue
        if table is not None and _KEY_LINE.match(line):
            lines.setdefault(table, n)
    return lines


def _tables(ladder: Ladder, second_opinion: bool = True) -> list[tuple[str, Tier]]:
    out = [(f"tier[{i}]", t) for i, t in enumerate(ladder.tiers)]
    if second_opinion and ladder.second_opinion is not None:
        out.append(("second_opinion", ladder.second_opinion))
    return out


def check_keys_present(
    ladder: Ladder,
    ladder_path: Path | str,
    keys_present: Iterable[str],
    data: Path | str,
    *,
    second_opinion: bool = True,
) -> None:
    """Every tier's (and the second opinion's) `outcomes_key` must be a result key in the
    file; else a LadderError per missing key: the ladder line, the key and the nearest keys."""
    present = set(keys_present)
    where = outcomes_key_lines(Path(ladder_path))
    problems = []
    for table, tier in _tables(ladder, second_opinion):
        if tier.outcomes_key in present:
            continue
        line = where.get(table)
        loc = f"{ladder_path}:{line}" if line else f"{ladder_path}"
        close = difflib.get_close_matches(tier.outcomes_key, sorted(present), n=3, cutoff=0.5)
        hint = (
            f"closest keys in the file: {', '.join(repr(k) for k in close)}"
            if close
            else f"keys in the file: {_some(sorted(present))}"
        )
        what = "second opinion" if table == "second_opinion" else f"tier {tier.name!r}"
        problems.append(
            f"{loc}: outcomes_key {tier.outcomes_key!r} of {what} is not a result key in "
            f"{data}; {hint}"
        )
    if problems:
        raise LadderError("; ".join(problems))


def check_ladder_against(
    ladder: Ladder, ladder_path: Path | str, records: Iterable[OutcomeRecord], data: Path | str
) -> None:
    """`check_keys_present` over the result keys of `records` (every split of the file)."""
    keys: set[str] = set()
    for r in records:
        keys.update(r.results)
    if not keys:
        raise LadderError(f"{data}: no record has any result; nothing to check the ladder against")
    check_keys_present(ladder, ladder_path, keys, data)


def check_tiers_have_results(
    ladder: Ladder, ladder_path: Path | str, missing: dict[str, int], n: int, data: Path | str
) -> None:
    """A tier with no result among the `n` training prompts cannot be learned: refuse."""
    empty = [t for t in ladder.tiers if missing.get(t.name, 0) >= n]
    if not empty:
        return
    lines = outcomes_key_lines(Path(ladder_path))
    parts = []
    for t in empty:
        line = lines.get(f"tier[{ladder.index(t.name)}]")
        loc = f"{ladder_path}:{line}" if line else str(ladder_path)
        parts.append(f"{loc}: tier {t.name!r} (outcomes_key {t.outcomes_key!r})")
    raise LadderError(
        f"{data}: no training prompt has a result for {'; '.join(parts)}; every tier needs "
        "results in the train split (give it some, or leave the tier out of the ladder)"
    )


def _some(keys: list[str], n: int = 8) -> str:
    shown = ", ".join(repr(k) for k in keys[:n])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > n else "")
