"""Multiple-choice tasks written as lm-evaluation-harness task YAMLs (the subset a local task needs),
so that one task file runs unchanged in both tools and gives the same numbers.

The subset: `task`, `dataset_path: json` with `dataset_kwargs.data_files`, the split keys
(`training_split`, `validation_split`, `test_split`, `fewshot_split`), `output_type:
multiple_choice`, `doc_to_text` / `doc_to_choice` / `doc_to_target` (a field name or a Jinja2
template, rendered as lm-eval renders them), `target_delimiter`, `fewshot_delimiter`,
`num_fewshot`, `description`, `fewshot_config.sampler` (default or first_n), `metric_list` naming
acc / acc_norm, and the bookkeeping keys lm-eval ignores for scoring (`metadata`, `tag`,
`task_alias`). Anything else is refused naming the key, rather than silently scored differently.

Contexts are built as lm-eval builds them: description, then `num_fewshot` examples (each
text + target_delimiter + answer + fewshot_delimiter) drawn by `random.Random(1234)` in document
order, then the document's text; each choice is scored as target_delimiter + choice.
"""

from __future__ import annotations

import ast
import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from jinja2 import BaseLoader, Environment, StrictUndefined, TemplateError

from model.files import read_utf8

FEWSHOT_SEED = 1234  # lm-eval's default --fewshot_random_seed
MAX_TASK_BYTES = 1 << 20
MAX_DATA_BYTES = 1 << 30

SUPPORTED_KEYS = {
    "task", "dataset_path", "dataset_name", "dataset_kwargs", "training_split", "validation_split", "test_split",
    "fewshot_split", "output_type", "doc_to_text", "doc_to_choice", "doc_to_target", "target_delimiter",
    "fewshot_delimiter", "num_fewshot", "description", "fewshot_config", "metric_list", "metadata", "tag", "task_alias",
}
METRICS = ("acc", "acc_norm")


class TaskError(ValueError):
    """A task file or data record that cannot be scored; the message names the file, record and key."""


def regex_replace(string: str, pattern: str, repl: str, count: int = 0) -> str:
    """The `regex_replace` filter lm-eval adds to Jinja2."""
    return re.sub(pattern, repl, string, count=count)


# The environment lm-eval renders task templates in: undefined names are errors, trailing newlines kept.
JINJA = Environment(loader=BaseLoader(), undefined=StrictUndefined, keep_trailing_newline=True)
JINJA.filters["regex_replace"] = regex_replace


@dataclass
class Record:
    """One data record with where it came from, for error messages."""

    doc: dict[str, Any]
    file: Path
    number: int  # 1-based within its file

    @property
    def where(self) -> str:
        return f"{self.file} record {self.number}"


@dataclass
class Item:
    """One document ready to score: its context, the choices and the index of the right one."""

    doc_id: int  # 0-based position in the evaluation split (lm-eval's doc_id)
    context: str
    choices: list[str]
    gold: int

    def continuations(self, target_delimiter: str) -> list[str]:
        return [f"{target_delimiter}{c}" for c in self.choices]


