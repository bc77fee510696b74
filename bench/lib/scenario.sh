# shellcheck shell=bash
# Shared by bench/compare-dvc.sh and bench/compare-remote.sh (sourced, not run): the tools
# (DVC in bench/.venv, a release tenon) and the scenario both compare on: 10 x PER_DIR small
# files of 1 KiB, one MODEL_SIZE model file and a 3-stage pipeline (summarize the small files ->
# evaluate with the model -> report), written once for tenon and once for DVC with the same
# stage commands.
#
# The caller sets HERE (bench/) and REPO (the checkout) before sourcing it.

PY=python3
DVC_VERSION="${DVC_VERSION:-3.67.1}"

# bench_options ARGS...: the options both scripts take (see their headers); sets QUICK, REPS,
# KEEP, BUILD, WRITE_RESULTS and WORK (whose default the caller sets); --help prints the
# script's header comment.
bench_options() {
    QUICK=0 REPS="" KEEP=0 BUILD=1 WRITE_RESULTS=1
    while [ $# -gt 0 ]; do
        case "$1" in
            --quick) QUICK=1 ;;
            --reps) REPS="$2"; shift ;;
            --keep) KEEP=1 ;;
            --workdir) WORK="$2"; shift ;;
            --no-build) BUILD=0 ;;
            --no-results) WRITE_RESULTS=0 ;;
            -h|--help) awk 'NR > 1 && !/^#/ {exit} NR > 1' "$0"; exit 0 ;;
            *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
        esac
        shift
    done
}

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { echo "error: $*" >&2; exit 1; }

need_apt() { # command package
    command -v "$1" >/dev/null 2>&1 && return 0
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        log "installing $2 from apt"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null 2>&1 ||
            { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null 2>&1; } || true
    fi
    command -v "$1" >/dev/null 2>&1
}

# Sizes: DIRS, PER_DIR, NFILES, MODEL_SIZE (the full run: 10 x 1,000 files, 1 GiB model).
scenario_sizes() {
    DIRS=10
    if [ "$QUICK" = 1 ]; then PER_DIR=100; MODEL_SIZE=64M; else PER_DIR=1000; MODEL_SIZE=1G; fi
    NFILES=$((DIRS * PER_DIR))
}

# Sets DVC (installing dvc==$DVC_VERSION into bench/.venv once) and TENON (TENON_BIN, or a
# release build unless BUILD=0).
setup_tools() {
    command -v git >/dev/null || die "git is required"
    command -v "$PY" >/dev/null || die "python3 is required"
    local venv="$HERE/.venv"
    if ! "$venv/bin/dvc" --version 2>/dev/null | grep -qx "$DVC_VERSION"; then
        log "installing dvc==$DVC_VERSION into $venv"
        [ -x "$venv/bin/pip" ] || "$PY" -m venv "$venv"
        "$venv/bin/pip" install -q --disable-pip-version-check "dvc==$DVC_VERSION"
    fi
    DVC="$venv/bin/dvc"
    export DVC_NO_ANALYTICS=1 DVC_IGNORE_UPDATER=1
    setup_tenon
}

# setup_tenon: TENON is $TENON_BIN, else the release build of the checkout (built unless --no-build)
setup_tenon() {
    if [ -n "${TENON_BIN:-}" ]; then
        TENON="$TENON_BIN"
    else
        if [ "$BUILD" = 1 ]; then
            log "cargo build --release"
            (cd "$REPO" && cargo build --release -q)
        fi
        TENON="$REPO/target/release/tenon"
    fi
    [ -x "$TENON" ] || die "no tenon binary at $TENON"
}

# "tenon <version> (<git rev or TENON_BIN>; binary built HH:MMZ)" for the results header.
tenon_label() {
    local what
    if [ -n "${TENON_BIN:-}" ]; then
        what="TENON_BIN=$TENON_BIN${TENON_LABEL:+, $TENON_LABEL}"
    else
        what="git $(cd "$REPO" && git rev-parse --short HEAD)$(cd "$REPO" && git diff --quiet HEAD -- src Cargo.toml 2>/dev/null || echo "+dirty, src diff sha256 $(git diff HEAD -- src Cargo.toml | sha256sum | cut -c1-12)")"
    fi
    echo "tenon $("$TENON" --version | awk '{print $2}') ($what; binary built $(date -u -r "$TENON" +%H:%MZ))"
}

# scenario_data DIR: DIR/data/shard-NN/sample-NNNNN.csv (seeded, so every run has the same
# bytes) and DIR/model/model.bin (random).
scenario_data() {
    "$PY" - "$1/data" "$DIRS" "$PER_DIR" <<'EOF'
import os, sys, random
root, dirs, per = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rnd = random.Random(42)
for d in range(dirs):
    p = os.path.join(root, f"shard-{d:02d}")
    os.makedirs(p, exist_ok=True)
    for i in range(per):
        with open(os.path.join(p, f"sample-{i:05d}.csv"), "wb") as f:
            f.write(rnd.randbytes(1024))
EOF
    mkdir -p "$1/model"
    head -c "$MODEL_SIZE" /dev/urandom > "$1/model/model.bin"
}

