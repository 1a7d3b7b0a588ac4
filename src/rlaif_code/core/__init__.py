"""Infrastructure every stage shares: typed configs, artifacts on disk, registries, progress,
model loading and the training plumbing (checkpoint identity, precision, logging folders).

Nothing in `core` imports a stage: the layering (`pyproject.toml`, import-linter) forbids it.
"""
