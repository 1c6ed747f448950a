"""Labeling: run the tiers on new prompts, grade the answers, write an outcomes file.

On-demand (bounded concurrent Converse calls, resumable, spend-capped) or Bedrock
Batch Inference (S3 records, one job per tier, about half the price).
"""

from labeling.answers import ModelAnswer, final_answer
from labeling.config import AwsConfig, BatchConfig, LabelConfig
from labeling.graders import (
    ChoiceGrader,
    ExactGrader,
    GraderSet,
    JsonSchemaGrader,
    JudgeConfig,
    JudgeGrader,
    NumericGrader,
    RegexGrader,
    Verdict,
    parse_grader_spec,
)
from labeling.prompts import PromptItem, PromptsError, iter_prompts
from labeling.results import RunSummary

__all__ = [
    "AwsConfig",
    "BatchConfig",
    "ChoiceGrader",
    "ExactGrader",
    "GraderSet",
    "JsonSchemaGrader",
    "JudgeConfig",
    "JudgeGrader",
    "LabelConfig",
    "ModelAnswer",
    "NumericGrader",
    "PromptItem",
    "PromptsError",
    "RegexGrader",
    "RunSummary",
    "Verdict",
    "final_answer",
    "iter_prompts",
    "parse_grader_spec",
]
