#!/usr/bin/env bash
# Until the first release, the schema is one initial migration regenerated from the models.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
rm -f src/careflow/migrations/versions/*_initial_schema.py
# Later migrations (0002…) are hand-written and keep pointing at revision 0001.
CAREFLOW_DATABASE_URL="sqlite+aiosqlite:///$tmp/regen.db" alembic revision --autogenerate -m "initial schema" --rev-id 0001 >/dev/null
rm -rf "$tmp"
ruff format -q src/careflow/migrations/versions/ || true
ls src/careflow/migrations/versions/
