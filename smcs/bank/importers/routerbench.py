"""RouterBench's CSV export: one row per prompt, one outcome column and companion columns per model.

Columns: ``prompt`` (required: the question text), ``sample_id`` (optional: the question id, else
``f"{file stem}-{row index}"``), ``eval_name`` (optional: the question's source, else the file stem),
and per model ``MODEL`` (its outcome: 0/1, ``true``/``false`` or a score in [0, 1] where >= 0.5 counts
as correct; blank = not evaluated), ``MODEL|total_cost`` (optional: what answering this prompt cost)
and ``MODEL|model_response`` (ignored). Every plain column other than those named here and
``oracle_model_to_route_to`` (and a pandas index column, unnamed or ``Unnamed: 0``) is a model.

Costs are per question and per model, so they are kept as they are rather than turned into per-token
prices: each question's ``metadata["cost"]`` is ``{model: total_cost}`` for the models whose cost cell is
filled (and is absent when none is). ``ModelInfo`` costs stay 0.
"""

from __future__ import annotations

from pathlib import Path

from ..schema import Question
from .records import Collector, ImportedBank, cell_number, cell_outcome, csv_rows

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
        raise ValueError(f"{where(1)}: the header names no model column (it has: {', '.join(map(repr, header))})")
    costs = {name.removesuffix(COST_SUFFIX): i for name, i in column.items() if name.endswith(COST_SUFFIX)}
    for model in costs:
        if model not in models:
            raise ValueError(f"{where(1)}: column {model + COST_SUFFIX!r} has no outcome column {model!r}")
    collector = Collector(path, where)
    model_rows = [(collector.model(name), column[name], name) for name in models]
    for index, (line, fields) in enumerate(rows):
        here = where(line)
        question_id = fields[column["sample_id"]].strip() if "sample_id" in column else collector.default_id(index)
        if not question_id:
            raise ValueError(f"{here}: column 'sample_id' is empty")
        source = fields[column["eval_name"]].strip() if "eval_name" in column else path.stem
        cost = {}
        for model, i in costs.items():
            if fields[i].strip():
                cost[model] = cell_number(fields[i], here, model + COST_SUFFIX)
                if cost[model] < 0:
                    raise ValueError(f"{here}: column {model + COST_SUFFIX!r}: {fields[i].strip()!r} is negative")
        question = Question(id=question_id, text=fields[column["prompt"]], source=source, metadata={"cost": cost} if cost else {})
        target = collector.add_question(line, question, "prompt")
        for row, i, name in model_rows:
            collector.add_outcome(line, row, target, cell_outcome(fields[i], here, name))
    return collector.finish()
