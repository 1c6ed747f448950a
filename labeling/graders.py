"""Graders: turn (prompt, reference, answer) into a score in [0, 1] and a short reason.

Each grader checks at the edge (`check`) that a prompt carries what it needs (a letter
for `choice`, a number for `numeric`, ...), so a bad reference fails the run at
`file:line` before any model is called. The LLM judge is the one grader that costs
money; its verdict carries that cost so the spend cap and report count it.
"""

from __future__ import annotations

import json
import math
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from labeling.answers import ModelAnswer, final_answer
from labeling.prompts import PromptItem, PromptsError
from router.answer_features import prompt_options
from router.answer_reader import NUMBER, canonical_value, read_final, same_answer


class GradeError(RuntimeError):
    """The grader could not decide (e.g. the judge's reply had no score)."""


@dataclass(frozen=True)
class Verdict:
    score: float
    reason: str
    grader: str
    cost_usd: float = 0.0

    @property
    def passed(self) -> bool:
        return self.score >= 0.5


class Grader(Protocol):
    @property
    def name(self) -> str: ...

    def check(self, item: PromptItem) -> str | None:
        """None if `item` can be graded, else what is wrong with it."""
        ...

    def grade(self, item: PromptItem, answer: ModelAnswer) -> Verdict: ...


def _short(s: str, n: int = 60) -> str:
    s = " ".join(s.split())
    return s if len(s) <= n else s[: n - 3] + "..."


def normalise(s: str) -> str:
    """Lower case, no punctuation, no articles, single spaces (SQuAD-style)."""
    s = s.lower().translate(str.maketrans("", "", string.punctuation))
    return " ".join(w for w in s.split() if w not in ("a", "an", "the"))


@dataclass(frozen=True)
class ExactGrader:
    """Pass if the stated answer equals the reference after normalisation."""

    name: str = "exact"

    def check(self, item: PromptItem) -> str | None:
        ok = isinstance(item.reference, str | int | float) and not isinstance(item.reference, bool)
        return None if ok and normalise(str(item.reference)) else "needs a non-empty string"

    def grade(self, item: PromptItem, answer: ModelAnswer) -> Verdict:
        # The reply's final answer as the cascade reads it (router.answer_reader), compared
        # by meaning with the reference's canonical form; a reply that is the reference
        # (after normalisation) passes too.
        want = normalise(str(item.reference))
        found = read_final(answer.text)
        ref = canonical_value(str(item.reference))
        ok = bool(found and ref and same_answer(found.key, f"{ref[0]}:{ref[1]}"))
        ok = ok or normalise(answer.text) == want
        got = found.value if found is not None else final_answer(answer.text)
        reason = "match" if ok else f"expected {_short(str(item.reference))!r}, got {_short(got)!r}"
        return Verdict(1.0 if ok else 0.0, reason, self.name)


_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


def parse_number(s: Any) -> float | None:
    """A number from a reference or an answer: the last number in the text, commas,
    `$` and `%` ignored (`#### 1,234` -> 1234.0)."""
    if isinstance(s, bool):
        return None
    if isinstance(s, int | float):
        return float(s) if math.isfinite(s) else None
    if not isinstance(s, str):
        return None
    found = _NUMBER.findall(s.replace(",", ""))
    return float(found[-1]) if found else None


@dataclass(frozen=True)
class NumericGrader:
    """Pass if the stated number is within `rel_tol` (relative) or `abs_tol` of the reference."""

    rel_tol: float = 1e-6
    abs_tol: float = 1e-9
    name: str = "numeric"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.rel_tol) and self.rel_tol >= 0 and self.abs_tol >= 0):
            raise ValueError(f"numeric tolerances must be >= 0, got {self.rel_tol}, {self.abs_tol}")

    def check(self, item: PromptItem) -> str | None:
        return None if parse_number(item.reference) is not None else "needs a number"

    def grade(self, item: PromptItem, answer: ModelAnswer) -> Verdict:
        want = parse_number(item.reference)
        assert want is not None  # check() ran at the edge
        found = read_final(answer.text)
        got = float(found.value) if found is not None and found.kind == NUMBER else None
        if got is None:  # no number stated as the answer: the last number in the text
            got = parse_number(final_answer(answer.text))
        if got is None:
            got = parse_number(answer.text)
        if got is None:
            return Verdict(0.0, "no number in the answer", self.name)
        ok = math.isclose(got, want, rel_tol=self.rel_tol, abs_tol=self.abs_tol)
        return Verdict(1.0 if ok else 0.0, f"expected {want:g}, got {got:g}", self.name)


_LETTER_PATTERNS = (
    re.compile(r"answer\s+is\s*[:\uff1a]?\s*\(?([A-Z])\)?(?![A-Za-z])", re.I),
    re.compile(r"answer\s*[:\uff1a]\s*\(?([A-Z])\)?(?![A-Za-z])", re.I),
    re.compile(r"^\s*\(?([A-Z])\)?[.:]?\s*$", re.M),
    re.compile(r"\(([A-Z])\)"),
)


