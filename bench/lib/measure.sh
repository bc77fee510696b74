# shellcheck shell=bash
# Shared by bench/compare-remote.sh and bench/compare-git.sh (sourced after lib/scenario.sh):
# a docker-registry on 127.0.0.1 (start_registry), timing (timed, med, ms: the caller declares
# RAW and the arrays TIMES and PEAK), and checks of tenon's RunReports (check_report, run_dir, sums).

free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# start_registry: a fresh docker-registry on 127.0.0.1:REG_PORT (another port if the first is
# taken between our probe and its bind).
start_registry() {
    local attempt i
    mkdir -p "$REG/data"
    for attempt in 1 2 3; do
        REG_PORT=$(free_port)
        cat > "$REG/config.yml" <<EOF
version: 0.1
log: {level: info}
storage:
  filesystem: {rootdirectory: $REG/data}
  delete: {enabled: true}
  maintenance: {uploadpurging: {enabled: false}}
http: {addr: 127.0.0.1:$REG_PORT}
EOF
        "$REGISTRY_BIN" serve "$REG/config.yml" >>"$REG/registry.log" 2>&1 &
        REG_PID=$!
        for ((i = 0; i < 100; i++)); do
            if curl -fsS -o /dev/null "http://127.0.0.1:$REG_PORT/v2/" 2>/dev/null; then return 0; fi
            kill -0 "$REG_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill "$REG_PID" 2>/dev/null || true; wait "$REG_PID" 2>/dev/null || true; REG_PID=""
        log "registry did not start on port $REG_PORT (attempt $attempt)"
    done
    tail -5 "$REG/registry.log" >&2
    die "docker-registry did not start (log: $REG/registry.log)"
}
# timed CASE COMMAND...: run it (stdout in $RAW/CASE.out, stderr in $RAW/CASE.err), record wall
# time and peak RSS (not for a shell function); a failure ends the benchmark with its stderr.
timed() {
    local name="$1" t0 t1 time=(/usr/bin/time -f '%M' -o "$RAW/$1.rss")
    shift
    if declare -F "$1" >/dev/null; then time=(); echo 0 > "$RAW/$name.rss"; fi
    t0=$(date +%s%N)
    "${time[@]}" "$@" >"$RAW/$name.out" 2>"$RAW/$name.err" ||
        { tail -30 "$RAW/$name.err" >&2; die "$name failed: $*"; }
    t1=$(date +%s%N)
    TIMES[$name]+="$(((t1 - t0) / 1000)) "
    PEAK[$name]=$(tail -1 "$RAW/$name.rss")
    log "    $name: $(awk -v u="$(((t1 - t0) / 1000))" 'BEGIN {printf "%.1f ms", u / 1000}')"
}
# median of numbers; med CASE: median wall seconds of a case's reps (TIMES); calc EXPR: Python's
# value of EXPR; ms CASE: med in milliseconds
median() {
    printf '%s\n' "$@" | sort -g |
        awk '{a[NR] = $1} END {m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2; printf "%.6f", m}'
}
med() { calc "$(median ${TIMES[$1]}) / 1e6"; }
calc() { "$PY" -c "import sys; print($1)"; }
ms() { calc "f'{$(med "$1") * 1000:.1f}'"; }

# check_report JSON MODE: the RunReport of one `tenon run --output json` is what MODE expects, or
# exit 1 naming what is wrong; prints its remoteCache counters. MODE: push (succeeded, records
# published, no remote error or warning), remote-hit (every task Cached from the registry, no
# remote error or warning), local-hit (every task Cached).
check_report() {
    "$PY" - "$@" <<'EOF'
import json, sys
path, mode = sys.argv[1], sys.argv[2]
report = json.load(open(path))
bad = []
for run in report["runs"]:
    if run["status"] != "Succeeded":
        bad.append(f"run {run['name']}: {run['status']} {run['message']}")
    for t in run["tasks"]:
        frm = t.get("cachedFrom") or {}
        print(f"      {run['name']}/{t['name']}: {t['status']} {t.get('cacheReasons')}", file=sys.stderr)
        if mode != "push" and t["status"] != "Cached":
            bad.append(f"task {t['name']}: {t['status']}, not Cached ({t.get('cacheReasons')})")
        elif mode == "remote-hit" and not frm.get("remote"):
            bad.append(f"task {t['name']}: Cached, but not from the registry (cachedFrom: {frm})")
if not report["runs"]:
    bad.append("no runs in the report")
rc = report.get("remoteCache")
if mode != "local-hit":
    if rc is None:
        bad.append("no remoteCache in the report")
    else:
        if rc["unavailable"] or rc["errors"] or rc["warnings"]:
            bad.append(f"remote cache: unavailable={rc['unavailable']} errors={rc['errors']} warnings={rc['warnings']}")
        if mode == "push" and not rc["published"]:
            bad.append("remote cache: nothing published")
if rc:
    print(" ".join(f"{k}={rc[k]}" for k in ("hits", "misses", "published", "bytesIn", "bytesOut", "errors")))
for b in bad:
    print(f"error: {path}: {b}", file=sys.stderr)
sys.exit(1 if bad else 0)
EOF
}
run_dir() { "$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["runs"][0]["runDir"])' "$1"; }
# sums DIR FILE...: sha256 lines of FILEs relative to DIR
sums() { local d="$1"; shift; (cd "$d" && sha256sum "$@"); }
