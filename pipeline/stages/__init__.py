"""Pipeline stages: plain functions `run(config, upstream, out_dir) -> stats` over typed configs and
paths. They know nothing of Prefect; `pipeline.runner` caches them and `pipeline.flows` wraps them."""
