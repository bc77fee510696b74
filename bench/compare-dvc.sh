#!/usr/bin/env bash
# tenon vs DVC on the same scenario: 10,000 small files, one large model file and a
# 3-stage pipeline (summarize the small files -> evaluate with the model -> report).
#
#   bash bench/compare-dvc.sh            # full: 10 x 1,000 files of 1 KiB, 1 GiB model, 5 reps, 10 GiB RSS probe
#   bash bench/compare-dvc.sh --quick    # smoke test: 10 x 100 files, 64 MiB model, 2 reps, 1 GiB RSS probe
#
# Options: --quick, --reps N, --keep (keep the work dir), --workdir DIR, --no-build,
#          --no-results (do not write bench/RESULTS.md).
# Env: TENON_BIN (skip the build and use this binary; TENON_LABEL says what it is),
#      DVC_VERSION (default 3.67.1).
# On a shared machine, `nice -n -10 bash bench/compare-dvc.sh` (as root) keeps other
# builds from skewing the numbers; the load average is printed with the results.
#
# It installs DVC with pip into bench/.venv (once), builds tenon in release mode, lays
# out two identical copies of the scenario (one per tool, so neither sees the other's
# state), times every case with hyperfine (median of N; installed from apt when missing
# and possible) and prints a markdown table, also saved to bench/RESULTS.md.
# Everything it creates lives under the work dir, which is deleted at the end (the
# 10 GiB RSS probe file is sparse and deleted right after use).
#
# What "cold" means here: no tool state (empty tenon store, empty DVC cache/state), but
# the files are in the page cache (the machine has the RAM): it measures hashing and
# bookkeeping, not the disk.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"

# shellcheck source=bench/lib/scenario.sh
. "$HERE/lib/scenario.sh"
WORK="${TMPDIR:-/tmp}/tenon-bench-dvc"
bench_options "$@"
scenario_sizes
if [ "$QUICK" = 1 ]; then RSS_SIZE=1G; : "${REPS:=2}"; else RSS_SIZE=10G; : "${REPS:=5}"; fi

# ---------------------------------------------------------------- tools
HAVE_HYPERFINE=0
need_apt hyperfine hyperfine && HAVE_HYPERFINE=1
[ -x /usr/bin/time ] || need_apt /usr/bin/time time || true
command -v openssl >/dev/null || die "openssl is required"
setup_tools

# ---------------------------------------------------------------- scenario
rm -rf "$WORK"
mkdir -p "$WORK"
cleanup() {
    rm -f "$WORK/rss/big.bin" 2>/dev/null || true
    if [ "$KEEP" = 0 ]; then rm -rf "$WORK"; else echo "kept $WORK" >&2; fi
}
trap cleanup EXIT

T="$WORK/tenon-repo"   # tenon's copy (manifests + data)
D="$WORK/dvc-repo"     # DVC's copy (git + dvc + data)
S="$WORK/tenon-store"  # tenon's state dir
mkdir -p "$T"

log "scenario: $NFILES files of 1 KiB in $DIRS dirs, model of $MODEL_SIZE"
scenario_data "$T"
scenario_tenon_pipeline "$T"

log "copying the scenario for DVC"
mkdir -p "$D"
cp -a "$T/data" "$T/model" "$D/"
(
    cd "$D"
    git init -q
    git config user.email bench@example.invalid
    git config user.name bench
    printf '/data/\n/model/\n' > .gitignore
    scenario_dvc "$D" "$WORK/dvc-site-cache"
    git add -A >/dev/null
    git commit -q -m bench
)
cat > "$WORK/bare.sh" <<EOF
#!/bin/sh
# the three stage commands alone: the tasks' own time
set -eu
cd "$D"
OUT="$WORK/bare-out"; mkdir -p "\$OUT/summary" "\$OUT/evaluation" "\$OUT/report"
$STAGE1
$STAGE2
$STAGE3
EOF

export TENON_STORE="$S" NO_COLOR=1
TRUN="$TENON run $T -q --store $S"
TPLAN="$TENON plan $T --store $S"
DREPRO="cd $D && $DVC repro -q"
DSTATUS="cd $D && $DVC status -q"
SMALL_T="$T/data/shard-03/sample-00042.csv"
SMALL_D="$D/data/shard-03/sample-00042.csv"
ORIG="$WORK/orig-small.csv"
cp "$SMALL_T" "$ORIG"

