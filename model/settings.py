"""The settings of every training run: pretraining, instruction tuning and classification.

They live apart from the code that trains so that they import without torch: the pipeline
validates a whole config file (and `hataori status` reads one) in a fraction of a second, before
anything heavy loads.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from model.config import PRESETS, GPTConfig, LoRASpec
from model.templates import ALPACA_INPUT, ALPACA_TEMPLATE


class LoopConfig(BaseModel):
    """Optimization, evaluation, checkpointing and device settings common to every training run."""

    model_config = ConfigDict(extra="forbid")

    out: Path = Field(description="Run directory: checkpoints/, metrics.jsonl, loss.png.")
    batch_size: int = Field(8, gt=0, description="Sequences per micro-batch per process.")
    max_steps: int = Field(1000, gt=0, description="Optimizer steps.")
    lr: float = Field(6e-4, gt=0, description="Peak learning rate (after warmup; cosine decay to min_lr).")
    min_lr: float = Field(6e-5, ge=0, description="Learning rate at the end of the cosine decay.")
    warmup_steps: int = Field(100, ge=0, description="Steps of linear warmup.")
    weight_decay: float = Field(0.1, ge=0, description="AdamW weight decay (matrices only).")
    betas: tuple[float, float] = Field((0.9, 0.95), description="AdamW betas.")
    grad_clip: float = Field(1.0, ge=0, description="Max gradient norm (0 = off).")
    eval_interval: int = Field(100, gt=0, description="Steps between evaluations.")
    checkpoint_interval: int = Field(100, gt=0, description="Steps between checkpoints.")
    keep_checkpoints: int = Field(3, gt=0, description="Newest checkpoints kept (older verified ones are removed).")
    seed: int = Field(1337, description="Seed of weights, batches and dropout.")
    device: str = Field("auto", description="auto (a GPU when there is one), cpu, cuda, cuda:N.")
    dtype: Literal["auto", "float32", "bfloat16"] = Field("auto", description="auto: bf16 autocast on CUDA, fp32 on the CPU.")
    compile: bool = Field(False, description="torch.compile the model.")
    loss: Literal["chunked", "plain"] = Field(
        "chunked", description="Language-model loss: chunked (head + cross-entropy over chunks of tokens, the full "
                               "logits never held: faster and smaller) or plain (logits, then F.cross_entropy).")
    progress: bool = Field(True, description="A progress bar on a terminal (elsewhere: a log line every log_seconds).")
    log_seconds: float = Field(30.0, gt=0, description="Seconds between progress lines when there is no progress bar.")
    restart: bool = Field(False, description="Train again from step 0 when no checkpoint of the run can be used "
                          "(damaged ones are kept as *.damaged, old metrics as metrics.jsonl.before-restart).")


class TrainConfig(LoopConfig):
    data: Path = Field(description="Dataset directory (hataori dataset build).")
    preset: str = Field("tiny", description=f"Model preset: {', '.join(PRESETS)}.")
    model: dict[str, Any] = Field(default_factory=dict, description="GPTConfig overrides (n_layer, dropout, ...).")
    context_length: int | None = Field(None, gt=0, description="Training context (default: the model's).")
    tokens_per_step: int | None = Field(None, gt=0, description="Target tokens per optimizer step (gradient accumulation).")
    eval_batches: int = Field(20, gt=0, description="Validation batches per evaluation.")
    sample_tokens: int = Field(32, ge=0, description="Tokens of sampled continuation logged at each evaluation.")
    prefetch: int = Field(2, ge=0, description="Batches assembled ahead in a background thread.")

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, name: str) -> str:
        if name not in PRESETS:
            close = difflib.get_close_matches(name, PRESETS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"unknown model preset {name!r}{hint}; presets: {', '.join(PRESETS)}")
        return name

    @model_validator(mode="after")
    def _model_fields(self) -> "TrainConfig":
        """The model overrides name real GPTConfig fields with valid values (checked before any run)."""
        try:
            GPTConfig.preset(self.preset, **{"vocab_size": 50257, **self.model})
        except ValidationError as e:
            raise ValueError("; ".join(f"model.{'.'.join(map(str, err['loc']))}: {err['msg'].removeprefix('Value error, ')}"
                                       if err["loc"] else err["msg"].removeprefix("Value error, ") for err in e.errors())) from None
        return self


class FinetuneConfig(LoopConfig):
    base: Path = Field(description="Pretrained model: a run directory, checkpoint directory or transformers GPT-2 directory.")
    data: Path = Field(description="Training records (JSON, JSONL, TSV or CSV).")
    val_data: Path | None = Field(None, description="Validation records (default: val_fraction of data).")
    test_data: Path | None = Field(None, description="Test records (default: test_fraction of data).")
    val_fraction: float = Field(0.1, ge=0, lt=1, description="Share of data held out for validation (without val_data).")
    test_fraction: float = Field(0.1, ge=0, lt=1, description="Share of data held out for testing (without test_data).")
    tokenizer: Path | None = Field(None, description="The data's tokenizer.json; must equal the base checkpoint's.")
    max_length: int | None = Field(None, gt=1, description="Longest sequence in tokens (default: the model's context).")
    epochs: float = Field(2.0, gt=0, description="Passes over the training split (ignored when max_steps is set).")
    max_steps: int | None = Field(None, gt=0, description="Optimizer steps (default: epochs x steps per epoch).")
    lora: LoRASpec | None = Field(None, description="Train low-rank adapters instead of the weights ({} for defaults).")
    batch_size: int = Field(8, gt=0, description="Examples per micro-batch per process.")
    lr: float = Field(1e-4, gt=0, description="Peak learning rate.")
    min_lr: float = Field(1e-5, ge=0, description="Learning rate at the end of the cosine decay.")
    warmup_steps: int = Field(10, ge=0, description="Steps of linear warmup.")
    eval_interval: int = Field(50, gt=0, description="Steps between evaluations.")
    checkpoint_interval: int = Field(50, gt=0, description="Steps between checkpoints.")
    keep_checkpoints: int = Field(2, gt=0, description="Newest checkpoints kept.")


class InstructConfig(FinetuneConfig):
    template: str = Field(ALPACA_TEMPLATE, description="Prompt with {instruction} and {input} (the input block).")
    input_template: str = Field(ALPACA_INPUT, description="The input block, used only when a record has an input.")
    format: Literal["auto", "alpaca", "jcommonsenseqa"] = Field(
        "auto", description="Record layout: alpaca (instruction/input/output), jcommonsenseqa (question/choice0-4/label).")
    mask_prompt: bool = Field(False, description="Score only the response tokens.")
    max_new_tokens: int = Field(128, gt=0, description="Longest generated test response.")
    eval_limit: int | None = Field(None, gt=0, description="Generate and score only the first N test examples.")
    val_fraction: float = Field(0.05, ge=0, lt=1, description="Share of data held out for validation (without val_data).")

    @model_validator(mode="after")
    def _placeholders(self) -> "InstructConfig":
        for name, needed in (("template", ("{instruction}", "{input}")), ("input_template", ("{input}",))):
            missing = [p for p in needed if p not in getattr(self, name)]
            if missing:
                raise ValueError(f"{name} lacks the placeholder(s) {', '.join(missing)}")
        return self


class ClassifyConfig(FinetuneConfig):
    text_field: str = Field("text", description="Field (column) holding the text.")
    text_pair_field: str | None = Field(None, description="Second text of a pair (e.g. sentence2 for NLI).")
    pair_separator: str = Field("\n", description="Joins a text pair.")
    label_field: str = Field("label", description="Field (column) holding the label.")
    columns: list[str] | None = Field(None, description="Column names of a header-less TSV/CSV, e.g. [label, text].")
    labels: list[str] | None = Field(None, description="Label names in head order (default: sorted training labels).")
    balance: bool = Field(False, description="Undersample every class of `data` to the rarest one before splitting.")
    trainable_blocks: int | Literal["all"] = Field(
        1, description="Transformer blocks that train, counted from the last (the final LayerNorm and head always train).")
    test_fraction: float = Field(0.2, ge=0, lt=1, description="Share of data held out for testing (without test_data).")
    epochs: float = Field(5.0, gt=0, description="Passes over the training split (ignored when max_steps is set).")


class SamplingConfig(BaseModel):
    """How `generate` picks each next token; out-of-range values are refused, not clamped."""

    model_config = ConfigDict(extra="forbid")

    max_new_tokens: int = Field(100, gt=0, le=1_000_000, description="Most tokens to generate.")
    temperature: float = Field(0.8, ge=0, le=100, description="0 = greedy (always the likeliest token); higher is more random.")
    top_k: int | None = Field(50, gt=0, description="Sample among the k likeliest tokens.")
    top_p: float | None = Field(None, gt=0, le=1, description="Sample among the fewest tokens whose probabilities reach p (nucleus).")
    seed: int | None = Field(None, description="Same seed, same text.")


class ChatSamplingConfig(SamplingConfig):
    """Chat's sampling: a cooler default, longer replies; a reply must leave room for the prompt."""

    max_new_tokens: int | None = Field(None, gt=0, le=1_000_000, description="Longest reply in tokens, at most the model's "
                                       "window (default 200; a reply uses at most half the window).")
    temperature: float = Field(0.7, ge=0, le=100, description="0 = greedy (always the likeliest token); higher is more random.")