# the three stages, shared verbatim by both tools (and timed bare as "the tasks' own time")
# shellcheck disable=SC2016
STAGE1='find data -type f | LC_ALL=C sort | xargs cat | sha256sum > "$OUT/summary/summary.txt"'
# shellcheck disable=SC2016
STAGE2='{ head -c 16777216 model/model.bin; cat "$OUT/summary/summary.txt"; } | sha256sum > "$OUT/evaluation/evaluation.txt"'
# shellcheck disable=SC2016
STAGE3='{ echo report; cat "$OUT/evaluation/evaluation.txt"; } > "$OUT/report/report.txt"'
# the outputs, relative to the work workspace (tenon) or out/ (DVC)
STAGE_OUTPUTS="summary/summary.txt evaluation/evaluation.txt report/report.txt"

# tenon_task NAME RUN_AFTER INPUTS OUT_DIR COMMAND [PARAM]: one task of a Pipeline's spec.tasks
# (indented 4) that writes work:OUT_DIR/ ($OUT in COMMAND is the work workspace). With INPUTS
# it also binds the source workspace, read-only, and COMMAND runs there; PARAM passes the
# pipeline param of that name through.
tenon_task() {
    local name="$1" after="$2" inputs="$3" out="$4" cmd="$5" param="${6:-}"
    echo "    - name: $name"
    [ -z "$after" ] || echo "      runAfter: [$after]"
    # shellcheck disable=SC2016
    [ -z "$param" ] || printf '      params:\n        - {name: %s, value: "$(params.%s)"}\n' "$param" "$param"
    echo "      workspaces:"
    [ -z "$inputs" ] || echo "        - {name: source, workspace: source}"
    echo "        - {name: work, workspace: work}"
    echo "      taskSpec:"
    echo "        metadata:"
    echo "          annotations:"
    [ -z "$inputs" ] || echo "            tenon.dev/inputs: \"$inputs\""
    echo "            tenon.dev/outputs: \"work:$out/\""
    [ -z "$param" ] || printf '        params:\n          - name: %s\n' "$param"
    echo "        workspaces:"
    [ -z "$inputs" ] || echo "          - {name: source, readOnly: true}"
    echo "          - {name: work}"
    cat <<EOF
        steps:
          - name: run
            image: alpine
            script: |
              #!/bin/sh
              set -eu
              OUT="\$(workspaces.work.path)"; mkdir -p "\$OUT/$out"
EOF
    # shellcheck disable=SC2016
    [ -z "$inputs" ] || echo '              cd "$(workspaces.source.path)"'
    echo "              $cmd"
}

# run_workspaces SIZE: a PipelineRun's spec.workspaces: source (the repository tree) and work
# (a claim template of SIZE, which the outputs are written to).
run_workspaces() {
    cat <<EOF
  workspaces:
    - name: source
      emptyDir: {}
    - name: work
      volumeClaimTemplate:
        spec:
          accessModes: [ReadWriteOnce]
          resources: {requests: {storage: $1}}
EOF
}

# scenario_tenon_pipeline DIR: DIR/tekton/pipeline.yaml (Pipeline bench + PipelineRun bench-run).
scenario_tenon_pipeline() {
    mkdir -p "$1/tekton"
    {
        cat <<EOF
apiVersion: tekton.dev/v1
kind: Pipeline
metadata:
  name: bench
spec:
  workspaces:
    - name: source
    - name: work
  tasks:
EOF
        tenon_task summarize "" "data/" summary "$STAGE1"
        tenon_task evaluate summarize "model/model.bin" evaluation "$STAGE2"
        tenon_task report evaluate "" report "$STAGE3"
        cat <<EOF
---
apiVersion: tekton.dev/v1
kind: PipelineRun
metadata:
  name: bench-run
  annotations:
    tenon.dev/repo-workspace: source
spec:
  pipelineRef: {name: bench}
EOF
        run_workspaces 1Gi
    } > "$1/tekton/pipeline.yaml"
}

# scenario_dvc DIR SITE_CACHE_DIR: `dvc init` in the git repo DIR, DVC's local settings and
# dvc.yaml with the same stages writing to out/ (the caller commits).
scenario_dvc() {
    (
        cd "$1"
        "$DVC" init -q
        "$DVC" config core.analytics false
        "$DVC" config core.check_update false
        "$DVC" config core.autostage false
        dvc_local_config "$1" "$2"
        mkdir -p out/summary out/evaluation out/report
        # OUT=out: the same commands as tenon's steps
        cat > dvc.yaml <<EOF
stages:
  summarize:
    cmd: OUT=out; mkdir -p out/summary; $STAGE1
    deps: [data]
    outs: [out/summary]
  evaluate:
    cmd: OUT=out; mkdir -p out/evaluation; $STAGE2
    deps: [model/model.bin, out/summary]
    outs: [out/evaluation]
  report:
    cmd: OUT=out; mkdir -p out/report; $STAGE3
    deps: [out/evaluation]
    outs: [out/report]
EOF
    )
}

# dvc_local_config DIR SITE_CACHE_DIR: the per-checkout setting a clone does not inherit.
dvc_local_config() {
    (cd "$1" && "$DVC" config --local core.site_cache_dir "$2")
}