# sanity: both pipelines work and agree
log "sanity run of both pipelines"
$TRUN >/dev/null 2>"$WORK/tenon-first.err" || { cat "$WORK/tenon-first.err" >&2; die "tenon run failed"; }
(cd "$D" && "$DVC" repro -q >/dev/null) || die "dvc repro failed"
sh "$WORK/bare.sh"
tenon_report=$(find "$S/runs" -path '*report/report.txt' | head -1)
cmp -s "$D/out/report/report.txt" "$WORK/bare-out/report/report.txt" || die "DVC and the bare stages disagree"
[ -n "$tenon_report" ] && cmp -s "$tenon_report" "$D/out/report/report.txt" || die "tenon and DVC disagree"

# ---------------------------------------------------------------- timing
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
declare -A MED   # case -> median seconds
declare -A DESC
ORDER=()
RAW="$WORK/raw"
mkdir -p "$RAW"

# measure NAME "description" PREPARE COMMAND [warmup]
measure() {
    local name="$1" desc="$2" prep="$3" cmd="$4" warm="${5:-1}"
    ORDER+=("$name"); DESC[$name]="$desc"
    log "$name: $desc"
    if [ "$HAVE_HYPERFINE" = 1 ]; then
        args=(--runs "$REPS" --warmup "$warm" --style none --export-json "$RAW/$name.json")
        if [ -n "$prep" ]; then args+=(--prepare "$prep"); fi
        hyperfine "${args[@]}" "$cmd" >/dev/null 2>"$RAW/$name.err" || { cat "$RAW/$name.err" >&2; die "$name failed"; }
        MED[$name]=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["results"][0]["median"])' "$RAW/$name.json")
    else
        local i t0 t1 times=()
        for ((i = 0; i < warm; i++)); do
            [ -z "$prep" ] || bash -c "$prep" >/dev/null 2>&1
            bash -c "$cmd" >/dev/null 2>&1
        done
        for ((i = 0; i < REPS; i++)); do
            [ -z "$prep" ] || bash -c "$prep" >/dev/null 2>&1
            t0=$(date +%s%N); bash -c "$cmd" >/dev/null 2>&1; t1=$(date +%s%N)
            times+=("$(((t1 - t0) / 1000))")
        done
        MED[$name]=$(printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.6f", m/1e6}')
    fi
    "$PY" -c 'import sys; print(f"    median {float(sys.argv[1])*1000:.1f} ms")' "${MED[$name]}" >&2
}
# the racy-clean window of both tools: let fresh mtimes age before the next case
settle() { sleep 3; }

# floors
measure floor_find "find stat walk over the same files (\`find -printf '%s %T@'\`)" "" \
    "find $T/data $T/model -printf '%s %T@\n' > /dev/null"
measure floor_openssl_model "\`openssl dgst -sha256\` of the $MODEL_SIZE model" "" \
    "openssl dgst -sha256 $T/model/model.bin > /dev/null"
measure floor_openssl_small "single-threaded \`openssl dgst -sha256\` over the $NFILES small files" "" \
    "find $T/data -type f -print0 | xargs -0 openssl dgst -sha256 > /dev/null"
measure bare_stages "the 3 stage commands alone (the tasks' own time)" "" "sh $WORK/bare.sh"

# cold: no tool state
measure tenon_cold "tenon run, empty store" "rm -rf $S" "$TRUN" 0
measure dvc_cold "dvc repro, empty cache/state/lock/outs" \
    "cd $D && rm -rf .dvc/cache .dvc/tmp $WORK/dvc-site-cache dvc.lock out" "$DREPRO" 0
measure tenon_cold_plan "tenon plan, empty store (hashes every input)" "rm -rf $S" "$TPLAN" 0
# leave both fully up to date
rm -rf "$S"; $TRUN >/dev/null 2>&1; (cd "$D" && "$DVC" repro -q >/dev/null)
settle
$TRUN >/dev/null 2>&1; (cd "$D" && "$DVC" status -q >/dev/null)

# no-op
measure tenon_noop_plan "tenon plan, nothing changed" "" "$TPLAN"
measure dvc_noop_status "dvc status, nothing changed" "" "$DSTATUS"
measure tenon_noop_run "tenon run, nothing changed (3 cache hits, outputs restored)" "" "$TRUN"
measure dvc_noop_repro "dvc repro, nothing changed" "" "$DREPRO"

