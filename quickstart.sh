#!/usr/bin/env bash
# The README quickstart, end to end, on the real PneumoniaMNIST (../shared/data/medmnist, or
# $SYNTHAUG_DATA_ROOT, or medmnist's ~/.medmnist with network): fit -> generate -> audit -> evaluate.
# The audit runs before evaluate so that the report carries the audit's summary.
# Every step resumes or skips finished work when run again.
set -euo pipefail
cd "$(dirname "$0")"
DATA_ROOT="${SYNTHAUG_DATA_ROOT:-../shared/data/medmnist}"
synthaug fit recipes/quickstart.yaml --data-root "$DATA_ROOT"
synthaug generate --run runs/quickstart --per-class 200
synthaug audit --run runs/quickstart --data-root "$DATA_ROOT"
synthaug evaluate --run runs/quickstart --data-root "$DATA_ROOT" --out runs/quickstart/report
echo "quickstart done: runs/quickstart/report/report.md (with the audit's summary), runs/quickstart/synthetic/audit.md"
