"""``smcs bank build``: a bank from a questions file, by asking every configured model every question.

- ``questions``: the questions file (JSON Lines of ``BuildQuestion``) and the prompt each model is sent;
- ``journal``: the append-only, fsynced record of outcomes that makes an interrupted build resumable;
- ``run``: ``build_bank``, which embeds, asks (bounded concurrency), checks and writes the bank version.
"""

from smcs.ingest.builder.journal import Journal, JournalEntry, JournalMismatch
from smcs.ingest.builder.questions import BuildQuestion, question_prompt, read_questions
from smcs.ingest.builder.run import BuildReport, build_bank

__all__ = [
    "BuildQuestion",
    "BuildReport",
    "Journal",
    "JournalEntry",
    "JournalMismatch",
    "build_bank",
    "question_prompt",
    "read_questions",
]
