#!/usr/bin/env bash
# A fresh clone with the shared cache warm (issue 16), side by side in one run: the scenario of
# compare-dvc.sh (10,000 small files, a 1 GiB model, 3 stages; bench/lib/scenario.sh) with the
# small files committed to git and the model in Git LFS, served from a file:// remote (git-lfs's
# standalone file transfer), against `git clone` itself (the floor) and DVC's equivalent.
#
#   nice -n 19 bash bench/compare-git.sh            # full: 10 x 1,000 files, 1 GiB model, 1 rep
#   nice -n 19 SIZE=64M bash bench/compare-git.sh --quick --no-results   # a smoke test
#
# Options: --quick (10 x 100 files, 64 MiB), --reps N (default 1), --keep, --workdir DIR,
#          --no-build, --no-results (do not write bench/RESULTS-git.md).
# Env: SIZE (the model's size, e.g. 256M; overrides the default), TENON_BIN (use this binary, no
#      build; TENON_LABEL says what it is), NO_DVC=1 (skip DVC's rows), DVC_VERSION,
#      REGISTRY_BIN (default /usr/bin/docker-registry).
#
# All git commands run with HOME=<work>/home, where `git lfs install` ran (a CI machine with
# git-lfs set up: a clone smudges the model). The cases:
#   origin    a bare repository (file://) holding the data, the pipeline and the model's LFS object
#   A         `git clone`, `tenon run --cache-repo` with an empty store: fills the shared cache
#             (docker-registry on 127.0.0.1, as in compare-remote.sh); then A is deleted
#   clone     B's `git clone` (the model smudged from the LFS remote): the floor
#   B run     `tenon run --cache-repo` on B, empty store: every task must be Cached from the
#             registry and the outputs byte-identical to A's (else exit 1); bytes hashed shown
#   B edit    one data file edited in B, `tenon run --cache-repo` again: the tasks that ran
#   S clone   `GIT_LFS_SKIP_SMUDGE=1 git clone` (the model is a pointer file)
#   S plan    `tenon plan --cache-repo` on S, empty store: what it decides, and whether any LFS
#             object was downloaded (S/.git/lfs/objects must stay empty, the model a pointer)
#   S run     `tenon run --cache-repo` on S: the tasks that ran, whether tenon fetched the model
#             through git lfs, and whether the outputs equal A's (a pointer handed to the task
#             would change the evaluation)
#   DVC       the model tracked by DVC instead of LFS (`dvc add`), the data in git; A: dvc repro,
#             dvc push to a local directory remote; B: fresh clone, timed `dvc pull && dvc repro`
# Times: median of N reps, wall clock; files in the page cache. The full run needs about
# 8 x the model's size free in the work dir (checked first).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"

# shellcheck source=bench/lib/scenario.sh
. "$HERE/lib/scenario.sh"
# shellcheck source=bench/lib/measure.sh
. "$HERE/lib/measure.sh"
WORK="${TMPDIR:-/tmp}/tenon-bench-git"
REGISTRY_BIN="${REGISTRY_BIN:-/usr/bin/docker-registry}"
bench_options "$@"
scenario_sizes
MODEL_SIZE="${SIZE:-$MODEL_SIZE}"
: "${REPS:=1}"

# ---------------------------------------------------------------- tools
[ -x /usr/bin/time ] || need_apt /usr/bin/time time || die "/usr/bin/time is required (apt-get install time)"
[ -x "$REGISTRY_BIN" ] || need_apt docker-registry docker-registry || die "no registry at $REGISTRY_BIN (apt-get install docker-registry)"
need_apt git-lfs git-lfs || die "git-lfs is required (apt-get install git-lfs)"
command -v curl >/dev/null || die "curl is required"
setup_tools
unset TENON_CACHE_REPO TENON_CACHE_READ_ONLY TENON_CACHE_CREDENTIALS_FILE TENON_CACHE_CA_FILE \
    TENON_CACHE_SIGN_KEY TENON_CACHE_VERIFY_KEY GIT_LFS_SKIP_SMUDGE
export NO_COLOR=1

# ---------------------------------------------------------------- work dir, git and registry
rm -rf "$WORK"
mkdir -p "$WORK"
# at the peak: origin's object, B (work tree + .git/lfs), S's fetched object, DVC's A (cache +
# work tree) and remote, DVC's B (cache + work tree), plus 1 GiB
NEED_KIB=$(( ($(numfmt --from=iec "$MODEL_SIZE") * 8 + (1 << 30)) / 1024 ))
FREE_KIB=$(df --output=avail -k "$WORK" | tail -1)
[ "$FREE_KIB" -ge "$NEED_KIB" ] ||
    die "$WORK needs about $((NEED_KIB >> 20)) GiB free, it has $((FREE_KIB >> 20)) GiB"
