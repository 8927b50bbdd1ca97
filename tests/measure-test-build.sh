#!/bin/bash
# Cold and warm build cost of the tests for one or more revisions, one after the other
# (docs/testing.md, "Build cost of the tests"). For each REV: a worktree with an empty
# target directory, `cargo fetch`, then `cargo test --no-run` (cold) and, after
# `touch src/lib.rs`, again (warm); wall and CPU seconds from /usr/bin/time. Run it on an
# otherwise idle machine and compare within one run.
#
#   bash tests/measure-test-build.sh 8209d4d^ 8209d4d HEAD
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 REV..." >&2; exit 2; }
repo=$(git rev-parse --show-toplevel)
work=$(mktemp -d /tmp/cchost-test-build.XXXXXX)
trap 'for w in "$work"/*/; do git -C "$repo" worktree remove --force "$w" 2>/dev/null || true; done; rm -rf "$work"' EXIT
export CARGO_INCREMENTAL=0
printf '%-12s %11s %9s %9s %9s %9s %8s\n' rev executables "cold wall" "cold CPU" "warm wall" "warm CPU" target
for rev in "$@"; do
  dir="$work/$(git -C "$repo" rev-parse --short "$rev")"
  git -C "$repo" worktree add --detach -q "$dir" "$rev"
  cd "$dir"
  export CARGO_TARGET_DIR="$dir/target"
  cargo fetch -q
  /usr/bin/time -o "$dir/cold.t" -f '%e %U %S' cargo test --no-run >"$dir/cold.log" 2>&1
  touch src/lib.rs
  /usr/bin/time -o "$dir/warm.t" -f '%e %U %S' cargo test --no-run >"$dir/warm.log" 2>&1
  read -r cw cu cs <"$dir/cold.t"
  read -r ww wu ws <"$dir/warm.t"
  printf '%-12s %11s %8.0fs %8.0fs %8.0fs %8.0fs %8s\n' "$rev" \
    "$(grep -c 'Executable' "$dir/cold.log")" "$cw" "$(awk "BEGIN{print $cu + $cs}")" \
    "$ww" "$(awk "BEGIN{print $wu + $ws}")" "$(du -sh "$CARGO_TARGET_DIR" | cut -f1)"
  cd "$repo"
done