def choice_letter(text: str) -> str | None:
    """The option letter an answer commits to (its last `answer is (X)` / `Answer: X`)."""
    for p in _LETTER_PATTERNS:
        found = p.findall(text)
        if found:
            return str(found[-1]).upper()
    return None


@dataclass(frozen=True)
class ChoiceGrader:
    """Multiple choice: pass if the answer's letter equals the reference letter."""

    name: str = "choice"

    def check(self, item: PromptItem) -> str | None:
        ref = item.reference
        ok = isinstance(ref, str) and re.fullmatch(r"\s*\(?[A-Za-z]\)?\s*", ref) is not None
        return None if ok else "needs an option letter such as 'C'"

    def grade(self, item: PromptItem, answer: ModelAnswer) -> Verdict:
        want = str(item.reference).strip(" ()").upper()
        options = prompt_options(item.text) or string.ascii_uppercase
        found = read_final(answer.text, options)
        got = found.value if found is not None else choice_letter(answer.text)
        if got is None:
            return Verdict(0.0, "no option letter in the answer", self.name)
        return Verdict(1.0 if got == want else 0.0, f"expected {want}, got {got}", self.name)


@dataclass(frozen=True)
class RegexGrader:
    """Pass if the pattern (the grader's own, else the prompt's reference) is found."""

    pattern: str | None = None
    name: str = "regex"

    def __post_init__(self) -> None:
        if self.pattern is not None:
            re.compile(self.pattern)  # a bad pattern fails at the edge

    def _pattern(self, item: PromptItem) -> str:
        return self.pattern if self.pattern is not None else str(item.reference)

    def check(self, item: PromptItem) -> str | None:
        if self.pattern is not None:
            return None
        if not isinstance(item.reference, str):
            return "needs a regex (give regex:PATTERN or a string reference)"
        try:
            re.compile(item.reference)
        except re.error as e:
            return f"invalid regex: {e}"
        return None

    def grade(self, item: PromptItem, answer: ModelAnswer) -> Verdict:
        pat = self._pattern(item)
        ok = re.search(pat, answer.text) is not None
        return Verdict(
            1.0 if ok else 0.0,
            f"{'matched' if ok else 'no match for'} /{_short(pat, 40)}/",
            self.name,
        )


def extract_json(text: str) -> Any:
    """The first JSON value in an answer: the whole text, a ```json fence, or the first
    parseable `{...}` / `[...]`. Raises ValueError if there is none."""
    try:
        return json.loads(text)
    except ValueError:
        pass
    fence = re.search(r"```(?:json)?\s*(.*?)```", text, re.S)
    if fence:
        try:
            return json.loads(fence.group(1))
        except ValueError:
            pass
    dec = json.JSONDecoder()
    for m in re.finditer(r"[\[{]", text):
        try:
            return dec.raw_decode(text, m.start())[0]
        except ValueError:
            continue
    raise ValueError("no JSON value in the answer")


@dataclass(frozen=True)
class JsonSchemaGrader:
    """Pass if the answer contains JSON valid against the schema (the grader's, else the
    prompt's reference when that is a schema object)."""

    schema: Mapping[str, Any] | None = None
    name: str = "json_schema"

    def __post_init__(self) -> None:
        if self.schema is not None:
            _validator(self.schema)

    def check(self, item: PromptItem) -> str | None:
        if self.schema is not None:
            return None
        if not isinstance(item.reference, dict):
            return "needs a JSON schema (give json_schema:FILE or an object reference)"
        try:
            _validator(item.reference)
        except ValueError as e:
            return str(e)
        return None

    def grade(self, item: PromptItem, answer: ModelAnswer) -> Verdict:
        schema = self.schema if self.schema is not None else item.reference
        try:
            doc = extract_json(answer.text)
        except ValueError as e:
            return Verdict(0.0, str(e), self.name)
        err = next(iter(_validator(schema).iter_errors(doc)), None)
        if err is None:
            return Verdict(1.0, "valid", self.name)
        path = "/".join(str(p) for p in err.absolute_path) or "(root)"
        return Verdict(0.0, f"invalid at {path}: {_short(err.message, 80)}", self.name)


def _validator(schema: Any) -> Any:
    import jsonschema

    try:
        cls = jsonschema.validators.validator_for(schema)
        cls.check_schema(schema)
    except jsonschema.SchemaError as e:
        raise ValueError(f"invalid JSON schema: {e.message}") from None
    return cls(schema)


DEFAULT_RUBRIC = """You are grading an AI assistant's answer to a user's request.

<request>
{prompt}
</request>
{reference_block}
<answer>
{answer}
</answer>

Judge whether the answer is correct, complete and responsive to the request{ref_hint}.
Reply with one line `REASON: <one sentence>` and then one line `SCORE: <integer 0-10>`,
where 10 is fully correct and 0 is wrong or unhelpful."""

_SCORE = re.compile(r"SCORE\s*[:=]\s*(\d+(?:\.\d+)?)\s*(?:/\s*10)?", re.I)
_REASON = re.compile(r"REASON\s*[:=]\s*(.+)", re.I)