# mtime-only touch of the model (content identical: must re-hash it, then reuse)
measure tenon_touch_model_plan "tenon plan after \`touch model.bin\`" "touch $T/model/model.bin" "$TPLAN"
measure tenon_touch_model_run "tenon run after \`touch model.bin\`" "touch $T/model/model.bin" "$TRUN"
measure dvc_touch_model_status "dvc status after \`touch model.bin\`" "touch $D/model/model.bin" "$DSTATUS"
measure dvc_touch_model_repro "dvc repro after \`touch model.bin\`" "touch $D/model/model.bin" "$DREPRO"
settle; $TRUN >/dev/null 2>&1; (cd "$D" && "$DVC" status -q >/dev/null)

# mtime-only touch of all the small files (re-hash 10k files)
measure tenon_touch_small_plan "tenon plan after touching all $NFILES small files" \
    "find $T/data -type f -exec touch {} +" "$TPLAN"
measure dvc_touch_small_status "dvc status after touching all $NFILES small files" \
    "find $D/data -type f -exec touch {} +" "$DSTATUS"
settle; $TRUN >/dev/null 2>&1; (cd "$D" && "$DVC" status -q >/dev/null)

# one small file changed (new content every rep: all three stages really run)
measure tenon_small_change "tenon run after changing one small file" \
    "date +%s%N >> $SMALL_T" "$TRUN"
measure dvc_small_change "dvc repro after changing one small file" \
    "date +%s%N >> $SMALL_D" "$DREPRO"

# revert: back to content both tools have seen (tenon: cache hits; DVC: run-cache)
measure tenon_revert "tenon run after reverting the small file to a content seen before" \
    "date +%s%N >> $SMALL_T && $TRUN >/dev/null 2>&1; cp $ORIG $SMALL_T" "$TRUN"
measure dvc_revert "dvc repro after reverting the small file to a content seen before" \
    "date +%s%N >> $SMALL_D && (cd $D && $DVC repro -q >/dev/null); cp $ORIG $SMALL_D" "$DREPRO"

# ---------------------------------------------------------------- peak RSS hashing a big file
log "peak RSS: tenon hashing a $RSS_SIZE file (sparse: the bytes still go through read() and SHA-256)"
R="$WORK/rss"
mkdir -p "$R/tekton"
truncate -s "$RSS_SIZE" "$R/big.bin"
cat > "$R/tekton/p.yaml" <<'EOF'
apiVersion: tekton.dev/v1
kind: PipelineRun
metadata:
  name: rss-run
  annotations:
    tenon.dev/repo-workspace: source
spec:
  workspaces:
    - {name: source, emptyDir: {}}
  pipelineSpec:
    workspaces:
      - name: source
    tasks:
      - name: hash-it
        workspaces:
          - {name: source, workspace: source}
        taskSpec:
          metadata:
            annotations:
              tenon.dev/inputs: "big.bin"
          workspaces:
            - {name: source, readOnly: true}
          steps:
            - name: run
              image: alpine
              script: "true"
EOF
RSS_KB=""; RSS_SECS=""; RSS_OPENSSL=""
if [ -x /usr/bin/time ]; then
    # first read of a hole makes the kernel allocate and zero page-cache pages (slow, and
    # not tenon's cost): fault the file in once, then time tenon and openssl on equal terms
    cat "$R/big.bin" > /dev/null
    /usr/bin/time -v "$TENON" plan "$R" --store "$WORK/rss-store" >/dev/null 2>"$WORK/rss.time" ||
        { cat "$WORK/rss.time" >&2; die "tenon plan (RSS probe) failed"; }
    RSS_KB=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$WORK/rss.time")
    RSS_SECS=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$WORK/rss.time")
    /usr/bin/time -f '%e' -o "$WORK/rss-openssl.time" openssl dgst -sha256 "$R/big.bin" >/dev/null
    RSS_OPENSSL=$(cat "$WORK/rss-openssl.time")
    # baseline: the same command on a tiny file
    truncate -s 1K "$R/big.bin"
    rm -rf "$WORK/rss-store"
    /usr/bin/time -v "$TENON" plan "$R" --store "$WORK/rss-store" >/dev/null 2>"$WORK/rss0.time" || true
    RSS0_KB=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$WORK/rss0.time")
