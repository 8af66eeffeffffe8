#!/usr/bin/env bash
# Until the first release, the schema is one initial migration regenerated from the models.
# Later, hand-written migrations (0002…) are set aside while it is rebuilt and keep pointing at 0001.
set -euo pipefail
cd "$(dirname "$0")/.."
versions=src/careflow/migrations/versions
tmp=$(mktemp -d)
rm -f "$versions"/*_initial_schema.py
mkdir -p "$tmp/later"
find "$versions" -maxdepth 1 -name '*.py' -exec mv {} "$tmp/later/" \;
trap 'mv "$tmp"/later/*.py "$versions"/ 2>/dev/null || true; rm -rf "$tmp"' EXIT
CAREFLOW_DATABASE_URL="sqlite+aiosqlite:///$tmp/regen.db" alembic revision --autogenerate -m "initial schema" --rev-id 0001 >/dev/null
ruff format -q "$versions" || true
