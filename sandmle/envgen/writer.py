"""The TechnicalWriter role: description.md in the style of a competition page.

The procedural writer builds the page from the DNA's catalogue domain (story, what a row is,
column and target meanings), the generator's notes (media layout, series, graph) and the
tables; it never reads the hidden rule. The LLM-backed writer
asks a model to rewrite that page in its domain's voice and rejects any text that leaks the
rule, drops a section or forgets a target column.
"""

from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

import pandas as pd

from sandmle.envgen import domains, llm, metric_text
from sandmle.envgen.verify import check_description

_KIND_TEXT = {
    "probability": "a probability in [0, 1] for each target column",
    "label": "one label per row",
    "value": "a number for each target column",
    "ranking": "the {k} most likely classes, space-separated, most likely first",
    "text": "the normalised text",
}
_MEDIA_COLUMNS = {"image": "path", "audio": "path", "text_file": "path", "series_file": "path"}


def _column_kind(series: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(series):
        return "boolean"
    missing = ", has missing values" if series.isna().any() else ""
    if pd.api.types.is_integer_dtype(series) or (
            pd.api.types.is_float_dtype(series)
            and series.dropna().eq(series.dropna().round()).all() and series.notna().any()):
        return "integer" + missing
    if pd.api.types.is_float_dtype(series):
        return "number" + missing
    nunique = series.nunique()
    if nunique <= 30:
        return f"category, {nunique} values" + missing
    if series.astype(str).str.len().mean() > 20:
        return "text" + missing
    return f"category, {nunique} values" + missing


def _note_columns(notes: Mapping[str, Any]) -> dict[str, str]:
    """Column -> meaning, from the generator's notes (including multimodal parts)."""
    out: dict[str, str] = {}
    for key, value in (notes.get("columns") or {}).items():
        if value not in ("numeric", "categorical"):  # opaque tables have no meanings
            out[str(key)] = str(value)
    for part, info in (notes.get("parts") or {}).items():
        for col, role in (info.get("columns") or {}).items() if isinstance(info, Mapping) else ():
            if role not in ("numeric", "categorical"):
                out.setdefault(str(col), str(role))
    return out


def _plural(entity: str) -> str:
    return entity if entity.endswith(("s", "series")) else entity + "s"


def _human(name: str) -> str:
    return name.replace("_", " ")


def _codes(names: Sequence[Any], limit: int = 12) -> str:
    shown = ", ".join(f"`{n}`" for n in list(names)[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _series_text(series: Mapping[str, Any]) -> str:
    unit = f" ({series['unit']})" if series.get("unit") else ""
    return f"{series['value']}{unit}, one value per {series['step']}"


class TechnicalWriter:
    """Writes description.md from the DNA's domain and the data, never from the rule.

    Sections (stable, so that tools can read them): Overview, Data files, Columns (a table:
    column | in | type | meaning), Target, Evaluation (the metric's name in backticks,
    "higher is better" / "lower is better", what it measures and its formula), Submission
    format (the columns and a CSV example).
    """

    def write(self, dna: Any, generated: Any, spec: Mapping[str, Any]) -> str:
        d = dna if isinstance(dna, Mapping) else dna.to_dict()
        dom = domains.lookup(d.get("domain", ""))
        modality, task_type = d.get("modality", "tabular"), d.get("task_type", "classification")
        idc, targets = spec["id_column"], list(spec["target_columns"])
        notes = getattr(generated, "notes", {}) or {}
        train, test, sample = generated.train, generated.test, generated.sample_submission
        train_targets = [c for c in train.columns if c not in test.columns and c != "class"]
        entity = dom.entity if dom else "row"
        kwargs = dict(spec.get("metric_kwargs") or {})
        k = kwargs.get("k", "k")
        tspec = domains.target_spec(_dna_like(d)) or {}
        title_target = _human(tspec.get("name") or (train_targets[0] if train_targets
                                                     else "the target"))
        name = (dom.name if dom else (d.get("domain") or "A synthetic benchmark")).strip()
        lines = [f"# {name[:1].upper()}{name[1:]}: predict {title_target}", "", "## Overview", ""]
        lines.append(dom.story if dom else (
            f"This is a {modality} {task_type} competition. Each row of the data is one "
            f"example; the labels of the test rows are kept private."))
        lines += ["", self._task_paragraph(d, dom, spec, train, test, train_targets, notes), ""]
        lines += ["## Data files", ""]
        lines.append(f"- `train.csv`: {len(train)} rows, one per {entity}, with the inputs and "
                     f"the target column(s) {_codes(train_targets, 6)}.")
        lines.append(f"- `test.csv`: {len(test)} rows with the same inputs and no target; "
                     "predict these.")
        lines.append("- `sample_submission.csv`: a valid submission (a constant prediction) in "
                     "the required format.")
        for pattern, what in sorted((notes.get("media") or {}).items()):
            lines.append(f"- `{pattern}`: {what}.")
        if not notes.get("media") and generated.media:
            folders: dict[str, int] = {}
            for rel in generated.media:
                folders[rel.split("/")[0]] = folders.get(rel.split("/")[0], 0) + 1
            lines += [f"- `{top}/`: {n} file(s)." for top, n in sorted(folders.items())]
        lines += ["", "## Columns", "", "| column | in | type | meaning |", "|---|---|---|---|"]
        lines += self._column_rows(d, dom, spec, train, test, train_targets, notes)
        lines += ["", "## Target", "", self._target_text(d, dom, spec, train_targets, notes), ""]
        what, formula = metric_text.describe(spec["metric"], kwargs)
        direction = "lower is better" if spec.get("is_lower_better") else "higher is better"
        lines += ["## Evaluation", "",
                  f"Submissions are scored with `{spec['metric']}` ({direction}): {what}.", ""]
        if formula:
            lines += ["```", formula, "```", ""]
        kind = _KIND_TEXT.get(spec.get("submission_kind"), "a prediction").format(k=k)
        lines += ["## Submission format", "",
                  f"Write `submission.csv` with the columns {_codes(list(sample.columns), 40)}: "
                  f"one row per `{idc}` of `test.csv` (any order), with {kind}. Example:", "",
                  "```csv", sample.head(3).to_csv(index=False, lineterminator="\n").strip(),
                  "```", ""]
        return "\n".join(lines)

    def _task_paragraph(self, d: Mapping[str, Any], dom: Any, spec: Mapping[str, Any],
                        train: pd.DataFrame, test: pd.DataFrame, train_targets: list[str],
                        notes: Mapping[str, Any]) -> str:
        task_type, modality = d.get("task_type"), d.get("modality")
        entity = dom.entity if dom else "row"
        what = _codes(train_targets, 4)
        text = (f"Your task: predict {what} for every {entity} in `test.csv`. The training set "
                f"is deliberately small ({len(train)} {_plural(entity)}), so a good solution "
                "generalises from few examples; the test set is larger so that scores are "
                "stable.")
        if task_type == "forecasting":
            s = notes.get("series") or {}
            text += (f" Each row is one series: `t_000` ... `t_{s.get('length', 1) - 1:03d}` hold "
                     f"its last {s.get('length')} readings ({_series_text(s)}), oldest first; "
                     f"the targets are the next {s.get('horizon')} readings, in order.")
        elif modality == "timeseries":
            s = notes.get("series") or {}
            text += (f" Each row is one window of {s.get('length')} readings "
                     f"({_series_text(s)}), oldest first, in columns `t_000` onwards; the "
                     "label describes the whole window.")
        elif modality == "graph":
            text += (" The rows are the nodes of one graph; `graph/edges.csv` lists its "
                     "edges. Train and test nodes are linked to each other, so a node's "
                     "neighbours (and their labels, for training nodes) tell a lot about it: "
                     "this is transductive node prediction.")
        elif task_type == "ranking":
            text += (f" The true class of each row is one of {len(spec.get('labels') or [])} "
                     f"classes; submit your {d.get('metric_kwargs', {}).get('k')} best guesses "
                     "in order, most likely first.")
        elif task_type == "sequence":
            text += (" The rows are tokens of sentences (`sentence_id`, `token_id` give their "
                     "place): each token's `before` is the written form and `after` the "
                     "spoken form. Most tokens stay the same; numbers, years, letter "
                     "abbreviations and amounts of money must be spelled out.")
        elif task_type == "reconstruction":
            text += (" Each test image must be cleaned pixel by pixel: a row of the tables is "
                     "one pixel, with id `<image>_<row>_<col>` (1-based); the noisy pages are "
                     "PNG files, and the training pages also come cleaned.")
        elif modality == "multimodal":
            parts = " and ".join(d.get("input_shape", {}).get("parts", []))
            text += (f" Each {entity} has data of several kinds ({parts}): the table's "
                     "columns, and files named by the path columns. No single kind tells the "
                     "whole story; combining them pays.")
        if d.get("label_structure") == "multilabel":
            text += " Several labels can be 1 for the same row."
        return text

    def _column_rows(self, d: Mapping[str, Any], dom: Any, spec: Mapping[str, Any],
                     train: pd.DataFrame, test: pd.DataFrame, train_targets: list[str],
                     notes: Mapping[str, Any]) -> list[str]:
        idc = spec["id_column"]
        meaning = _note_columns(notes)
        entity = dom.entity if dom else "row"
        rows, series_cols = [], [c for c in train.columns if c.startswith("t_")]
        tspec = domains.target_spec(_dna_like(d)) or {}
        for col in train.columns:
            if col in series_cols and d.get("modality") == "timeseries":
                continue
            where = "train, test" if col in test.columns else "train"
            if col == idc:
                kind, what = "identifier", meaning.get(col) or (
                    f"unique id of the {entity} (random: carries no information)")
            elif col in train_targets:
                kind, what = "target", tspec.get("meaning") or f"the value to predict ({_human(col)})"
                if "names" in tspec and col in tspec["names"]:
                    i = list(tspec["names"]).index(col)
                    if "meanings" in tspec:
                        what = tspec["meanings"][i]
                    elif "meaning" in tspec:
                        what = tspec["meaning"].format(name=_human(col))
            elif col == "class":
                kind, what = "category", "token class (PLAIN, CARDINAL, DATE, LETTERS, MONEY, PUNCT); train only"
            elif col in _MEDIA_COLUMNS:
                kind, what = "path", meaning.get(col, "path of the row's file")
            else:
                kind = _column_kind(train[col])
                what = meaning.get(col) or {"before": "the written token",
                                            "after": "the spoken form (target)",
                                            "sentence_id": "sentence the token belongs to",
                                            "token_id": "position of the token in its sentence (0-based)",
                                            "text": "free text"}.get(col, "an input feature")
            rows.append(f"| `{col}` | {where} | {kind} | {what} |")
        if series_cols and d.get("modality") == "timeseries":
            s = notes.get("series") or {}
            rows.insert(1, f"| `{series_cols[0]}` ... `{series_cols[-1]}` | train, test | number"
                        f"{', has missing values' if train[series_cols].isna().any().any() else ''}"
                        f" | {_series_text(s)}; `t_000` is the oldest |")
        return rows

    def _target_text(self, d: Mapping[str, Any], dom: Any, spec: Mapping[str, Any],
                     train_targets: list[str], notes: Mapping[str, Any]) -> str:
        tspec = domains.target_spec(_dna_like(d)) or {}
        ls, task_type = d.get("label_structure"), d.get("task_type")
        cols, kind = list(spec["target_columns"]), spec.get("submission_kind")
        labels = spec.get("labels") or []
        meaning = tspec.get("meaning", "")
        first = train_targets[0] if train_targets else cols[0]
        if task_type == "sequence":
            return ("`after`: the token as it is read aloud. Plain words and punctuation are "
                    "copied unchanged.")
        if task_type == "reconstruction":
            return ("`value`: the clean intensity of the pixel, from 0 (black) to 1 (white).")
        if task_type == "forecasting":
            s = notes.get("series") or {}
            return (f"{_codes(cols)}: {meaning or 'the next values of the series'}; the i-th "
                    f"column is the reading i steps after the last history column "
                    f"({_series_text(s)}).")
        if task_type == "ranking":
            return (f"`{first}`: {meaning or 'the class of the row'}. Classes: {_codes(labels, 30)}. "
                    f"Each training row holds its one true class.")
        if ls == "binary":
            ask = ("the probability that it is 1" if kind == "probability" else "0 or 1")
            return f"`{first}` (0 or 1): {meaning or 'the binary label'}. Predict {ask}."
        if ls == "multiclass":
            base = f"`{first}`: {meaning or 'the class of the row'}. Classes: {_codes(labels, 30)}."
            if kind == "probability":
                base += (" The submission holds one probability column per class (named "
                         "after the class), each row summing to 1.")
            return base
        if ls == "ordinal":
            return (f"`{first}`: {meaning or 'an ordered grade'}. Grades are the integers "
                    f"0 to {len(labels) - 1} (higher is more); predict a grade.")
        if ls == "multilabel":
            ask = "a probability for each" if kind == "probability" else "0 or 1 for each"
            what = (tspec.get("meaning", "1 if the label applies, else 0")
                    .replace("{name}", "the column's label"))
            return f"{len(cols)} label columns {_codes(cols)}: each is {what}. Predict {ask}."
        if ls == "multitarget":
            means = tspec.get("meanings") or []
            items = [f"`{c}`: {m}" for c, m in zip(cols, means)] or [f"`{c}`" for c in cols]
            return "Several numbers per row: " + "; ".join(items) + "."
        return f"`{first}` (a number): {meaning or 'the value to predict'}."


def _dna_like(d: Mapping[str, Any]) -> Any:
    """The DNA fields domains.target_spec reads, from a DNA dict."""
    from types import SimpleNamespace
    fields = ("domain", "modality", "task_type", "label_structure", "n_classes", "n_targets",
              "input_shape")
    return SimpleNamespace(**{f: d.get(f) for f in fields})


REQUIRED_SECTIONS = ("overview", "data", "evaluation", "submission")


class LLMTechnicalWriter(TechnicalWriter):
    """Asks the model for description.md; rejects a text that leaks the rule, lacks a section
    or misses a target column, feeding the reason back."""

    def __init__(self, client: llm.ChatClient, max_attempts: int = 3):
        self.client, self.max_attempts = client, max_attempts

    def write(self, dna: Any, generated: Any, spec: Mapping[str, Any]) -> str:
        from sandmle.envgen.roles import dna_dict, rule_secrets
        safe = {k: v for k, v in dna_dict(dna).items() if k not in ("rule", "hidden_rule")}
        draft = super().write(dna, generated, spec)
        messages = [
            {"role": "system", "content": "You write Kaggle-style competition pages in Markdown."},
            {"role": "user", "content": "Rewrite this competition page in the voice of a real "
             "competition in its domain. Keep every file, column, the metric and the submission "
             "format exactly; never describe how the labels were produced.\nDNA (no rule):\n"
             + json.dumps(safe, sort_keys=True) + "\n\nDraft:\n" + draft},
        ]
        secrets = rule_secrets(dna)

        def verify(text: str) -> str:
            leak = check_description(text, secrets)
            if leak:
                raise ValueError(f"the text reveals the hidden rule ({leak[0].detail})")
            low = text.lower()
            missing = [s for s in REQUIRED_SECTIONS if s not in low]
            if missing:
                raise ValueError(f"missing sections: {missing}")
            cue = f"`{spec['metric']}`"
            direction = "lower is better" if spec.get("is_lower_better") else "higher is better"
            if cue not in text or direction not in low:
                raise ValueError(f"the evaluation section must name the metric as {cue} and "
                                 f"say '{direction}'")
            absent = [c for c in spec["target_columns"] if c not in text]
            if absent:
                raise ValueError(f"target column(s) not named: {absent[:5]}")
            return text

        text, _ = llm.ask_verified(self.client, messages, llm.extract_text, verify,
                                   self.max_attempts, what="description")
        return text