fi
rm -f "$R/big.bin"

# ---------------------------------------------------------------- report
ms() { "$PY" -c 'import sys; print(f"{float(sys.argv[1])*1000:.1f}")' "${MED[$1]}"; }
ratio() { "$PY" -c 'import sys; a,b=float(sys.argv[1]),float(sys.argv[2]); print(f"{a/b:.2f}")' "${MED[$1]}" "${MED[$2]}"; }
yes_no() { "$PY" -c 'import sys; print("**met**" if eval(sys.argv[1]) else "**missed**")' "$1"; }
m() { echo "${MED[$1]}"; }

OVH_T=$("$PY" -c 'import sys; print(f"{(float(sys.argv[1])-float(sys.argv[2]))*1000:.1f}")' "$(m tenon_small_change)" "$(m bare_stages)")
OVH_D=$("$PY" -c 'import sys; print(f"{(float(sys.argv[1])-float(sys.argv[2]))*1000:.1f}")' "$(m dvc_small_change)" "$(m bare_stages)")
HASH_MODEL=$("$PY" -c 'import sys; print(f"{(float(sys.argv[1])-float(sys.argv[2]))*1000:.1f}")' "$(m tenon_touch_model_plan)" "$(m tenon_noop_plan)")
HASH_SMALL=$("$PY" -c 'import sys; print(f"{(float(sys.argv[1])-float(sys.argv[2]))*1000:.1f}")' "$(m tenon_touch_small_plan)" "$(m tenon_noop_plan)")

