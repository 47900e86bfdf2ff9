"""The pipeline's configuration: one TOML file, validated by pydantic, every field overridable with
`--set section.key=value`. Errors name the field path and, where the file has it, the line."""

from __future__ import annotations

import re
import tomllib
import warnings
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator

from model.config import EOT
from model.settings import ClassifyConfig, InstructConfig, TrainConfig
from pipeline.dataset_writer import DatasetConfig
from tokenizer_rs import validate_pretokenizer


class ConfigError(ValueError):
    """A configuration that cannot be used; one line per problem, each naming field (and line)."""


class SourceConfig(BaseModel):
    """One corpus source: a URL (http, https, file) or local path, or a Hugging Face dataset."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(None, description="http(s):// or file:// URL, or a local file or directory.")
    hf_dataset: str | None = Field(None, description="A `datasets` name or local dataset path.")
    hf_config: str | None = None
    hf_split: str = "train"
    text_field: str = Field("text", description="Text field of JSON Lines records and HF datasets.")
    sha256: str | None = Field(None, description="Expected sha256 of a downloaded file.")
    doc_split: Literal["file", "blank_line", "line"] = "file"
    aozora: bool = Field(False, description="Strip Aozora Bunko markup.")

    @model_validator(mode="after")
    def _one_location(self) -> "SourceConfig":
        if (self.url is None) == (self.hf_dataset is None):
            raise ValueError("give exactly one of url or hf_dataset")
        return self


class CorpusConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sources: list[SourceConfig] = Field(min_length=1)
    normalizer: Literal["nfc", "nfkc"] | None = None
    dedupe: bool = Field(True, description="Drop exact duplicate documents.")
    min_chars: int = Field(1, ge=1, description="Drop documents shorter than this.")


class TokenizerStageConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    vocab_size: int = Field(8000, gt=0)
    model: Literal["bpe", "char", "word"] = "bpe"
    preset: str | None = Field(None, description="BPE pre-tokenizer (gpt2, cl100k, o200k, ja, ja-digits1, ja-isolated or regex:<pattern>).")
    normalizer: Literal["nfc", "nfkc"] | None = None
    min_frequency: int = Field(0, ge=0)
    special_tokens: list[str] = Field([EOT], description="Special tokens (they get the first ids).")
    max_token_length: int | None = Field(None, gt=0)
    file: Path | None = Field(None, description="Use this tokenizer.json instead of training one.")

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, preset: str | None) -> str | None:
        """A misspelt preset or a bad regex fails when the config loads, not after the corpus stage."""
        if preset is not None:
            validate_pretokenizer(preset)
        return preset


PretrainStageConfig = create_model(
    "PretrainStageConfig",
    __config__=ConfigDict(extra="forbid"),
    nproc=(int, Field(1, ge=1, description="Processes: more than 1 launches torchrun.")),
    **{name: (f.annotation, f) for name, f in TrainConfig.model_fields.items() if name not in ("data", "out")},
)

# Fine-tuning fields the pipeline supplies itself: the base model, tokenizer and run directory come
# from upstream stages, and the data files are fetched like corpus sources.
_SUPPLIED = ("base", "data", "val_data", "test_data", "tokenizer", "out")
_FINETUNE_DATA = dict(
    data=(str, Field(description="Records: http(s):// or file:// URL, or a local path.")),
    data_sha256=(str | None, Field(None, description="Expected sha256 of a downloaded data file.")),
    val_data=(str | None, Field(None, description="Validation records (URL or path; default: a fraction of data).")),
    test_data=(str | None, Field(None, description="Test records (URL or path; default: a fraction of data).")),
)


def _finetune_stage(name: str, task: str, cls: type[BaseModel], prompt_help: str):
    return create_model(
        name,
        __config__=ConfigDict(extra="forbid"),
        task=(Literal[task], Field(description="instruct or classify.")),
        prompt=(str, Field("", description=prompt_help)),
        **_FINETUNE_DATA,
        **{n: (f.annotation, f) for n, f in cls.model_fields.items() if n not in _SUPPLIED},
    )


InstructStageConfig = _finetune_stage("InstructStageConfig", "instruct", InstructConfig,
                                      "An instruction the fine-tuned model answers in the report (and at the end of the run).")
ClassifyStageConfig = _finetune_stage("ClassifyStageConfig", "classify", ClassifyConfig,
                                      "A text the classifier labels in the report.")
FinetuneStageConfig = Annotated[InstructStageConfig | ClassifyStageConfig, Field(discriminator="task")]  # type: ignore[valid-type]


class EvalStageConfig(BaseModel):
    """[eval]: every model the run makes (pretrained, fine-tuned) scored on lm-eval task files and on
    the bits per byte of the dataset's validation documents; compared with the previous run."""

    model_config = ConfigDict(extra="forbid")

    tasks: list[str] = Field(default_factory=list, description="lm-eval task YAMLs (output_type multiple_choice).")
    bpb: bool = Field(True, description="Bits per byte (and per character) of the validation documents.")
    bpb_max_bytes: int = Field(2_000_000, gt=0, description="Score at most this much validation text (whole documents).")
    limit: int | None = Field(None, gt=0, description="Score only the first N documents of each task.")
    num_fewshot: int | None = Field(None, ge=0, description="Examples before each document (default: each task file's).")
    batch_size: int = Field(16, gt=0, description="Continuations per forward pass.")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N (bf16 autocast on CUDA).")
    history: int = Field(30, gt=0, description="Runs of this config name kept for comparison.")


