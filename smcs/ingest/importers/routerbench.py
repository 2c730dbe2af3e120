"""RouterBench's CSV export: one row per prompt, one outcome column and companion columns per model.

Columns: ``prompt`` (required: the question text, see below), ``sample_id`` (optional: the question id, else
``f"{file stem}-{row index}"``), ``eval_name`` (optional: the question's source, else the file stem),
and per model ``MODEL`` (its outcome: 0/1, ``true``/``false`` or a score in [0, 1] where >= 0.5 counts
as correct; blank = not evaluated), ``MODEL|total_cost`` (optional: what answering this prompt cost)
and ``MODEL|model_response`` (ignored). Every plain column other than those named here and
``oracle_model_to_route_to`` (and a pandas index column, unnamed or ``Unnamed: 0``) is a model.

RouterBench publishes ``prompt`` as a Python list literal of strings (``"['Please answer ...']"``): a
cell that is one (it starts with ``[`` and ends with ``]``, and ``ast.literal_eval`` reads it as a
non-empty list of strings) becomes the strings joined by a blank line; any other cell is the text as it
is. The text is kept whole in the question record (what is embedded is the bank's query-text rule's
business).

RouterBench repeats some ``sample_id``s: the same question again, its prompt list holding the question
twice, its cost doubled and outcomes blank where the other row has them. Rows repeating an id are merged
into the first (``Collector.add_or_repeat``): outcomes known in either are kept, blanks stay unknown
(-1), the first row's text and costs stay, and ``ImportedBank.repeats`` counts the merged rows; known
outcomes that disagree are an error naming both lines and the model.

Costs are per question and per model, so they are kept as they are rather than turned into per-token
prices: each question's ``metadata["cost"]`` is ``{model: total_cost}`` for the models whose cost cell is
filled (and is absent when none is). ``ModelInfo`` costs stay 0.
"""

from __future__ import annotations

import ast
from pathlib import Path

from smcs.bank.schema import Question
from smcs.ingest.importers.records import Collector, ImportedBank, cell_number, cell_outcome, csv_rows
from smcs.errors import InputError

NOT_MODELS = ("prompt", "sample_id", "eval_name", "oracle_model_to_route_to")
COST_SUFFIX = "|total_cost"


def _is_model_column(name: str) -> bool:
    return "|" not in name and name not in NOT_MODELS and name.strip() != "" and not name.startswith("Unnamed:")


def read_routerbench(path: Path) -> ImportedBank:
    """Read a RouterBench CSV file (see the module docstring for its columns)."""
    header, where, rows = csv_rows(path, ["prompt"])
    column = {name: i for i, name in enumerate(header)}
    models = [name for name in header if _is_model_column(name)]
    if not models:
        raise InputError(f"{where(1)}: the header names no model column (it has: {', '.join(map(repr, header))})")
    costs = {name.removesuffix(COST_SUFFIX): i for name, i in column.items() if name.endswith(COST_SUFFIX)}
    for model in costs:
        if model not in models:
            raise InputError(f"{where(1)}: column {model + COST_SUFFIX!r} has no outcome column {model!r}")
    collector = Collector(path, where)
    model_rows = [(collector.model(name), column[name], name) for name in models]
    for index, (line, fields) in enumerate(rows):
        here = where(line)
        question_id = fields[column["sample_id"]].strip() if "sample_id" in column else collector.default_id(index)
        if not question_id:
            raise InputError(f"{here}: column 'sample_id' is empty")
        source = fields[column["eval_name"]].strip() if "eval_name" in column else path.stem
        cost = {}
        for model, i in costs.items():
            if fields[i].strip():
                cost[model] = cell_number(fields[i], here, model + COST_SUFFIX)
                if cost[model] < 0:
                    raise InputError(f"{here}: column {model + COST_SUFFIX!r}: {fields[i].strip()!r} is negative")
        text = prompt_text(fields[column["prompt"]])
        question = Question(id=question_id, text=text, source=source, metadata={"cost": cost} if cost else {})
        target = collector.add_or_repeat(line, question, "prompt")
        for row, i, name in model_rows:
            collector.add_outcome(line, row, target, cell_outcome(fields[i], here, name))
    return collector.finish()


def prompt_text(cell: str) -> str:
    """The question text of a ``prompt`` cell: a list literal of strings joined by blank lines, else the cell."""
    literal = cell.strip()
    if not (literal.startswith("[") and literal.endswith("]")):
        return cell
    try:
        value = ast.literal_eval(literal)  # literals only: no names, calls or attributes are evaluated
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return cell
    if isinstance(value, list) and value and all(isinstance(part, str) for part in value):
        return "\n\n".join(value)
    return cell