OUT_MD="$WORK/RESULTS.md"
{
    echo "# tenon vs DVC: results"
    echo
    echo "Generated by \`bench/compare-dvc.sh$([ "$QUICK" = 1 ] && echo ' --quick')\` on $(date -u +%Y-%m-%dT%H:%MZ)."
    echo "Machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); SHA-NI: $(grep -qw sha_ni /proc/cpuinfo && echo yes || echo no)), $(free -g | awk '/Mem:/ {print $2}') GiB RAM, $(findmnt -no FSTYPE -T "$WORK")."
    echo "$(tenon_label), DVC $("$DVC" --version), $(openssl version | awk '{print $1, $2}')."
    echo "Load average at start: $LOAD_START; at end: $(cut -d' ' -f1-3 /proc/loadavg) (2 CPUs: anything above ~0.5 means something else was running)."
    echo "Scenario: $NFILES files of 1 KiB in $DIRS dirs + one $MODEL_SIZE model; 3 stages (summarize the small files -> evaluate with model + summary -> report)."
    echo "Median of $REPS runs$([ "$HAVE_HYPERFINE" = 1 ] && echo " (hyperfine $(hyperfine --version | awk '{print $2}'), 1 warm-up except cold cases)" || echo " (bash loop)"); files in the page cache; times in ms."
    echo
    echo "| case | tenon | DVC | DVC / tenon |"
    echo "|---|---:|---:|---:|"
    echo "| cold run (empty store / empty cache) | $(ms tenon_cold) | $(ms dvc_cold) | $(ratio dvc_cold tenon_cold) |"
    echo "| cold \`tenon plan\` (hash every input, run nothing) | $(ms tenon_cold_plan) | | |"
    echo "| no-op \`tenon plan\` / \`dvc status\` | $(ms tenon_noop_plan) | $(ms dvc_noop_status) | $(ratio dvc_noop_status tenon_noop_plan) |"
    echo "| no-op \`tenon run\` / \`dvc repro\` | $(ms tenon_noop_run) | $(ms dvc_noop_repro) | $(ratio dvc_noop_repro tenon_noop_run) |"
    echo "| \`touch model.bin\` (mtime only), then plan / status | $(ms tenon_touch_model_plan) | $(ms dvc_touch_model_status) | $(ratio dvc_touch_model_status tenon_touch_model_plan) |"
    echo "| \`touch model.bin\` (mtime only), then run / repro | $(ms tenon_touch_model_run) | $(ms dvc_touch_model_repro) | $(ratio dvc_touch_model_repro tenon_touch_model_run) |"
    echo "| touch all $NFILES small files, then plan / status | $(ms tenon_touch_small_plan) | $(ms dvc_touch_small_status) | $(ratio dvc_touch_small_status tenon_touch_small_plan) |"
    echo "| one small file changed, then run / repro (all 3 stages run) | $(ms tenon_small_change) | $(ms dvc_small_change) | $(ratio dvc_small_change tenon_small_change) |"
    echo "| ... overhead: that minus the stages' own time ($(ms bare_stages) ms) | $OVH_T | $OVH_D | $("$PY" -c "print(f'{$OVH_D/max($OVH_T,0.1):.2f}')") |"
    echo "| revert the small file (content seen before), then run / repro | $(ms tenon_revert) | $(ms dvc_revert) | $(ratio dvc_revert tenon_revert) |"
    echo
    echo "| floor | ms |"
    echo "|---|---:|"
    echo "| \`find data model -printf '%s %T@\\n'\` ($((NFILES + 1)) files) | $(ms floor_find) |"
    echo "| \`openssl dgst -sha256\` of the $MODEL_SIZE model | $(ms floor_openssl_model) |"
    echo "| \`openssl dgst -sha256\` over the $NFILES small files, single-threaded (xargs) | $(ms floor_openssl_small) |"
    echo "| the 3 stage commands alone | $(ms bare_stages) |"
    echo "| tenon: hashing the model = plan after touch - no-op plan | $HASH_MODEL |"
    echo "| tenon: hashing the $NFILES small files = plan after touching them - no-op plan | $HASH_SMALL |"
    if [ -n "$RSS_KB" ]; then
        echo "| tenon peak RSS, \`tenon plan\` hashing a $RSS_SIZE file (sparse) | $(awk -v k="$RSS_KB" 'BEGIN {printf "%.1f MiB", k/1024}') in $RSS_SECS wall (\`openssl dgst -sha256\`: ${RSS_OPENSSL}s; same command on a 1 KiB file: $(awk -v k="$RSS0_KB" 'BEGIN {printf "%.1f MiB", k/1024}')) |"
    fi
    echo
    echo "## Targets"
    echo
    echo "| target | measured | verdict |"
    echo "|---|---|---|"
    echo "| no-op plan >= 20x faster than \`dvc status\` | $(ratio dvc_noop_status tenon_noop_plan)x | $(yes_no "$(m dvc_noop_status) / $(m tenon_noop_plan) >= 20") |"
    echo "| no-op run >= 20x faster than \`dvc status\` | $(ratio dvc_noop_status tenon_noop_run)x | $(yes_no "$(m dvc_noop_status) / $(m tenon_noop_run) >= 20") |"
    echo "| no-op plan within 2x of the \`find\` stat walk | $(ratio tenon_noop_plan floor_find)x | $(yes_no "$(m tenon_noop_plan) / $(m floor_find) <= 2") |"
    echo "| no-op run within 2x of the \`find\` stat walk | $(ratio tenon_noop_run floor_find)x | $(yes_no "$(m tenon_noop_run) / $(m floor_find) <= 2") |"
    echo "| one-small-file-change overhead >= 10x lower than DVC's | ${OVH_T} vs ${OVH_D} ms | $(yes_no "$OVH_D >= 10 * max($OVH_T, 0.001)") |"
    echo "| hashing the $MODEL_SIZE model within 1.2x of openssl | $HASH_MODEL vs $(ms floor_openssl_model) ms | $(yes_no "$HASH_MODEL <= 1.2 * $(ms floor_openssl_model)") |"
    echo "| hashing the $NFILES files faster than single-threaded openssl | $HASH_SMALL vs $(ms floor_openssl_small) ms | $(yes_no "$HASH_SMALL < $(ms floor_openssl_small)") |"
    if [ -n "$RSS_KB" ]; then
        echo "| peak RSS hashing $RSS_SIZE < 64 MiB | $(awk -v k="$RSS_KB" 'BEGIN {printf "%.1f MiB", k/1024}') | $(yes_no "$RSS_KB < 65536") |"
    fi
    echo
    echo "Notes: \"overhead\" subtracts the bare stage commands' median from the tool's median; the model"
    echo "and small-file hashing rows subtract the no-op plan from a plan that must re-hash them, so they"
    echo "include tenon's per-invocation costs only once. Raw hyperfine JSON: \`--keep\` keeps \`$RAW\`."
} > "$OUT_MD"

cat "$OUT_MD"
if [ "$WRITE_RESULTS" = 1 ]; then
    cp "$OUT_MD" "$HERE/RESULTS.md"
    log "saved $HERE/RESULTS.md"
fi