REG="$WORK/registry"
REG_PID=""
cleanup() {
    if [ -n "$REG_PID" ]; then kill "$REG_PID" 2>/dev/null || true; wait "$REG_PID" 2>/dev/null || true; fi
    if [ "$KEEP" = 0 ]; then rm -rf "$WORK"; else echo "kept $WORK" >&2; fi
}
trap cleanup EXIT

export HOME="$WORK/home" GIT_CONFIG_NOSYSTEM=1 GIT_TERMINAL_PROMPT=0
mkdir -p "$HOME"
git config --global user.email bench@example.invalid
git config --global user.name bench
git config --global init.defaultBranch main
git lfs install >/dev/null

log "starting $REGISTRY_BIN"
start_registry
CACHE_URL="oci+http://127.0.0.1:$REG_PORT/bench/cache"
log "registry at 127.0.0.1:$REG_PORT (pid $REG_PID)"

RAW="$WORK/raw"
mkdir -p "$RAW"
declare -A TIMES PEAK

# tasks_that REPORT STATUS: the names of the report's tasks with that status (space-separated)
tasks_that() {
    "$PY" -c 'import json, sys; print(" ".join(t["name"] for r in json.load(open(sys.argv[1]))["runs"] for t in r["tasks"] if t["status"] == sys.argv[2]) or "none")' "$1" "$2"
}
# plan_decisions PLAN: "task=decision ..." of `tenon plan --output json`
plan_decisions() {
    "$PY" - "$1" <<'EOF'
import json, sys
plan = json.load(open(sys.argv[1]))
out = []
for r in plan["runs"]:
    for t in r["tasks"]:
        d = t.get("decision")
        if isinstance(d, dict):
            d = d.get("kind") or d.get("type") or next(iter(d), "?")
        out.append(f"{t['name']}={d}")
print(" ".join(out))
EOF
}
hashed() { "$PY" -c 'import json, sys; h = json.load(open(sys.argv[1]))["hashing"]; print("%d files, %.1f MiB" % (h["hashedFiles"], h["hashedBytes"] / 2**20))' "$1"; }
is_pointer() { head -c 43 "$1" | grep -q '^version https://git-lfs.github.com/spec/v1$'; }
lfs_objects() { find "$1/.git/lfs/objects" -type f 2>/dev/null | wc -l; }

# ---------------------------------------------------------------- scenario
ORIGIN="$WORK/origin.git"
SEED="$WORK/seed"
log "scenario: $NFILES files of 1 KiB in $DIRS dirs (git), model of $MODEL_SIZE (Git LFS, file:// remote)"
git init -q "$SEED"
git -C "$SEED" lfs track "model/*.bin" >/dev/null
scenario_data "$SEED"
scenario_tenon_pipeline "$SEED"
git -C "$SEED" add -A
git -C "$SEED" commit -q -m "bench data, model in LFS"
git init -q --bare "$ORIGIN"
git -C "$SEED" push -q "file://$ORIGIN" main
[ "$(find "$ORIGIN/lfs/objects" -type f | wc -l)" = 1 ] || die "the model's LFS object is not in $ORIGIN"
MODEL_BYTES=$(stat -c %s "$SEED/model/model.bin")
URL="file://$ORIGIN"

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- A fills the shared cache
log "A: git clone, tenon run --cache-repo, empty store"
git clone -q "$URL" "$WORK/a"
timed a_push "$TENON" run "$WORK/a" -q --store "$WORK/store-a" --cache-repo "$CACHE_URL" --output json
A_STATS=$(check_report "$RAW/a_push.out" push 2>/dev/null) || { check_report "$RAW/a_push.out" push || true; die "A's push is wrong"; }
sums "$(run_dir "$RAW/a_push.out")/volumes/work" $STAGE_OUTPUTS > "$WORK/a.sums"
rm -rf "$WORK/a" "$WORK/store-a"

# ---------------------------------------------------------------- B: a fresh clone
for ((i = 1; i <= REPS; i++)); do
    log "B: git clone (rep $i), tenon run --cache-repo with an empty store"
    rm -rf "$WORK/b" "$WORK/store-b"
    timed clone git clone -q "$URL" "$WORK/b"
    is_pointer "$WORK/b/model/model.bin" && die "B's clone did not smudge the model"
    timed b_run "$TENON" run "$WORK/b" -q --store "$WORK/store-b" --cache-repo "$CACHE_URL" --output json
    B_STATS=$(check_report "$RAW/b_run.out" remote-hit) ||
        die "B: not every task was Cached from the registry (report: $RAW/b_run.out, stderr: $RAW/b_run.err)"
    sums "$(run_dir "$RAW/b_run.out")/volumes/work" $STAGE_OUTPUTS | cmp -s - "$WORK/a.sums" || die "B's restored outputs differ from A's"