@dataclass(frozen=True)
class JudgeConfig:
    """The judge model and its price (on-demand; the judge is always called on demand)."""

    model_id: str
    price_in_per_mtok: float
    price_out_per_mtok: float
    max_tokens: int = 300
    rubric: str = DEFAULT_RUBRIC

    def __post_init__(self) -> None:
        if not self.model_id:
            raise ValueError("judge model_id must be non-empty")
        if min(self.price_in_per_mtok, self.price_out_per_mtok) < 0:
            raise ValueError("judge prices must be >= 0")
        if self.max_tokens < 16:
            raise ValueError("judge max_tokens must be >= 16")


def judge_prompt(cfg: JudgeConfig, item: PromptItem, answer: ModelAnswer) -> str:
    ref = item.reference
    block = (
        ""
        if ref is None
        else f"<reference>\n{ref if isinstance(ref, str) else json.dumps(ref)}\n</reference>\n"
    )
    hint = "" if ref is None else ", using the reference answer as ground truth"
    return cfg.rubric.format(
        prompt=item.text, answer=answer.text, reference_block=block, ref_hint=hint
    )


def parse_judge_reply(text: str) -> tuple[float, str]:
    """(score in [0, 1], reason) from the judge's reply; GradeError if it has no score."""
    found = _SCORE.findall(text)
    if not found:
        raise GradeError(f"judge reply has no 'SCORE: n' line: {_short(text, 80)!r}")
    raw = float(found[-1])
    if not 0 <= raw <= 10:
        raise GradeError(f"judge score {raw:g} is outside 0-10")
    reason = _REASON.search(text)
    return raw / 10.0, _short(reason.group(1) if reason else text, 120)


@dataclass(frozen=True)
class JudgeGrader:
    """An LLM judge over Converse: a rubric prompt in, `SCORE: n` (0-10) out, cost counted."""

    cfg: JudgeConfig
    client: Any = field(compare=False, repr=False)
    name: str = "judge"

    def check(self, item: PromptItem) -> str | None:
        return None  # a reference is used when present, not required

    def grade(self, item: PromptItem, answer: ModelAnswer) -> Verdict:
        resp = self.client.converse(
            modelId=self.cfg.model_id,
            messages=[
                {"role": "user", "content": [{"text": judge_prompt(self.cfg, item, answer)}]}
            ],
            inferenceConfig={"maxTokens": self.cfg.max_tokens, "temperature": 0.0},
        )
        reply = ModelAnswer.from_converse(resp)
        cost = (
            reply.input_tokens * self.cfg.price_in_per_mtok
            + reply.output_tokens * self.cfg.price_out_per_mtok
        ) / 1e6
        score, reason = parse_judge_reply(reply.text)
        return Verdict(score, reason, self.name, cost_usd=cost)


GRADER_NAMES = ("exact", "numeric", "choice", "regex", "json_schema", "judge")


def parse_grader_spec(spec: str, judge: JudgeGrader | None = None) -> Grader:
    """`NAME[:ARG]`: exact | numeric[:REL_TOL] | choice | regex[:PATTERN] |
    json_schema[:SCHEMA_FILE] | judge. Raises ValueError naming what is wrong."""
    name, _, arg = spec.partition(":")
    name = name.strip().lower()
    if name == "exact":
        return ExactGrader()
    if name == "numeric":
        if not arg:
            return NumericGrader()
        try:
            return NumericGrader(rel_tol=float(arg))
        except ValueError:
            raise ValueError(f"numeric:REL_TOL needs a number >= 0, got {arg!r}") from None
    if name in ("choice", "letter"):
        return ChoiceGrader()
    if name == "regex":
        try:
            return RegexGrader(arg or None)
        except re.error as e:
            raise ValueError(f"regex:{arg}: invalid pattern: {e}") from None
    if name == "json_schema":
        if not arg:
            return JsonSchemaGrader()
        try:
            schema = json.loads(Path(arg).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ValueError(f"json_schema:{arg}: cannot read schema: {e}") from None
        return JsonSchemaGrader(schema)
    if name == "judge":
        if judge is None:
            raise ValueError("the judge grader needs a judge model (--judge-model)")
        return judge
    raise ValueError(f"unknown grader {name!r}; choose from {', '.join(GRADER_NAMES)}")


@dataclass(frozen=True)
class GraderSet:
    """The run's grader, with per-task overrides."""

    default: Grader
    by_task: Mapping[str, Grader] = field(default_factory=dict)

    def for_item(self, item: PromptItem) -> Grader:
        return self.by_task.get(item.task or "", self.default)

    def check(self, item: PromptItem) -> None:
        """Raise PromptsError (file:line: reference: ...) if the item cannot be graded."""
        g = self.for_item(item)
        problem = g.check(item)
        if problem:
            raise PromptsError(f"{item.where}: field 'reference': grader {g.name!r} {problem}")

    @property
    def uses_judge(self) -> bool:
        return any(g.name == "judge" for g in (self.default, *self.by_task.values()))
