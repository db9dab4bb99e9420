#!/bin/sh
# Rebuilds the shipped default dataset and model from the repository root.
# Dataset: ~30 min on 2 CPU cores (resumable: re-run after an interruption).
set -e
cd "$(dirname "$0")/../.."
python -m refine.cli.main dataset build --spec surrogate/data/default_spec.toml \
    --out surrogate/data/default_dataset.npz
python surrogate/data/fit_default.py