done
B_HASHED=$(hashed "$RAW/b_run.out")
log "B: one data file edited, tenon run --cache-repo"
printf 'edited\n' >> "$WORK/b/data/shard-00/sample-00000.csv"
timed b_edit "$TENON" run "$WORK/b" -q --store "$WORK/store-b" --cache-repo "$CACHE_URL" --output json
B_EDIT_RAN=$(tasks_that "$RAW/b_edit.out" Succeeded)
B_EDIT_CACHED=$(tasks_that "$RAW/b_edit.out" Cached)
B_EDIT_HASHED=$(hashed "$RAW/b_edit.out")
# the summary of the data changes, so evaluate and report depend on it too
B_EDIT_WANT="summarize evaluate report"
rm -rf "$WORK/b" "$WORK/store-b"

# ---------------------------------------------------------------- S: GIT_LFS_SKIP_SMUDGE=1
log "S: GIT_LFS_SKIP_SMUDGE=1 git clone, tenon plan --cache-repo, then tenon run --cache-repo"
for ((i = 1; i <= REPS; i++)); do
    rm -rf "$WORK/s" "$WORK/store-s"
    timed s_clone env GIT_LFS_SKIP_SMUDGE=1 git clone -q "$URL" "$WORK/s"
    is_pointer "$WORK/s/model/model.bin" || die "S's model is not a pointer file"
    timed s_plan "$TENON" plan "$WORK/s" --store "$WORK/store-s" --cache-repo "$CACHE_URL" --output json
done
S_PLAN=$(plan_decisions "$RAW/s_plan.out")
S_PLAN_OBJECTS=$(lfs_objects "$WORK/s")
S_PLAN_POINTER=$(is_pointer "$WORK/s/model/model.bin" && echo yes || echo no)
timed s_run "$TENON" run "$WORK/s" -q --store "$WORK/store-s" --cache-repo "$CACHE_URL" --output json
S_RUN_RAN=$(tasks_that "$RAW/s_run.out" Succeeded)
S_RUN_CACHED=$(tasks_that "$RAW/s_run.out" Cached)
S_RUN_FETCHED=$(is_pointer "$WORK/s/model/model.bin" && echo "no (still a pointer)" || echo "yes ($(lfs_objects "$WORK/s") object)")
S_RUN_SAME=$(sums "$(run_dir "$RAW/s_run.out")/volumes/work" $STAGE_OUTPUTS | cmp -s - "$WORK/a.sums" && echo yes || echo "**no**")
rm -rf "$WORK/s" "$WORK/store-s"

# ---------------------------------------------------------------- DVC
DVC_ROW="| DVC | skipped (NO_DVC=1) |"
if [ "${NO_DVC:-0}" != 1 ]; then
    log "DVC A: data in git, model added to DVC; dvc repro, dvc push to a local directory remote"
    DA="$WORK/dvc-a" DB="$WORK/dvc-b"
    git init -q "$DA"
    cp -a "$SEED/data" "$DA/data"
    mkdir -p "$DA/model"
    ln "$SEED/model/model.bin" "$DA/model/model.bin"
    scenario_dvc "$DA" "$WORK/dvc-site-a"
    (cd "$DA" && "$DVC" add -q model/model.bin && "$DVC" remote add -q -d r "$WORK/dvc-remote")
    timed dvc_a_repro bash -c "cd '$DA' && '$DVC' repro"
    timed dvc_a_push bash -c "cd '$DA' && '$DVC' push"
    git -C "$DA" add -A
    git -C "$DA" commit -q -m "dvc pipeline"
    sums "$DA/out" $STAGE_OUTPUTS | cmp -s - "$WORK/a.sums" || die "DVC's and tenon's outputs differ"
    for ((i = 1; i <= REPS; i++)); do
        log "DVC B: git clone, dvc pull && dvc repro (rep $i)"
        rm -rf "$DB" "$WORK/dvc-site-b"
        timed dvc_clone git clone -q "$DA" "$DB"
        dvc_local_config "$DB" "$WORK/dvc-site-b"
        timed dvc_b bash -c "cd '$DB' && '$DVC' pull && '$DVC' repro"
        sums "$DB/out" $STAGE_OUTPUTS | cmp -s - "$WORK/a.sums" || die "DVC B's outputs differ from A's"
    done
    DVC_B_RAN=$(grep -c "Running stage" "$RAW/dvc_b.out" || true)
    DVC_ROW="| DVC B: \`git clone\` ($(ms dvc_clone)) then \`dvc pull && dvc repro\`, empty cache ($DVC_B_RAN stages re-ran) | $(ms dvc_b) |"
    rm -rf "$DA" "$DB" "$WORK/dvc-remote"
