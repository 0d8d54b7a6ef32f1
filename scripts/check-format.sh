#!/usr/bin/env bash
# Checks that the sources are formatted as their ecosystems' formatters leave them (scripts/test.sh runs it):
# C++ with clang-format (.clang-format), Go with gofmt, Python with black (line length 120), TypeScript with
# prettier (clients/node's devDependency, .prettierrc.json). Prints the files that differ and exits 1.
#
#   scripts/check-format.sh          check
#   scripts/check-format.sh --fix    rewrite the files in place
set -uo pipefail
cd "$(dirname "$0")/.."
fix=0
[ "${1:-}" = "--fix" ] && fix=1
failed=0

# The sources: git's list in a checkout; in a copy without .git (CI's, .ci/run), the files outside build trees,
# dependencies and generated code.
sources() { # sources GLOB...
  if git rev-parse --is-inside-work-tree > /dev/null 2>&1; then
    git ls-files "$@"
  else
    local names=() g
    for g in "$@"; do names+=(-o -path "./$g"); done
    find . \( -path './build*' -o -name node_modules -o -name .git \) -prune -o \( -false "${names[@]}" \) -type f -print \
      | sed 's|^\./||' | sort
  fi
}

mapfile -t cxx < <(sources '*.cc' '*.h' '*.inc' | grep -v -e '/gen/' -e '\.pb\.')
if ((fix)); then
  clang-format -i "${cxx[@]}"
else
  log=$(mktemp)
  if ! clang-format --dry-run -Werror "${cxx[@]}" 2> "$log"; then
    grep -E '^[^ ].*:[0-9]+:[0-9]+: (warning|error):' "$log" | cut -d: -f1 | sort -u \
      | sed 's/^/format: clang-format: /'
    failed=1
  fi
  rm -f "$log"
fi

mapfile -t go < <(sources 'clients/go/*.go')
if ((fix)); then
  gofmt -w "${go[@]}"
else
  bad=$(gofmt -l "${go[@]}")
  [ -n "$bad" ] && { sed 's/^/format: gofmt: /' <<< "$bad"; failed=1; }
fi

mapfile -t py < <(sources '*.py' | grep -v -e '_pb2\.py$' -e '_pb2_grpc\.py$' -e '_pb2\.pyi$')
if ((fix)); then
  black -q -l 120 "${py[@]}"
elif ! black --check -q -l 120 "${py[@]}"; then
  black --check -l 120 "${py[@]}" 2>&1 | grep '^would reformat' | sed 's/^/format: black: /'
  failed=1
fi

if [ -x clients/node/node_modules/.bin/prettier ] || (cd clients/node && npm ci --no-audit --no-fund --loglevel=error > /dev/null); then
  (cd clients/node && if ((fix)); then npx prettier --write --log-level warn src test conformance examples scripts; \
    else npx prettier --check --log-level warn src test conformance examples scripts; fi) || failed=1
else
  echo "format: prettier: npm ci failed in clients/node" >&2
  failed=1
fi

((failed)) && echo "format: run scripts/check-format.sh --fix" >&2
exit $failed
