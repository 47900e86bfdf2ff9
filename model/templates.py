"""Instruction prompt templates: how an instruction (and its optional input) becomes the prompt a
model was tuned on. Instruction tuning writes its template into each checkpoint (state.json), and
chat reads it back, so a model is always spoken to in its own format. Torch-free."""

from __future__ import annotations

import json
from pathlib import Path

# Alpaca's prompt (Taori et al. 2023), as chapter 7 of Raschka's "Build a Large Language Model
# (From Scratch)" uses it; {input} receives the input block below, or nothing.
ALPACA_TEMPLATE = ("Below is an instruction that describes a task. Write a response that appropriately completes "
                   "the request.\n\n### Instruction:\n{instruction}{input}\n\n### Response:\n")
ALPACA_INPUT = "\n\n### Input:\n{input}"


def format_prompt(example: dict[str, str], template: str = ALPACA_TEMPLATE, input_template: str = ALPACA_INPUT) -> str:
    block = input_template.replace("{input}", example["input"]) if example.get("input") else ""
    return template.replace("{instruction}", example["instruction"]).replace("{input}", block)


def template_of(checkpoint_dir: Path) -> tuple[str, str]:
    """The prompt template a checkpoint was instruction-tuned with (Alpaca's when it does not say)."""
    state = Path(checkpoint_dir) / "state.json"
    if state.is_file():
        config = json.loads(state.read_text()).get("finetune", {}).get("config", {})
        return config.get("template", ALPACA_TEMPLATE), config.get("input_template", ALPACA_INPUT)
    return ALPACA_TEMPLATE, ALPACA_INPUT


def is_instruction_tuned(checkpoint_dir: Path) -> bool:
    """Whether the checkpoint records an instruction-tuning run (and so a template of its own)."""
    state = Path(checkpoint_dir) / "state.json"
    if not state.is_file():
        return False
    try:
        return json.loads(state.read_text()).get("finetune", {}).get("task") == "instruct"
    except (json.JSONDecodeError, AttributeError):
        return False
