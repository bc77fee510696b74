#!/usr/bin/env bash
# The Kubernetes executor's overhead against bare pods doing the same work, in one run,
# alternating (issue 17, "Overhead"), on the cluster of KUBECONFIG:
#
#   bash bench/compare-k8s.sh                   # N=6 reps, release build of this checkout
#   TENON_BIN=/tmp/tenon-old TENON_LABEL=main bash bench/compare-k8s.sh --no-results
#
# Options: --reps N (default 6), --keep, --workdir DIR, --no-build, --no-results (do not write
#          bench/RESULTS-k8s.md).
# Env: KUBECONFIG (default /var/lib/tenon-k8s/admin.kubeconfig, the test cluster), IMAGE (default
#      docker.io/library/busybox:1.36), FAN (the fan-out's width, default 20), TENON_BIN (use this
#      binary, no build; TENON_LABEL says what it is), BASE_BIN (also measure this other tenon
#      binary, e.g. the previous release, in the same reps: rows "tenon (base)"; BASE_LABEL says
#      what it is; BASE_FAN=0 skips its fan-out, which takes minutes with the old default).
#
# The cases, each rep in this order, in a namespace of their own (deleted at the end):
#   bare       one busybox pod doing `echo hi`: created, followed with a watch to Succeeded,
#              deleted (bench/lib/barepods.py talks to the API server directly: no client start-up)
#   kubectl    the same with kubectl: `kubectl create`, `kubectl wait` for Succeeded, `kubectl delete
#              --wait=false` (three client starts: what a script would do)
#   tenon      `tenon run` of a one-step TaskRun (busybox, script `echo hi`) with `--executor
#              kubernetes --no-cache`: the whole process (start, connect, plan, pod, results, delete)
#   bare-fan   FAN bare pods created at once, followed with one watch until all Succeeded, deleted
#   tenon-fan  `tenon run` of a Pipeline of FAN independent one-step tasks, `--no-cache`
# Times: wall clock of the whole command; median, min and max of N reps. Between cases the
# script waits (untimed) until the namespace has no pod left, so no case pays for the previous
# one's teardown.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"

# shellcheck source=bench/lib/scenario.sh
. "$HERE/lib/scenario.sh"
# shellcheck source=bench/lib/measure.sh
. "$HERE/lib/measure.sh"
WORK="${TMPDIR:-/tmp}/tenon-bench-k8s"
bench_options "$@"
: "${REPS:=6}"
: "${FAN:=20}"
: "${IMAGE:=docker.io/library/busybox:1.36}"
export KUBECONFIG="${KUBECONFIG:-/var/lib/tenon-k8s/admin.kubeconfig}"

# ---------------------------------------------------------------- tools
[ -x /usr/bin/time ] || need_apt /usr/bin/time time || die "/usr/bin/time is required (apt-get install time)"
command -v kubectl >/dev/null || die "kubectl is required"
command -v "$PY" >/dev/null || die "python3 is required"
"$PY" -c 'import yaml' 2>/dev/null || need_apt python3-yaml python3-yaml || true
[ -r "$KUBECONFIG" ] || die "no kubeconfig at $KUBECONFIG"
kubectl get --raw /readyz >/dev/null || die "the cluster of $KUBECONFIG does not answer"
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
export NO_COLOR=1
unset TENON_LOG TENON_EXECUTOR TENON_K8S_NAMESPACE TENON_K8S_KUBECONFIG TENON_K8S_HELPER_IMAGE

# ---------------------------------------------------------------- work dir, namespace
rm -rf "$WORK"
mkdir -p "$WORK/raw" "$WORK/one" "$WORK/fan"
RAW="$WORK/raw"
NS="tenon-bench-$(head -c 4 /dev/urandom | od -An -tx1 | tr -d ' \n')"
cleanup() {
    kubectl delete namespace "$NS" --wait=false >/dev/null 2>&1 || true
    if [ "$KEEP" = 0 ]; then rm -rf "$WORK"; else echo "kept $WORK" >&2; fi
}
trap cleanup EXIT
kubectl create namespace "$NS" >/dev/null
# the namespace's ServiceAccount is not needed (no pod mounts a token), but the admission of
# a new namespace may lag: wait until a pod can be created there
for _ in $(seq 50); do kubectl get serviceaccount default -n "$NS" >/dev/null 2>&1 && break; sleep 0.2; done
declare -A TIMES PEAK

cat > "$WORK/one/taskrun.yaml" <<EOF
apiVersion: tekton.dev/v1
kind: TaskRun
metadata: {name: hi}
spec:
  taskSpec:
    steps:
      - {name: hi, image: $IMAGE, script: echo hi}
