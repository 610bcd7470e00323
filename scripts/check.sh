#!/usr/bin/env bash
# npm run check: everything that must hold before a commit, short of the tests.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

step "typecheck"
tsc --noEmit

step "lint and format (biome)"
biome ci .

step "SQL only in src/repositories/ and src/db/"
# Statements are written, typed and tenant-scoped in one place: a repository per table, or
# db/ for what concerns no table (locks, settings, migrations). Anywhere else under src/, an
# import of the sql tag (db/sql.js, or slonik's own) or a sql.<tag> template is refused.
sql_outside=$(
  {
    grep -rlE 'from "[^"]*db/sql(\.js)?"' src
    grep -rlzE 'import[[:space:]]*(type[[:space:]]*)?\{[^}]*\bsql\b[^}]*\}[[:space:]]*from[[:space:]]*"slonik"' src
    grep -rlE '\bsql\.[A-Za-z]+[[:space:]]*[(`]' src
  } | grep -vE '^src/(repositories|db)/' | sort -u || true
)
if [ -n "$sql_outside" ]; then
  echo "SQL outside src/repositories/ and src/db/ (move it into the table's repository):" >&2
  printf '  %s\n' $sql_outside >&2
  exit 1
fi
echo "ok"

step "buf lint"
buf lint

step "buf format"
buf format --diff --exit-code

step "gen/ matches buf generate"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
buf generate --output "$tmp"
if ! diff -r "$tmp/gen" gen; then
  echo "gen/ is stale: run npm run generate and commit the result" >&2
  exit 1
fi

step "buf breaking"
# The wire contract of the working tree must stay compatible with every earlier committed
# version of proto/ (the latest 20 that changed it), so no submission can slip in a breaking
# change, whichever commit it came in.
if git rev-parse -q --verify HEAD >/dev/null 2>&1 && [ "$(git rev-parse --is-shallow-repository)" = false ]; then
  checked=0
  for commit in $(git log --format=%H -n 20 -- proto); do
    buf breaking --against ".git#ref=${commit}"
    checked=$((checked + 1))
  done
  echo "compatible with ${checked} earlier version(s) of proto/"
else
  echo "skipped: no full git history here" >&2
fi

echo
echo "check: ok"
