#!/usr/bin/env bash
# Builds and runs the fuzz targets (issue 13.12) on the stable toolchain, doing what
# `cargo fuzz` does without installing it: SanitizerCoverage flags for libFuzzer in
# RUSTFLAGS and an explicit --target (so build scripts and proc macros stay plain).
#
#   fuzz/run.sh build                 build every target
#   fuzz/run.sh smoke [SECONDS]       each target on its seed corpus for SECONDS (CI: 20)
#   fuzz/run.sh run TARGET [ARGS...]  one target with libFuzzer ARGS (e.g. -runs=1000000)
#   fuzz/run.sh list                  the targets
#
# The corpus of a target is fuzz/corpus/TARGET (not in git), seeded from
# fuzz/seeds/TARGET and the fixture hosts (tests/host, tests/host-captured); crashes
# land in fuzz/artifacts/TARGET. A crash, a failed assertion or a timeout fails the run.
set -euo pipefail
cd "$(dirname "$0")"

triple=$(rustc -vV | sed -n 's/^host: //p')
export CARGO_TARGET_DIR="$PWD/target"
bin_dir="$CARGO_TARGET_DIR/$triple/debug"

targets() { sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.toml | grep -v '^cchost-fuzz$'; }

build() {
  CARGO_INCREMENTAL=0 RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks" \
    cargo build --locked --target "$triple" --bins
}

# Copies the fixture hosts' files each parser reads into the target's corpus.
seed() {
  local t=$1 dir="corpus/$1"
  mkdir -p "$dir"
  if [ -d "seeds/$t" ]; then cp -r "seeds/$t/." "$dir/"; fi
  local name pattern
  case $t in
    cpuinfo) pattern='*/proc/cpuinfo' ;;
    cmdline) pattern='*/proc/cmdline' ;;
    proc_modules) pattern='*/proc/modules' ;;
    kmsg) pattern='*/dev/kmsg' ;;
    modalias) pattern='*/modules.alias' ;;
    misc_capacity) pattern='*/misc.capacity' ;;
    uevent) pattern='*/uevent' ;;
    grub) pattern='*/etc/default/grub*' ;;
    config_toml) return 0 ;;
    *) return 0 ;;
  esac
  local n=0
  while IFS= read -r -d '' f; do
    name=$(printf '%s' "$f" | cksum | cut -d' ' -f1)
    cp "$f" "$dir/fixture-$name"
    n=$((n + 1))
    [ $n -ge 200 ] && break
  done < <(find ../tests/host ../tests/host-captured ../machineconfigs ../deploy -path "$pattern" -type f -size -1M -print0 2>/dev/null)
}

cmd=${1:-}
case $cmd in
  build) build ;;
  list) targets ;;
  smoke)
    secs=${2:-20}
    build
    failed=()
    for t in $(targets); do
      seed "$t"
      mkdir -p "artifacts/$t"
      echo "==> fuzz $t for ${secs}s"
      if ! "$bin_dir/$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
          -artifact_prefix="artifacts/$t/" -print_final_stats=1 "corpus/$t" 2>"artifacts/$t.log"; then
        tail -40 "artifacts/$t.log"
        failed+=("$t")
      else
        grep -E '^stat::number_of_executed_units|^Done' "artifacts/$t.log" | tr '\n' ' '
        echo
      fi
    done
    if [ ${#failed[@]} -gt 0 ]; then
      echo "fuzz targets failed: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
      exit 1
    fi
    ;;
  run)
    t=$2
    shift 2
    seed "$t"
    mkdir -p "artifacts/$t"
    exec "$bin_dir/$t" -artifact_prefix="artifacts/$t/" -timeout=10 -rss_limit_mb=2048 "$@" "corpus/$t"
    ;;
  *)
    sed -n '2,14p' "$0" >&2
    exit 2
    ;;
esac