@dataclass
class Task:
    """A parsed task file: its settings and the records of every split it names."""

    path: Path
    name: str
    splits: dict[str, list[Record]]
    eval_split: str
    fewshot_source: str | None  # split few-shot examples come from
    exclude_eval_doc: bool  # lm-eval drops the document itself from its examples when fewshot_split == test_split
    doc_to_text: Any
    doc_to_choice: Any
    doc_to_target: Any
    target_delimiter: str = " "
    fewshot_delimiter: str = "\n\n"
    description: str = ""
    num_fewshot: int | None = None
    sampler: str = "default"
    templates: dict[str, Any] = field(default_factory=dict)
    columns: set[str] = field(default_factory=set)

    # ------------------------------------------------------------------ rendering, as lm-eval does

    def _template(self, key: str, source: str):
        if source not in self.templates:
            try:
                self.templates[source] = JINJA.from_string(source)
            except TemplateError as e:
                raise TaskError(f"{self.path}: {key}: not a valid Jinja2 template ({e})") from None
        return self.templates[source]

    def _render(self, record: Record, key: str, source: str) -> str:
        try:
            return self._template(key, source).render(**record.doc)
        except TemplateError as e:
            raise TaskError(f"{self.path}: {record.where}: {key}: {e}") from None
        except Exception as e:  # a filter or expression failing on this record's values
            raise TaskError(f"{self.path}: {record.where}: {key}: {type(e).__name__}: {e}") from None

    def text(self, record: Record) -> str:
        spec = self.doc_to_text
        if isinstance(spec, str) and spec in self.columns:
            value = self._field(record, "doc_to_text", spec)
        else:
            value = self._render(record, "doc_to_text", spec)
            if value.isdigit():
                raise TaskError(f"{self.path}: {record.where}: doc_to_text: renders a number ({value}), which lm-eval "
                                "reads as a multiple-input task: outside the supported subset")
        if not isinstance(value, str):
            raise TaskError(f"{self.path}: {record.where}: doc_to_text: field {spec!r} is a {type(value).__name__}, not text")
        return value

    def choices(self, record: Record) -> list[str]:
        spec = self.doc_to_choice
        if isinstance(spec, str):
            if spec in self.columns:
                value = self._field(record, "doc_to_choice", spec)
            else:
                rendered = self._render(record, "doc_to_choice", spec)
                try:
                    value = ast.literal_eval(rendered)
                except (ValueError, SyntaxError):
                    raise TaskError(f"{self.path}: {record.where}: doc_to_choice: renders {rendered[:80]!r}, "
                                    "not a Python list literal") from None
        elif isinstance(spec, dict):
            value = list(spec.values())
        else:
            value = spec
        if not isinstance(value, list) or not value or not all(isinstance(c, str) for c in value):
            raise TaskError(f"{self.path}: {record.where}: doc_to_choice: expected a non-empty list of strings, got {value!r:.80}")
        return value

    def target(self, record: Record, choices: list[str]) -> int:
        """The index of the right choice."""
        spec = self.doc_to_target
        if isinstance(spec, int) and not isinstance(spec, bool):
            value: Any = spec
        elif isinstance(spec, str) and spec in self.columns:
            value = self._field(record, "doc_to_target", spec)
        else:
            value = self._render(record, "doc_to_target", str(spec))
            if value.isdigit():
                value = int(value)
            elif len(value) >= 2 and value[0] == "[" and value[-1] == "]":
                try:
                    value = ast.literal_eval(value)
                except (ValueError, SyntaxError):
                    pass
        if isinstance(value, list):
            raise TaskError(f"{self.path}: {record.where}: doc_to_target: a list of targets (multiple answers) is "
                            "outside the supported subset")
        if isinstance(value, str):
            if value not in choices:
                hint = " (and not a field of the records: a typo?)" if value == spec and "{" not in spec else ""
                raise TaskError(f"{self.path}: {record.where}: doc_to_target: {value!r:.60} is not one of the "
                                f"{len(choices)} choices{hint}")
            return choices.index(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise TaskError(f"{self.path}: {record.where}: doc_to_target: {value!r:.60} is neither a choice index nor a choice")
        if not 0 <= value < len(choices):
            raise TaskError(f"{self.path}: {record.where}: doc_to_target: label {value} is out of range "
                            f"(the record has {len(choices)} choices, 0-{len(choices) - 1})")
        return value

    def describe(self, record: Record) -> str:
        if not self.description:
            return ""
        if self.description in record.doc:
            return str(record.doc[self.description])
        return self._render(record, "description", self.description)

    def _field(self, record: Record, key: str, name: str) -> Any:
        if name not in record.doc:
            raise TaskError(f"{self.path}: {record.where}: {key}: the record has no field {name!r}")
        return record.doc[name]

    # ------------------------------------------------------------------ documents and contexts

    def effective_fewshot(self, requested: int | None) -> tuple[int, str | None]:
        """lm-eval's rule: --num_fewshot overrides the file, except where the file says 0."""
        if requested is None:
            return self.num_fewshot or 0, None
        if self.num_fewshot == 0 and requested != 0:
            return 0, f"{self.name}: num_fewshot is 0 in {self.path.name}; --num-fewshot {requested} is ignored (as lm-eval does)"
        return requested, None

    def items(self, limit: int | None = None, num_fewshot: int = 0) -> list[Item]:
        """The evaluation documents (the first `limit`), rendered, with `num_fewshot` examples each."""
        records = self.splits[self.eval_split][:limit] if limit is not None else self.splits[self.eval_split]
        pool: list[Record] = []
        if num_fewshot > 0:
            if self.fewshot_source is None:
                raise TaskError(f"{self.path}: num_fewshot {num_fewshot} but the task names no split to draw examples from")
            pool = self.splits[self.fewshot_source]
            if len(pool) < num_fewshot + (1 if self.exclude_eval_doc else 0):
                raise TaskError(f"{self.path}: num_fewshot {num_fewshot}: the {self.fewshot_source} split has only "
                                f"{len(pool)} records")
        rnd = random.Random(FEWSHOT_SEED)
        out = []
        for doc_id, record in enumerate(records):
            examples = self._sample(rnd, pool, num_fewshot, record if self.exclude_eval_doc else None)
            choices = self.choices(record)
            gold = self.target(record, choices)
            parts = [self.describe(record)]
            for ex in examples:
                ex_choices = self.choices(ex)
                answer = ex_choices[self.target(ex, ex_choices)]
                parts.append(self.text(ex) + self.target_delimiter + answer + self.fewshot_delimiter)
            parts.append(self.text(record))
            if any(not self.target_delimiter + c for c in choices):
                raise TaskError(f"{self.path}: {record.where}: doc_to_choice: an empty choice with an empty "
                                "target_delimiter leaves nothing to score")
            out.append(Item(doc_id, "".join(parts), choices, gold))
        return out

    def _sample(self, rnd: random.Random, pool: list[Record], n: int, eval_record: Record | None) -> list[Record]:
        """lm-eval's ContextSampler (or FirstNSampler): the same draws from the same seed."""
        if n == 0:
            return []
        if self.sampler == "first_n":
            kept = [r for r in pool if eval_record is None or r.doc != eval_record.doc]
            return kept[:n]
        if eval_record is None:
            return [pool[i] for i in _sample_indices(rnd, len(pool), n)]
        drawn = [pool[i] for i in _sample_indices(rnd, len(pool), n + 1)]
        kept = [r for r in drawn if r.doc != eval_record.doc][:n]
        if len(kept) < n:  # duplicates of the document in the pool: draw again without any of them
            rest = [r for r in pool if r.doc != eval_record.doc]
            if len(rest) < n:
                raise TaskError(f"{self.path}: {eval_record.where}: not enough few-shot examples besides this record")
            kept = [rest[i] for i in _sample_indices(rnd, len(rest), n)]
        return kept


def _sample_indices(rnd: random.Random, size: int, n: int) -> list[int]:
    """Which elements `rnd.sample(population, n)` picks (it depends only on the population's size)."""
    return rnd.sample(range(size), n)


# ---------------------------------------------------------------------- parsing the task file


def _load_yaml(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise TaskError(f"{path}: {e.strerror}") from None
    if len(raw) > MAX_TASK_BYTES:
        raise TaskError(f"{path}: {len(raw)} bytes is too large for a task file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise TaskError(f"{path}: not UTF-8 text (byte {e.start})") from None
    try:
        config = yaml.safe_load(text)
    except yaml.constructor.ConstructorError as e:
        line = f" line {e.problem_mark.line + 1}" if e.problem_mark else ""
        raise TaskError(f"{path}{line}: {e.problem} (tags such as !function call Python code: outside the "
                        "supported subset)") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise TaskError(f"{path}{f' line {mark.line + 1}' if mark else ''}: invalid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(config, dict):
        raise TaskError(f"{path}: a task file is a YAML mapping of keys, not a {type(config).__name__}")
    return config


def _check_keys(path: Path, config: dict[str, Any]) -> None:
    for key in config:
        if key not in SUPPORTED_KEYS:
            raise TaskError(f"{path}: {key}: not supported (hataori reads the multiple-choice subset of lm-eval's task "
                            f"format: {', '.join(sorted(SUPPORTED_KEYS))})")
    for key in ("task", "dataset_path", "output_type", "doc_to_text", "doc_to_choice", "doc_to_target"):
        if config.get(key) is None:
            raise TaskError(f"{path}: {key}: missing (a multiple-choice task needs it)")
    if not isinstance(config["task"], str) or not config["task"].strip():
        raise TaskError(f"{path}: task: must be a name (a string)")
    if config["output_type"] != "multiple_choice":
        raise TaskError(f"{path}: output_type: {config['output_type']!r} is not supported (only multiple_choice; "
                        "perplexity of a text: hataori eval --bpb FILE)")
    if config["dataset_path"] != "json":
        raise TaskError(f"{path}: dataset_path: {config['dataset_path']!r} is not supported (only json, with local "
                        "dataset_kwargs.data_files: nothing is downloaded)")
    if config.get("dataset_name") is not None:
        raise TaskError(f"{path}: dataset_name: not supported with dataset_path json")
    for key in ("target_delimiter", "fewshot_delimiter", "description"):
        if key in config and not isinstance(config[key], str):
            raise TaskError(f"{path}: {key}: must be a string, not {type(config[key]).__name__}")
    for key in ("training_split", "validation_split", "test_split", "fewshot_split"):
        if config.get(key) is not None and not isinstance(config[key], str):
            raise TaskError(f"{path}: {key}: must be a split name (a string)")
    shots = config.get("num_fewshot")
    if shots is not None and (isinstance(shots, bool) or not isinstance(shots, int) or shots < 0):
        raise TaskError(f"{path}: num_fewshot: must be a whole number >= 0, not {shots!r}")
    for key in ("doc_to_text", "doc_to_target"):
        if not isinstance(config[key], (str, int)) or isinstance(config[key], bool):
            raise TaskError(f"{path}: {key}: must be a field name or a Jinja2 template (a string)")
    if isinstance(config["doc_to_text"], int):
        raise TaskError(f"{path}: doc_to_text: a number means a multiple-input task: outside the supported subset")
    if not isinstance(config["doc_to_choice"], (str, list, dict)):
        raise TaskError(f"{path}: doc_to_choice: must be a field name, a template or a list of choices")
    _check_metrics(path, config.get("metric_list"))
    fewshot = config.get("fewshot_config")
    if fewshot is not None:
        if not isinstance(fewshot, dict):
            raise TaskError(f"{path}: fewshot_config: must be a mapping")
        for key in fewshot:
            if key != "sampler":
                raise TaskError(f"{path}: fewshot_config.{key}: not supported (only fewshot_config.sampler)")
        if fewshot.get("sampler", "default") not in ("default", "first_n"):
            raise TaskError(f"{path}: fewshot_config.sampler: {fewshot['sampler']!r} is not supported (default or first_n)")


def _check_metrics(path: Path, metrics: Any) -> None:
    if metrics is None:
        return
    if not isinstance(metrics, list):
        raise TaskError(f"{path}: metric_list: must be a list")
    for i, entry in enumerate(metrics):
        if not isinstance(entry, dict) or entry.get("metric") not in METRICS:
            name = entry.get("metric") if isinstance(entry, dict) else entry
            raise TaskError(f"{path}: metric_list[{i}].metric: {name!r} is not supported (acc, acc_norm)")
        for key, value in entry.items():
            if key == "aggregation" and value != "mean":
                raise TaskError(f"{path}: metric_list[{i}].aggregation: {value!r} is not supported (mean)")
            if key == "higher_is_better" and value is not True:
                raise TaskError(f"{path}: metric_list[{i}].higher_is_better: acc and acc_norm are higher-is-better")
            if key not in ("metric", "aggregation", "higher_is_better"):
                raise TaskError(f"{path}: metric_list[{i}].{key}: not supported")


def _data_files(path: Path, config: dict[str, Any]) -> dict[str, list[Path]]:
    kwargs = config.get("dataset_kwargs")
    if not isinstance(kwargs, dict) or "data_files" not in kwargs:
        raise TaskError(f"{path}: dataset_kwargs.data_files: missing (local JSON / JSON Lines files, by split)")
    for key in kwargs:
        if key != "data_files":
            raise TaskError(f"{path}: dataset_kwargs.{key}: not supported (only data_files)")
    files = kwargs["data_files"]
    if isinstance(files, (str, list)):
        files = {"train": files}  # as `datasets` names a bare file list
    if not isinstance(files, dict) or not files:
        raise TaskError(f"{path}: dataset_kwargs.data_files: must map split names to files")
    out = {}
    for split, names in files.items():
        names = [names] if isinstance(names, str) else names
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise TaskError(f"{path}: dataset_kwargs.data_files.{split}: must be a file name or a list of file names")
        out[str(split)] = [_resolve(path, f"dataset_kwargs.data_files.{split}", n) for n in names]
    return out


def _resolve(task_path: Path, key: str, name: str) -> Path:
    """A data file: beside the task file first (so shipped tasks work from anywhere), then relative
    to the working directory (where lm-eval, through `datasets`, looks)."""
    p = Path(name).expanduser()
    candidates = [p] if p.is_absolute() else [task_path.parent / p, Path.cwd() / p]
    for c in candidates:
        if c.is_file():
            return c
    raise TaskError(f"{task_path}: {key}: no such file {name!r} (looked in {', '.join(str(c.parent) for c in candidates)})")


def read_records(path: Path) -> list[Record]:
    """A JSON Lines file (whatever its suffix) or a JSON array of objects."""
    text = read_utf8(path, MAX_DATA_BYTES, "a task's data", TaskError)
    if not text.strip():
        raise TaskError(f"{path}: empty data file (no records)")
    docs: list[Any]
    if text.lstrip().startswith("["):
        try:
            docs = json.loads(text)
        except json.JSONDecodeError as e:
            raise TaskError(f"{path}: line {e.lineno}: not valid JSON ({e.msg})") from None
        numbered = list(enumerate(docs, 1))
    else:
        numbered = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    numbered.append((len(numbered) + 1, json.loads(line)))
                except json.JSONDecodeError as e:
                    raise TaskError(f"{path}: line {n}: not valid JSON ({e.msg})") from None
    records = []
    for number, doc in numbered:
        if not isinstance(doc, dict):
            raise TaskError(f"{path}: record {number}: a {type(doc).__name__}, not an object")
        records.append(Record(doc, path, number))
    if not records:
        raise TaskError(f"{path}: empty data file (no records)")
    return records


def load_task(path: str | Path) -> Task:
    """Parses and checks a task file and reads its data; every problem is a TaskError naming the key."""
    path = Path(path)
    config = _load_yaml(path)
    _check_keys(path, config)
    files = _data_files(path, config)
    test, validation = config.get("test_split"), config.get("validation_split")
    training, fewshot = config.get("training_split"), config.get("fewshot_split")
    if test is None and validation is None:
        raise TaskError(f"{path}: test_split: missing (name test_split or validation_split: the documents to score)")
    for key, split in (("test_split", test), ("validation_split", validation), ("training_split", training),
                       ("fewshot_split", fewshot)):
        if split is not None and split not in files:
            raise TaskError(f"{path}: {key}: no split {split!r} in dataset_kwargs.data_files (has {', '.join(files)})")
    needed = {s for s in (test, validation, training, fewshot) if s is not None}
    splits = {s: [r for f in files[s] for r in read_records(f)] for s in needed}
    eval_split = test if test is not None else validation
    # lm-eval's fewshot_docs(): fewshot_split, else training, else validation, else test documents.
    source = fewshot or training or validation or test
    columns = {k for r in splits[eval_split] for k in r.doc}
    return Task(path=path, name=config["task"], splits=splits, eval_split=eval_split, fewshot_source=source,
                exclude_eval_doc=fewshot == test, doc_to_text=config["doc_to_text"], doc_to_choice=config["doc_to_choice"],
                doc_to_target=config["doc_to_target"], target_delimiter=config.get("target_delimiter", " "),
                fewshot_delimiter=config.get("fewshot_delimiter", "\n\n"), description=config.get("description") or "",
                num_fewshot=config.get("num_fewshot"), sampler=(config.get("fewshot_config") or {}).get("sampler", "default"),
                columns=columns)


def task_files(path: str | Path) -> list[Path]:
    """The task file and every data file it reads (what a cache key must cover)."""
    path = Path(path)
    config = _load_yaml(path)
    _check_keys(path, config)
    return [path, *sorted({f for names in _data_files(path, config).values() for f in names})]