EOF
{
    echo "apiVersion: tekton.dev/v1"
    echo "kind: Pipeline"
    echo "metadata: {name: fan}"
    echo "spec:"
    echo "  tasks:"
    for i in $(seq -w 1 "$FAN"); do
        echo "    - name: t$i"
        echo "      taskSpec:"
        echo "        steps:"
        echo "          - {name: hi, image: $IMAGE, script: echo hi}"
    done
    echo "---"
    echo "apiVersion: tekton.dev/v1"
    echo "kind: PipelineRun"
    echo "metadata: {name: fan-run}"
    echo "spec:"
    echo "  pipelineRef: {name: fan}"
} > "$WORK/fan/pipeline.yaml"
POD_JSON() { # NAME
    printf '{"apiVersion":"v1","kind":"Pod","metadata":{"name":"%s"},"spec":{"restartPolicy":"Never","terminationGracePeriodSeconds":0,"automountServiceAccountToken":false,"containers":[{"name":"c","image":"%s","imagePullPolicy":"IfNotPresent","command":["sh","-c","echo hi"]}]}}' "$1" "$IMAGE"
}
bare() { "$PY" "$HERE/lib/barepods.py" "$KUBECONFIG" "$NS" "$IMAGE" "$1" "$2"; }
with_kubectl() { # NAME
    POD_JSON "$1" | kubectl create -n "$NS" -f - >/dev/null &&
        kubectl wait -n "$NS" --for=jsonpath='{.status.phase}'=Succeeded --timeout=120s "pod/$1" >/dev/null &&
        kubectl delete -n "$NS" pod "$1" --wait=false >/dev/null
}
tenon_k8s() { # DIR STORE [BINARY]
    "${3:-$TENON}" run "$1" -q --output json --no-cache --store "$2" --executor kubernetes \
        --k8s-kubeconfig "$KUBECONFIG" --k8s-namespace "$NS"
}
# settle: wait (untimed) until the namespace has no pod left, so that no case pays for the
# teardown of the previous one's pods (tenon and the bare cases delete without waiting)
settle() {
    local i
    for ((i = 0; i < 600; i++)); do
        [ -z "$(kubectl get pods -n "$NS" -o name 2>/dev/null)" ] && return 0
        sleep 0.2
    done
    die "pods still there in $NS after 120 s"
}
# succeeded REPORT: every task of the report Succeeded (else the benchmark is void)
succeeded() {
    "$PY" -c 'import json, sys; r = json.load(open(sys.argv[1])); t = [x for run in r["runs"] for x in run["tasks"]]; sys.exit(0 if t and all(x["status"] == "Succeeded" for x in t) else 1)' "$1" ||
        die "not every task Succeeded: $1"
}

# ---------------------------------------------------------------- warm-up (not measured)
log "warm-up: one bare pod, one tenon TaskRun (images, caches, connections)"
timed warm_bare bare 1 "warm"
timed warm_tenon tenon_k8s "$WORK/one" "$WORK/store-warm"
settle
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- the reps, alternating
for ((i = 1; i <= REPS; i++)); do
    log "rep $i of $REPS"
    timed bare bare 1 "bare$i"
    settle
    timed tenon tenon_k8s "$WORK/one" "$WORK/store-one"
    succeeded "$RAW/tenon.out"
    settle
    timed kubectl with_kubectl "kubectl$i"
    settle
    timed bare_fan bare "$FAN" "fan$i"
    settle
    timed tenon_fan tenon_k8s "$WORK/fan" "$WORK/store-fan"
    succeeded "$RAW/tenon_fan.out"
    settle
    if [ -n "${BASE_BIN:-}" ]; then
        timed base tenon_k8s "$WORK/one" "$WORK/store-base-one" "$BASE_BIN"
        succeeded "$RAW/base.out"
        settle
        if [ "${BASE_FAN:-1}" != 0 ]; then
            timed base_fan tenon_k8s "$WORK/fan" "$WORK/store-base-fan" "$BASE_BIN"
            succeeded "$RAW/base_fan.out"
            settle
        fi
    fi
