"""GPT model configuration: GPT-2's presets and tiny ones for the CPU and tests."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

# The names every part of hataori shares: the token that ends (and separates) documents, and the
# file a tokenizer lives in (Hugging Face's format) beside datasets, checkpoints and exports.
EOT = "<|endoftext|>"
TOKENIZER_FILE = "tokenizer.json"

PRESETS: dict[str, dict[str, int]] = {
    "gpt2": dict(n_layer=12, n_head=12, n_embd=768, context_length=1024),  # 124M
    "gpt2-medium": dict(n_layer=24, n_head=16, n_embd=1024, context_length=1024),  # 350M
    "gpt2-large": dict(n_layer=36, n_head=20, n_embd=1280, context_length=1024),  # 774M
    "gpt2-xl": dict(n_layer=48, n_head=25, n_embd=1600, context_length=1024),  # 1558M
    "small": dict(n_layer=4, n_head=4, n_embd=256, context_length=256),  # CPU-sized
    "tiny": dict(n_layer=2, n_head=2, n_embd=64, context_length=64),  # tests
}


class LoRASpec(BaseModel):
    """Low-rank adapters on the named linear layers: W x + (alpha / rank) * B A x, with W frozen."""

    model_config = ConfigDict(extra="forbid")

    rank: int = Field(8, gt=0)
    alpha: float = Field(16.0, gt=0)
    targets: list[str] = Field(default_factory=lambda: ["c_attn", "c_proj", "c_fc"],
                               description="Linear layers (by name) that get adapters: attention and MLP projections.")


class GPTConfig(BaseModel):
    """The architecture. `vocab_size` is the tokenizer's; the embedding is padded to a multiple of
    `vocab_multiple` for speed, and the padded rows are never sampled or scored."""

    model_config = ConfigDict(extra="forbid")

    vocab_size: int = Field(50257, gt=0)
    context_length: int = Field(1024, gt=0, description="Positions in the learned position table.")
    n_layer: int = Field(12, gt=0)
    n_head: int = Field(12, gt=0)
    n_embd: int = Field(768, gt=0)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    bias: bool = True
    vocab_multiple: int = Field(64, gt=0)
    layer_norm_epsilon: float = 1e-5
    labels: list[str] | None = Field(None, description="Classifier: a head over these labels replaces the LM head.")
    lora: LoRASpec | None = Field(None, description="Low-rank adapters (fine-tuning); merged away on export.")

    @model_validator(mode="after")
    def _heads_divide_width(self) -> "GPTConfig":
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if self.labels is not None and (len(self.labels) < 2 or len(set(self.labels)) != len(self.labels)):
            raise ValueError(f"labels must be at least two distinct names, not {self.labels}")
        return self

    @property
    def padded_vocab_size(self) -> int:
        m = self.vocab_multiple
        return (self.vocab_size + m - 1) // m * m

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "GPTConfig":
        if name not in PRESETS:
            raise ValueError(f"unknown model preset {name!r} (choose from {', '.join(PRESETS)})")
        return cls(**{**PRESETS[name], **overrides})
