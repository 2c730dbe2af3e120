"""EmbedLLM's long CSV: one row per (model, prompt) outcome, pivoted into the capability matrix.

Columns: ``model_id``, ``prompt_id``, ``prompt`` (the question text) and ``label`` (1 correct, 0 wrong;
also ``true``/``false`` or a score in [0, 1] where >= 0.5 counts as correct; blank = not evaluated) are
required; ``model_name`` (the model's name, else its ``model_id``) and ``category`` (the question's
source, else the file stem) are optional. The published files have
``model_id,model_name,prompt_id,prompt,label,category``.

Questions (id = ``prompt_id``) and models are in first-seen order. Rows about one prompt must agree on
its prompt text and category, rows about one model on its name (and one name must not belong to two
model ids); a (model, prompt) pair given twice with different labels is an error naming both lines
(given twice alike, it is kept once).
"""

from __future__ import annotations

from pathlib import Path

from smcs.bank.schema import Question
from smcs.ingest.importers.records import Collector, ImportedBank, cell_outcome, csv_rows
from smcs.errors import InputError

REQUIRED = ("model_id", "prompt_id", "prompt", "label")


def read_embedllm(path: Path) -> ImportedBank:
    """Read an EmbedLLM CSV file (see the module docstring for its columns)."""
    header, where, rows = csv_rows(path, REQUIRED)
    column = {name: i for i, name in enumerate(header)}
    name_at, category_at = column.get("model_name"), column.get("category")
    collector = Collector(path, where)
    names: dict[str, tuple[str, int]] = {}  # model_id -> (name, first line)
    ids: dict[str, tuple[str, int]] = {}  # name -> (model_id, first line)
    for line, fields in rows:
        here = where(line)
        model_id, prompt_id = (_required(fields, column, name, here) for name in ("model_id", "prompt_id"))
        name = (fields[name_at].strip() if name_at is not None else "") or model_id
        known_name, first = names.setdefault(model_id, (name, line))
        if known_name != name:
            raise InputError(f"{here}: model_id {model_id!r} is named {name!r}, but {where(first)} names it {known_name!r}")
        known_id, first = ids.setdefault(name, (model_id, line))
        if known_id != model_id:
            raise InputError(f"{here}: model_name {name!r} belongs to model_id {model_id!r}, but to {known_id!r} at {where(first)}")
        text = fields[column["prompt"]]
        source = (fields[category_at].strip() if category_at is not None else "") or path.stem
        found = collector.find(prompt_id)
        if found is None:
            target = collector.add_question(line, Question(id=prompt_id, text=text, source=source), "prompt")
        else:
            target, first = found
            known = collector.questions[target]
            if (known.text, known.source) != (text, source):
                what = "prompt" if known.text != text else "category"
                raise InputError(f"{here}: prompt_id {prompt_id!r} has another {what} than at {where(first)}")
        collector.add_outcome(line, collector.model(name), target, cell_outcome(fields[column["label"]], here, "label"))
    return collector.finish()


def _required(fields: list[str], column: dict[str, int], name: str, where: str) -> str:
    value = fields[column[name]].strip()
    if not value:
        raise InputError(f"{where}: column {name!r} is empty")
    return value
