#!/usr/bin/env bash
# Measure `tenon watch` (results go to bench/WATCH.md by hand):
#   1. directory mode: file save -> affected task start (N samples, default debounce)
#   2. git mode: webhook -> reconcile start (N samples, a bare remote on disk)
#   3. idle CPU and memory of a watcher over examples/model-promotion for IDLE seconds
# Usage: bench/watch.sh [path/to/tenon] (default target/release/tenon, else target/debug/tenon)
# Only 127.0.0.1 is used. Needs git, curl, python3.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-}
if [ -z "$BIN" ]; then
  if [ -x target/release/tenon ]; then BIN=target/release/tenon; else BIN=target/debug/tenon; fi
fi
BIN=$(realpath "$BIN")
N=${N:-10}
IDLE=${IDLE:-60}
TMP=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$TMP"; }
trap cleanup EXIT
echo "binary: $BIN"

start_watch() { # store addrfile args...
  local store=$1 addr=$2; shift 2
  TENON_STORE=$store NO_COLOR=1 "$BIN" watch "$@" --listen 127.0.0.1:0 --listen-file "$addr" -q --sandbox host \
    >"$store.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 1 500); do [ -s "$addr" ] && break; sleep 0.02; done
  for _ in $(seq 1 1500); do
    curl -sf "http://$(cat "$addr")/readyz" >/dev/null && return 0; sleep 0.02
  done
  echo "watcher not ready" >&2; cat "$store.log" >&2; return 1
}
reconciles() { curl -s "http://$1/status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["reconciles"])'; }
wait_more() { # addr n
  for _ in $(seq 1 3000); do [ "$(reconciles "$1")" -gt "$2" ] && return 0; sleep 0.01; done; return 1
}
stats() { python3 -c 'import sys,statistics as s; v=sorted(float(x) for x in sys.stdin.read().split()); print(f"n={len(v)} min={v[0]:.0f} median={s.median(v):.0f} max={v[-1]:.0f} ms")'; }

# 1. directory mode -------------------------------------------------------------------
mkdir -p "$TMP/dir"
cat >"$TMP/dir/pipeline.yaml" <<'EOF'
apiVersion: tekton.dev/v1
kind: Task
metadata: {name: t, annotations: {tenon.dev/inputs: "input.txt"}}
spec:
  workspaces: [{name: src}]
  results: [{name: started}]
  steps:
    - name: s
      image: debian
      script: date +%s.%N | tr -d '\n' > $(results.started.path)
---
apiVersion: tekton.dev/v1
kind: PipelineRun
metadata: {name: r, annotations: {tenon.dev/repo-workspace: source}}
spec:
  pipelineSpec:
    workspaces: [{name: source}]
    tasks: [{name: t, taskRef: {name: t}, workspaces: [{name: src, workspace: source}]}]
  workspaces: [{name: source, emptyDir: {}}]
EOF
echo 0 >"$TMP/dir/input.txt"
start_watch "$TMP/s1" "$TMP/a1" --dir "$TMP/dir"
A=$(cat "$TMP/a1")
: >"$TMP/lat1"
for i in $(seq 1 "$N"); do
  n=$(reconciles "$A")
  saved=$(python3 -c 'import time; print(repr(time.time()))')
  echo "$i" >"$TMP/dir/input.txt"
  wait_more "$A" "$n"
  curl -s "http://$A/status" | python3 -c "import json,sys; s=json.load(sys.stdin); t=s['lastReconcile']['report']['runs'][0]['tasks'][0]; print((float(t['results']['started'])-$saved)*1000)" >>"$TMP/lat1"
done
echo "directory mode, file save -> task start (debounce 100ms): $(stats <"$TMP/lat1")"

# 2. git mode -----------------------------------------------------------------------
g() { git -c user.name=b -c user.email=b@example.com -c commit.gpgsign=false "$@"; }
cp -r examples/model-promotion "$TMP/seed"
g -C "$TMP/seed" init -q -b main && g -C "$TMP/seed" add -A && g -C "$TMP/seed" commit -qm import
g clone -q --bare "$TMP/seed" "$TMP/remote.git"
g clone -q "$TMP/remote.git" "$TMP/work"
start_watch "$TMP/s2" "$TMP/a2" --git "file://$TMP/remote.git" --interval 1h --no-promote
A=$(cat "$TMP/a2")
: >"$TMP/lat2"
for i in $(seq 1 "$N"); do
  echo "# $i" >>"$TMP/work/src/train.py"
  g -C "$TMP/work" commit -qam "change $i" && g -C "$TMP/work" push -q origin main
  n=$(reconciles "$A")
  sent=$(python3 -c 'import time; print(repr(time.time()))')
  curl -s -o /dev/null -X POST -H 'X-GitHub-Event: push' --data '{"ref":"refs/heads/main"}' "http://$A/hooks/git"
  wait_more "$A" "$n"
  curl -s "http://$A/status" | python3 -c "
import json,sys,datetime
s=json.load(sys.stdin)['lastReconcile']['startedAt']
t=datetime.datetime.fromisoformat(s.replace('Z','+00:00')).timestamp()
print((t-$sent)*1000)" >>"$TMP/lat2"
done
echo "git mode, webhook -> reconcile start: $(stats <"$TMP/lat2")"
kill "${PIDS[@]}" 2>/dev/null || true
PIDS=()

# 3. idle ---------------------------------------------------------------------------
tick=$(getconf CLK_TCK)
idle() { # label, then watch args
  local label=$1; shift
  local n=${#PIDS[@]}
  start_watch "$TMP/s-$n" "$TMP/a-$n" "$@"
  local P=${PIDS[-1]}
  local c0 c1 rss hwm thr
  c0=$(awk '{print $14+$15}' "/proc/$P/stat"); sleep "$IDLE"; c1=$(awk '{print $14+$15}' "/proc/$P/stat")
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$P/status")
  hwm=$(awk '/VmHWM/ {print $2}' "/proc/$P/status")
  thr=$(awk '/Threads/ {print $2}' "/proc/$P/status")
  python3 -c "print(f'idle over {$IDLE}s, $label: CPU {($c1-$c0)/$tick:.2f} s = {($c1-$c0)/$tick/$IDLE*100:.3f}% of one core (tick {1/$tick:.2f} s); RSS {$rss/1024:.1f} MiB (peak {$hwm/1024:.1f} MiB), {$thr} threads')"
}
cp -r examples/model-promotion "$TMP/idle"
idle "directory mode over examples/model-promotion" --dir "$TMP/idle" --no-promote
idle "git mode over examples/model-promotion, --interval 30s" --git "file://$TMP/remote.git" --no-promote
