#!/usr/bin/env bash
# The README quickstart, end to end, on the real PneumoniaMNIST in ../shared/data/medmnist.
set -euo pipefail
cd "$(dirname "$0")"
DATA_ROOT="${SYNTHAUG_DATA_ROOT:-../shared/data/medmnist}"
synthaug fit recipes/quickstart.yaml --data-root "$DATA_ROOT"
