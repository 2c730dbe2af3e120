"""Alignment data from the strategies: ``smcs data sft|preference|opinions`` (issue 6, item 3).

- ``sft`` (``smcs.data.sft``): MoAA stage 1 (Wang et al., ICML 2025, §3.1): a strategy's answers as chat-SFT records.
- ``preference`` (``smcs.data.preference``): MoAA stage 2 (§3.2): policy samples judged pairwise by MoA
  as a reward model (criteria filter, proposer judges, aggregator judge; Appendix K.2–K.4, prompts in
  ``smcs.data.prompts``), both orders, written as DPO pairs.
- ``opinions`` (``smcs.data.opinions``): Mixture-of-Opinions (MoO) records.

Every job reads an instructions file and appends to a resumable output (``smcs.data.jobs``);
``smcs.cli.data.add_data_parser`` registers the commands.
"""

from __future__ import annotations

from .jobs import Instruction, JobReport, RecordLog, read_instructions, run_job
from .preference import JudgePass, PairJudgement, PreferenceOutcome, judge_pair, preference_steps

__all__ = [
    "Instruction",
    "JobReport",
    "JudgePass",
    "PairJudgement",
    "PreferenceOutcome",
    "RecordLog",
    "judge_pair",
    "preference_steps",
    "read_instructions",
    "run_job",
]