fi
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- report
verdict() { calc "'**met**' if $1 else '**missed**'"; }
RATIO_CLONE=$(calc "f'{$(med b_run) / $(med clone):.2f}'")
OUT_MD="$WORK/RESULTS-git.md"
{
    echo "# A fresh clone, the shared cache warm: tenon vs git clone vs DVC (Git LFS model)"
    echo
    echo "Generated by \`bench/compare-git.sh$([ "$QUICK" = 1 ] && echo ' --quick')\`${SIZE:+ with SIZE=$SIZE} on $(date -u +%Y-%m-%dT%H:%MZ)."
    echo "Machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(free -g | awk '/Mem:/ {print $2}') GiB RAM, $(findmnt -no FSTYPE -T "$WORK")."
    echo "$(tenon_label), $(git --version), $(git lfs version | awk '{print $1}')$([ "${NO_DVC:-0}" = 1 ] || echo ", DVC $("$DVC" --version)"), docker-registry on 127.0.0.1."
    echo "Load average at start: $LOAD_START; at end: $LOAD_END (2 CPUs: above ~0.5 means something else was running)."
    echo "Scenario: $NFILES files of 1 KiB in git + one $MODEL_SIZE model ($MODEL_BYTES bytes) in Git LFS on a file:// remote;"
    echo "3 stages (summarize the data -> evaluate with the model -> report). The shared cache was filled by"
    echo "another clone (A). Median of $REPS rep(s), wall ms; files in the page cache."
    echo
    echo "| case | ms |"
    echo "|---|---:|"
    echo "| A: \`tenon run --cache-repo\`, empty store (fills the shared cache; 1 run) | $(ms a_push) |"
    echo "| B: \`git clone\` (model smudged from LFS): **the floor** | $(ms clone) |"
    echo "| B: \`tenon run --cache-repo\`, empty store: all Cached from the registry, outputs identical to A's; hashed $B_HASHED | $(ms b_run) |"
    echo "| B: one data file edited, \`tenon run --cache-repo\`: ran [$B_EDIT_RAN], Cached [$B_EDIT_CACHED]; hashed $B_EDIT_HASHED | $(ms b_edit) |"
    echo "| S: \`GIT_LFS_SKIP_SMUDGE=1 git clone\` | $(ms s_clone) |"
    echo "| S: \`tenon plan --cache-repo\`, empty store: $S_PLAN; LFS objects downloaded: $S_PLAN_OBJECTS; model still a pointer: $S_PLAN_POINTER | $(ms s_plan) |"
    echo "| S: \`tenon run --cache-repo\`: ran [$S_RUN_RAN], Cached [$S_RUN_CACHED]; model fetched through git lfs: $S_RUN_FETCHED; outputs identical to A's: $S_RUN_SAME (1 run) | $(ms s_run) |"
    echo "$DVC_ROW"
    echo
    echo "| goal | measured | verdict |"
    echo "|---|---|---|"
    echo "| B's \`tenon run\`: all Cached, outputs restored | yes | **met** |"
    echo "| B's \`tenon run\` <= 2x \`git clone\` | ${RATIO_CLONE}x ($(ms b_run) vs $(ms clone) ms) | $(verdict "$(med b_run) <= 2 * $(med clone)") |"
    if [ "${NO_DVC:-0}" != 1 ]; then
        echo "| B's \`tenon run\` >= 20x faster than DVC's \`dvc pull && dvc repro\` | $(calc "f'{$(med dvc_b) / $(med b_run):.1f}'")x ($(ms b_run) vs $(ms dvc_b) ms) | $(verdict "$(med dvc_b) >= 20 * $(med b_run)") |"
    fi
    echo "| S's \`tenon plan\`: every task Cached, no LFS object downloaded | $S_PLAN; $S_PLAN_OBJECTS objects | $(verdict "'$S_PLAN_OBJECTS' == '0' and all(d.endswith('=cached') or d.endswith('=Cached') for d in '$S_PLAN'.split())") |"
    echo "| one file edited: exactly the affected tasks rerun ([$B_EDIT_WANT]) | [$B_EDIT_RAN] | $(verdict "sorted('$B_EDIT_RAN'.split()) == sorted('$B_EDIT_WANT'.split())") |"
    echo
    echo "tenon's remoteCache counters: A's push: $A_STATS; B's run: $B_STATS."
} > "$OUT_MD"

cat "$OUT_MD"
if [ "$WRITE_RESULTS" = 1 ]; then
    cp "$OUT_MD" "$HERE/RESULTS-git.md"
    log "saved $HERE/RESULTS-git.md"
fi
