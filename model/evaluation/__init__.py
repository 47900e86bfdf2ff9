"""Evaluation: multiple-choice tasks described by lm-evaluation-harness task YAMLs, and bits per
byte of any text, computed the way lm-evaluation-harness computes them (the differential tests in
tests/test_eval_lm_eval.py hold the two tools to the same numbers).

    tasks.py    the task-YAML subset: parsing, data files, Jinja2 rendering, few-shot contexts
    requests.py text -> token requests exactly as lm-eval's causal backend forms them
    scoring.py  batched log-likelihoods: a shared context computed once per item (KV cache)
    rolling.py  rolling windows over a text, bits per byte and per character
    harness.py  one call that evaluates a model on tasks and texts
    results.py  results.json, the per-item JSONL, the terminal table, run-to-run comparison
"""
