"""The TechnicalWriter role: description.md in the style of a competition page.

The procedural writer builds the page from the DNA's domain, the generator's notes (media
layout, column roles) and the tables; it never reads the hidden rule. The LLM-backed writer
asks a model to rewrite that page in its domain's voice and rejects any text that leaks the
rule, drops a section or forgets a target column.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

import pandas as pd

from sandmle.envgen import llm
from sandmle.envgen.verify import check_description

_METRIC_TEXT = {
    "accuracy": "the fraction of test rows whose prediction is exactly right",
    "sequence_accuracy": "the fraction of tokens normalised exactly right",
    "balanced_accuracy": "the mean of per-class recall",
    "f1_macro": "the unweighted mean of per-class F1 scores",
    "f1_micro": "F1 computed over all decisions pooled",
    "f1_binary": "the F1 score of the positive class",
    "roc_auc": "the area under the ROC curve (mean over target columns if there are several)",
    "mean_columnwise_roc_auc": "the mean over target columns of the ROC AUC",
    "log_loss": "the logarithmic loss of the predicted class probabilities",
    "rmse": "the root mean squared error (over every predicted value)",
    "rmsle": "the root mean squared logarithmic error",
    "mean_columnwise_rmsle": "the mean over target columns of the RMSLE",
    "mae": "the mean absolute error",
    "r2": "the coefficient of determination R²",
    "quadratic_weighted_kappa": "Cohen's kappa with quadratic weights between predicted and true grades",
    "map_at_k": "the mean average precision at k of the ranked predictions (k = {k})",
}

_KIND_TEXT = {
    "probability": "a probability in [0, 1] for each target column",
    "label": "one label per row",
    "value": "a number per target column",
    "ranking": "up to k space-separated labels, most likely first",
    "text": "the predicted text",
}


def _column_kind(series: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(series):
        return "boolean"
    missing = " (has missing values)" if series.isna().any() else ""
    if pd.api.types.is_integer_dtype(series):
        return "integer" + missing
    if pd.api.types.is_float_dtype(series):
        return "number" + missing
    nunique = series.nunique()
    if nunique <= 30:
        return f"category ({nunique} values)" + missing
    return "text" + missing


def _note_columns(notes: Mapping[str, Any]) -> dict[str, str]:
    """Column -> role, from the generator's notes (including multimodal parts)."""
    out: dict[str, str] = {}
    for key, value in (notes.get("columns") or {}).items():
        out[str(key)] = str(value)
    for part, info in (notes.get("parts") or {}).items():
        for col, role in (info.get("columns") or {}).items() if isinstance(info, Mapping) else ():
            out[str(col)] = f"{role} ({part} part)"
    return out


class TechnicalWriter:
    """Writes description.md from the DNA's domain and the data, never from the rule."""

    def write(self, dna: Any, generated: Any, spec: Mapping[str, Any]) -> str:
        d = dna if isinstance(dna, Mapping) else dna.to_dict()
        domain = (d.get("domain") or "").strip() or "a synthetic benchmark domain"
        modality, task_type = d.get("modality", "tabular"), d.get("task_type", "prediction")
        title = f"{domain[:1].upper()}{domain[1:]}: {modality} {task_type}"
        idc, targets = spec["id_column"], list(spec["target_columns"])
        notes = getattr(generated, "notes", {}) or {}
        train, test = generated.train, generated.test
        target_text = ", ".join(f"`{t}`" for t in targets[:8]) + (
            f" and {len(targets) - 8} more" if len(targets) > 8 else "")
        lines = [f"# {title}", "", "## Overview", "",
                 f"Teams working in {domain} need a model for a {modality} {task_type} problem. "
                 f"You get {len(train)} labelled rows in `train.csv`; predict {target_text} "
                 f"for the {len(test)} rows of `test.csv`. The data is small on purpose: a "
                 f"good solution generalises from few examples.",
                 "", "## Data files", "",
                 f"- `train.csv`: {len(train)} rows with the inputs and the target(s).",
                 f"- `test.csv`: {len(test)} rows with the inputs only.",
                 "- `sample_submission.csv`: a valid submission in the expected format."]
        for pattern, what in sorted((notes.get("media") or {}).items()):
            lines.append(f"- `{pattern}`: {what}.")
        if not notes.get("media"):
            folders: dict[str, int] = {}
            for rel in generated.media or {}:
                folders[rel.split("/")[0]] = folders.get(rel.split("/")[0], 0) + 1
            lines += [f"- `{top}/`: {n} file(s)." for top, n in sorted(folders.items())]
        roles_of = _note_columns(notes)
        lines += ["", "## Columns", "", "| column | description | in |", "|---|---|---|"]
        for col in train.columns:
            where = "train, test" if col in test.columns else "train"
            if col == idc:
                kind = roles_of.get(col, "row identifier")
            elif col in targets:
                kind = "target"
            else:
                kind = roles_of.get(col) or _column_kind(train[col])
            lines.append(f"| `{col}` | {kind} | {where} |")
        metric = spec["metric"]
        what = _METRIC_TEXT.get(metric, f"the `{metric}` metric").format(
            k=(spec.get("metric_kwargs") or {}).get("k", "?"))
        lower = spec.get("is_lower_better")
        direction = "lower is better" if lower else "higher is better"
        sample = generated.sample_submission
        lines += ["", "## Evaluation", "",
                  f"Submissions are scored with `{metric}`: {what}; {direction}.",
                  "", "## Submission format", "",
                  f"Write `submission.csv` with the columns "
                  f"{', '.join(f'`{c}`' for c in sample.columns[:10])}"
                  f"{' ...' if len(sample.columns) > 10 else ''}: one row per `{idc}` of the "
                  f"test set with {_KIND_TEXT.get(spec.get('submission_kind'), 'a prediction')}. "
                  f"For example:", "", "```",
                  sample.head(3).to_csv(index=False, lineterminator="\n").strip(), "```", ""]
        return "\n".join(lines)


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
            absent = [c for c in spec["target_columns"] if c not in text]
            if absent:
                raise ValueError(f"target column(s) not named: {absent[:5]}")
            return text

        text, _ = llm.ask_verified(self.client, messages, llm.extract_text, verify,
                                   self.max_attempts, what="description")
        return text
