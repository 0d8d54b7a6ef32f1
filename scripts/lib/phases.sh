# Phases of a test script: each runs even when an earlier one failed and is timed; phases_end prints the times
# and what failed, and returns 1 when any phase failed.
#
#   source "$(dirname "$0")/lib/phases.sh"
#   phases_begin test-deploy
#   phase k8s deploy/k8s/render.sh
#   phase scaleout tests/scaleout/run.sh
#   phases_end
# shellcheck shell=bash

phases_begin() { # phases_begin SUITE
  _phases_suite=$1
  _phases_start=$SECONDS
  _phases_passed=0
  _phases_failed=()
  _phases_times=()
}

phase() { # phase NAME COMMAND...
  local name=$1 start=$SECONDS
  shift
  echo "=== $_phases_suite: $name: $*"
  if "$@"; then
    _phases_passed=$((_phases_passed + 1))
    echo "=== $_phases_suite: $name: passed in $((SECONDS - start)) s"
  else
    _phases_failed+=("$name")
    echo "=== $_phases_suite: $name: FAILED after $((SECONDS - start)) s" >&2
  fi
  _phases_times+=("$(printf '%-14s %5d s' "$name" $((SECONDS - start)))")
}

phases_end() {
  echo "=== $_phases_suite: phase times"
  printf '  %s\n' "${_phases_times[@]}"
  printf '  %-14s %5d s\n' total $((SECONDS - _phases_start))
  if ((${#_phases_failed[@]})); then echo "$_phases_suite: failed: ${_phases_failed[*]}" >&2; fi
  echo "$_phases_suite: $_phases_passed passed, ${#_phases_failed[@]} failed"
  ((${#_phases_failed[@]} == 0))
}