def finetune_config(stage: BaseModel, **supplied: Any) -> InstructConfig | ClassifyConfig:
    """The fine-tuning config of a pipeline stage, with the paths the pipeline supplies."""
    cls = InstructConfig if stage.task == "instruct" else ClassifyConfig
    own = stage.model_dump(exclude={"task", "prompt", *_FINETUNE_DATA})
    return cls(**own, **supplied)


class PipelineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = "run"
    artifacts: Path = Path("artifacts")
    corpus: CorpusConfig
    tokenizer: TokenizerStageConfig = TokenizerStageConfig()
    dataset: DatasetConfig = DatasetConfig()
    pretrain: PretrainStageConfig = PretrainStageConfig()  # type: ignore[valid-type]
    finetune: FinetuneStageConfig | None = None
    eval: EvalStageConfig | None = None

    @model_validator(mode="before")
    @classmethod
    def _renamed_sections(cls, data: Any) -> Any:
        if isinstance(data, dict) and "shards" in data:
            warnings.warn("[shards] is now called [dataset]; the old name still works", FutureWarning, stacklevel=2)
            data = dict(data)
            old = data.pop("shards")
            data["dataset"] = {**data["dataset"], **old} if isinstance(data.get("dataset"), dict) and isinstance(old, dict) else old
        return data

    @field_validator("pretrain")
    @classmethod
    def _pretrain_settings(cls, value):
        """TrainConfig's own checks (preset, model fields) on the stage's settings, before any stage runs."""
        try:
            TrainConfig(data=Path("."), out=Path("."), **value.model_dump(exclude={"nproc"}))
        except ValidationError as e:
            raise ValueError("; ".join(err["msg"].removeprefix("Value error, ") for err in e.errors())) from None
        return value

    @field_validator("finetune")
    @classmethod
    def _finetune_settings(cls, value):
        if value is not None:  # cross-field checks of the fine-tuning config, before any stage runs
            try:
                finetune_config(value, base=Path("."), data=Path("."), out=Path("."))
            except ValidationError as e:
                raise ValueError("; ".join(err["msg"].removeprefix("Value error, ") for err in e.errors())) from None
        return value


def _toml_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw  # a bare string


def apply_overrides(data: dict[str, Any], sets: list[str]) -> dict[str, Any]:
    """`section.key=value` (value in TOML syntax, or a bare string); list items by index (a.0.b).
    A path that does not fit the data (an index past a list's end, a key below a plain value) is
    a ConfigError naming the --set option."""
    for item in sets:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected section.key=value")
        path, raw = item.split("=", 1)
        keys = [k.strip() for k in path.strip().split(".")]
        if not all(keys):
            raise ConfigError(f"--set {item!r}: empty name in {path.strip()!r}")
        node: Any = data
        for depth, key in enumerate(keys):
            where = ".".join(keys[:depth]) or "the config"
            last = depth == len(keys) - 1
            if isinstance(node, list):
                if not key.isdigit() or int(key) >= len(node):
                    raise ConfigError(f"--set {item!r}: {where} is a list of {len(node)} item(s); "
                                      f"{key!r} is not an index of it (0 to {len(node) - 1})")
                key = int(key)
            elif not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {where} is a single value ({node!r}), not a section with keys")
            if last:
                node[key] = _toml_value(raw.strip())
            else:
                if isinstance(node, dict) and key not in node:
                    node[key] = {}
                node = node[key]
    return data


def key_lines(text: str) -> dict[tuple[str, ...], int]:
    """Line numbers of TOML tables and keys, by dotted path (arrays of tables get indices)."""
    lines: dict[tuple[str, ...], int] = {}
    table: tuple[str, ...] = ()
    counters: dict[tuple[str, ...], int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if m := re.match(r"^\[\[\s*([^\]]+?)\s*\]\]", stripped):
            base = tuple(m.group(1).split("."))
            counters[base] = counters.get(base, -1) + 1
            table = base + (str(counters[base]),)
            lines.setdefault(table, number)
        elif m := re.match(r"^\[\s*([^\]]+?)\s*\]", stripped):
            table = tuple(m.group(1).split("."))
            lines.setdefault(table, number)
        elif m := re.match(r"^([A-Za-z0-9_\-\.\"]+)\s*=", stripped):
            lines[table + tuple(m.group(1).strip('"').split("."))] = number
    return lines


def load_config(path: str | Path, sets: list[str] = ()) -> PipelineConfig:
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte offset {e.start}); save the config as UTF-8") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from None
    data = apply_overrides(data, list(sets))
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as e:
        where = key_lines(text)
        problems = []
        for err in e.errors():
            loc = tuple(str(x) for x in err["loc"])
            line = next((where[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in where), None)
            place = f" ({path.name} line {line})" if line else f" ({path.name})"
            problems.append(f"{'.'.join(loc) or '(top level)'}: {err['msg'].removeprefix('Value error, ')}{place}")
        raise ConfigError("\n".join(problems)) from None