done
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- report
# stat CASE: "median | min | max" in seconds
stat() {
    printf '%s\n' ${TIMES[$1]} | sort -g | awk -v m="$(median ${TIMES[$1]})" \
        '{a[NR] = $1} END {printf "%.2f | %.2f | %.2f", m / 1e6, a[1] / 1e6, a[NR] / 1e6}'
}
ratio() { calc "f'{$(med "$1") / $(med "$2"):.2f}x'"; }
# paired A B: the median of A/B over the reps (each rep measures both back to back, so a load
# that comes and goes hits both alike), as "median (min-max)"
paired() {
    "$PY" -c 'import statistics, sys; a, b = ([float(x) for x in s.split()] for s in sys.argv[1:3]); r = sorted(x / y for x, y in zip(a, b)); print(f"{statistics.median(r):.2f}x ({r[0]:.2f}-{r[-1]:.2f})")' "${TIMES[$1]}" "${TIMES[$2]}"
}
paired_med() { "$PY" -c 'import statistics, sys; a, b = ([float(x) for x in s.split()] for s in sys.argv[1:3]); print(statistics.median(x / y for x, y in zip(a, b)))' "${TIMES[$1]}" "${TIMES[$2]}"; }
verdict() { calc "'**met**' if $1 else '**missed**'"; }
SERVER=$(kubectl version -o json 2>/dev/null | "$PY" -c 'import json, sys; print(json.load(sys.stdin)["serverVersion"]["gitVersion"])' || echo "?")
OUT_MD="$WORK/RESULTS-k8s.md"
{
    echo "# The Kubernetes executor against bare pods (issue 17: overhead)"
    echo
    echo "Generated by \`bench/compare-k8s.sh\` on $(date -u +%Y-%m-%dT%H:%MZ), $REPS reps, alternating."
    echo "Machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(free -g | awk '/Mem:/ {print $2}') GiB RAM;"
    echo "cluster: Kubernetes $SERVER, $(kubectl get nodes --no-headers 2>/dev/null | wc -l) node(s), on the same machine (shared with other work)."
    echo "$(tenon_label); image $IMAGE."
    echo "Load average at start: $LOAD_START; at end: $LOAD_END (2 CPUs: above ~0.5 means something else was running)."
    echo
    echo "| case | median s | min s | max s | vs bare (medians) | vs bare, per rep: median (min-max) |"
    echo "|---|---:|---:|---:|---:|---:|"
    echo "| bare pod \`echo hi\`: create, watch to Succeeded, delete (API calls, no client start-up) | $(stat bare) | 1.00x | |"
    echo "| the same with kubectl (create, wait, delete: three client starts) | $(stat kubectl) | $(ratio kubectl bare) | $(paired kubectl bare) |"
    echo "| \`tenon run\` one-step TaskRun (\`echo hi\`), \`--executor kubernetes --no-cache\` | $(stat tenon) | $(ratio tenon bare) | $(paired tenon bare) |"
    echo "| $FAN bare pods created at once, watched until all Succeeded, deleted | $(stat bare_fan) | $(ratio bare_fan bare) | |"
    echo "| \`tenon run\` Pipeline of $FAN independent one-step tasks, \`--no-cache\` | $(stat tenon_fan) | $(ratio tenon_fan bare) | $(paired tenon_fan bare_fan) vs $FAN bare pods |"
    if [ -n "${BASE_BIN:-}" ]; then
        echo "| base tenon ($BASE_BIN${BASE_LABEL:+, $BASE_LABEL}): the one-step TaskRun | $(stat base) | $(ratio base bare) | $(paired base bare) |"
        if [ "${BASE_FAN:-1}" != 0 ]; then
            echo "| base tenon: the $FAN-task Pipeline (its default --parallel) | $(stat base_fan) | $(ratio base_fan bare) | $(paired base_fan bare_fan) vs $FAN bare pods |"
        fi
    fi
    echo
    echo "| goal | measured | verdict |"
    echo "|---|---|---|"
    echo "| one TaskRun within 1.2x a bare pod (per-rep ratio, median) | $(paired tenon bare); medians $(ms tenon) vs $(ms bare) ms | $(verdict "$(paired_med tenon bare) <= 1.2") |"
    echo "| $FAN-way fan-out about one pod's time plus a small constant (here: within $FAN bare pods at once + 1 s) | $(ms tenon_fan) vs $(ms bare_fan) ms ($(ratio tenon_fan bare_fan)) | $(verdict "$(med tenon_fan) <= $(med bare_fan) + 1.0") |"
    echo
    echo "Raw wall times (µs), in rep order:"
    echo
    for c in bare kubectl tenon bare_fan tenon_fan base base_fan; do
        if [ -n "${TIMES[$c]:-}" ]; then echo "- $c: ${TIMES[$c]}"; fi
    done
} > "$OUT_MD"

cat "$OUT_MD"
if [ "$WRITE_RESULTS" = 1 ]; then
    cp "$OUT_MD" "$HERE/RESULTS-k8s.md"
    log "saved $HERE/RESULTS-k8s.md"
fi
