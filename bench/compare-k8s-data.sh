#!/usr/bin/env bash
# GB-size data on the Kubernetes executor (issue 17): a model bound to a one-step task on the
# test cluster, through the API server (exec streaming) and from a registry (the data plane),
# against `kubectl cp` of the same file into a busybox pod, side by side in one run
# (alternating), with tenon's wall time, phases and peak RSS.
#
#   nice -n 19 bash bench/compare-k8s-data.sh                 # 1 GiB model, 3 reps
#   SIZE=64M bash bench/compare-k8s-data.sh --quick --no-results   # a smoke test
#
# Options: --quick (64 MiB, 1 rep), --reps N (default 3), --keep, --workdir DIR, --no-build,
#          --no-results (do not write bench/RESULTS-k8s-data.md).
# Env: SIZE (the model's size, default 1G), TENON_BIN (use this binary, no build; TENON_LABEL
#      says what it is), KUBECONFIG (default /var/lib/tenon-k8s/admin.kubeconfig, the test
#      cluster's), IMAGE (default local/busybox:1.35, on the test cluster), K8S_DIR (the test
#      cluster's folder with its `image` and `ctr` tools, default ../shared/k8s), REGISTRY=0
#      (skip the registry cases).
#
# Every case works in a namespace of its own (created here, deleted at the end). The cases:
#   tenon in      `tenon run --executor kubernetes --no-cache`: a PipelineRun whose task binds the
#                 repository (the model, read-only) and runs `sha256sum` on it in one step; the
#                 result must be the model's digest. Wall time and peak RSS (/usr/bin/time), and
#                 the phases tenon logs at TENON_LOG=tenon=debug (upload, step, read-back).
#   tenon in+out  the same task also writes a copy of the model to a writable workspace (a PVC
#                 copied from the store, --k8s-copy-pvc), which tenon reads back and writes to
#                 the host; both digests are checked.
#   kubectl       a busybox pod (create, wait Ready: timed apart), `kubectl cp` of the model into
#                 it, `kubectl exec sha256sum` (checked), `kubectl cp` of it back out (checked),
#                 pod deleted: the same bytes through the same API server, with kubectl's RSS.
#   tenon reg     the `tenon in` task with the registry data plane: a registry pod (Debian's
#                 docker-registry as an image) that task pods reach at its pod IP and tenon through
#                 `kubectl port-forward`; tenon's own image (this binary) runs the init container
#                 that fetches the model by digest. The first run (`reg push`, once) finds the
#                 registry empty and pushes the model through the port-forward; each rep then
#                 finds it there, so no model byte goes through the API server.
# Times: median of N reps, wall clock; files in the page cache.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"

# shellcheck source=bench/lib/scenario.sh
. "$HERE/lib/scenario.sh"
# shellcheck source=bench/lib/measure.sh
. "$HERE/lib/measure.sh"
WORK="${TMPDIR:-/tmp}/tenon-bench-k8s-data"
bench_options "$@"
if [ "$QUICK" = 1 ]; then MODEL_SIZE="${SIZE:-64M}"; : "${REPS:=1}"; else MODEL_SIZE="${SIZE:-1G}"; fi
: "${REPS:=3}"
export KUBECONFIG="${KUBECONFIG:-/var/lib/tenon-k8s/admin.kubeconfig}"
IMAGE="${IMAGE:-local/busybox:1.35}"
K8S_DIR="${K8S_DIR:-$REPO/../shared/k8s}"
REGISTRY="${REGISTRY:-1}"

# ---------------------------------------------------------------- tools
[ -x /usr/bin/time ] || need_apt /usr/bin/time time || die "/usr/bin/time is required (apt-get install time)"
command -v kubectl >/dev/null || die "kubectl is required"
command -v "$PY" >/dev/null || die "python3 is required"
setup_tenon
kubectl get nodes >/dev/null || die "the cluster of $KUBECONFIG does not answer"
unset TENON_EXECUTOR TENON_K8S_NAMESPACE TENON_K8S_KUBECONFIG
export NO_COLOR=1

# ---------------------------------------------------------------- work dir, namespace
rm -rf "$WORK"
mkdir -p "$WORK"
MODEL_BYTES=$(numfmt --from=iec "$MODEL_SIZE")
# the model, the written-back copy, one unpacked copy while it is compared, kubectl's copy back
NEED_KIB=$(( (MODEL_BYTES * 4 + (1 << 30)) / 1024 ))
FREE_KIB=$(df --output=avail -k "$WORK" | tail -1)
[ "$FREE_KIB" -ge "$NEED_KIB" ] || die "$WORK needs about $((NEED_KIB >> 20)) GiB free, it has $((FREE_KIB >> 20)) GiB"
NS="tenon-bench-data-$(head -c 3 /dev/urandom | od -An -tx1 | tr -d ' \n')"
cleanup() {
    if [ -n "${PF_PID:-}" ]; then kill "$PF_PID" 2>/dev/null || true; fi
    kubectl delete namespace "$NS" --wait=false >/dev/null 2>&1 || true
    if [ "$KEEP" = 0 ]; then rm -rf "$WORK"; else echo "kept $WORK" >&2; fi
}
trap cleanup EXIT
kubectl create namespace "$NS" >/dev/null
RAW="$WORK/raw"
mkdir -p "$RAW"
declare -A TIMES PEAK

# ---------------------------------------------------------------- scenario
log "scenario: a $MODEL_SIZE model ($MODEL_BYTES bytes), namespace $NS, image $IMAGE"
SRC="$WORK/repo"
mkdir -p "$SRC"
head -c "$MODEL_BYTES" /dev/urandom > "$SRC/model.bin"
WANT_IN=$(sha256sum < "$SRC/model.bin" | cut -d' ' -f1)
WANT_OUT=$( (cat "$SRC/model.bin"; echo tail) | sha256sum | cut -d' ' -f1)
pipeline() { # NAME OUT: a PipelineRun; OUT=1 also writes <data>/out/copy.bin (the model + "tail")
    cat <<EOF
apiVersion: tekton.dev/v1
kind: PipelineRun
metadata:
  name: $1
  annotations:
    tenon.dev/repo-workspace: source
spec:
  workspaces:
    - {name: source, emptyDir: {}}
    - {name: data, persistentVolumeClaim: {claimName: data}}
  pipelineSpec:
    workspaces: [{name: source}, {name: data}]
    tasks:
      - name: use
        workspaces: [{name: source, workspace: source}, {name: data, workspace: data}]
        taskSpec:
          workspaces: [{name: source, readOnly: true}, {name: data, readOnly: $([ "$2" = 1 ] && echo false || echo true)}]
          results: [{name: insum}, {name: outsum}]
          steps:
            - name: sum
              image: $IMAGE
              script: |
                set -e
                sha256sum \$(workspaces.source.path)/model.bin | cut -d' ' -f1 | tr -d '\n' > \$(results.insum.path)
                if [ $2 = 1 ]; then
                  mkdir -p \$(workspaces.data.path)/out
                  { cat \$(workspaces.source.path)/model.bin; echo tail; } > \$(workspaces.data.path)/out/copy.bin
                  sha256sum \$(workspaces.data.path)/out/copy.bin | cut -d' ' -f1 | tr -d '\n' > \$(results.outsum.path)
                else
                  printf none > \$(results.outsum.path)
                fi
EOF
}
mkdir -p "$WORK/in" "$WORK/inout"
ln "$SRC/model.bin" "$WORK/in/model.bin"
ln "$SRC/model.bin" "$WORK/inout/model.bin"
pipeline big-in 0 > "$WORK/in/p.yaml"
pipeline big-inout 1 > "$WORK/inout/p.yaml"

K8S=(--executor kubernetes --k8s-kubeconfig "$KUBECONFIG" --k8s-namespace "$NS" --k8s-copy-pvc)
# check_task CASE WANT_OUT: the report's task succeeded with the model's digest (and WANT_OUT)
check_task() {
    "$PY" - "$RAW/$1.out" "$WANT_IN" "$2" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))["runs"][0]
t = r["tasks"][0]
res = t.get("results", {})
if r["status"] != "Succeeded" or res.get("insum") != sys.argv[2] or res.get("outsum") != sys.argv[3]:
    sys.exit(f"{sys.argv[1]}: {r['status']} {t.get('message')} results {res}")
EOF
}
# phases CASE: the pod's phases from tenon's debug lines (ms since the pod was created, and the
# upload's and download's own durations)
phases() {
    "$PY" - "$RAW/$1.err" <<'EOF'
import re, sys
ms, size = {}, {}
for line in open(sys.argv[1], errors="replace"):
    m = re.search(r"(upload sent|download unpacked|workspaces uploaded|steps ended|files read back)\b(.*)", line)
    if m:
        f = dict(re.findall(r"(\w+)=(\d+)", m.group(2)))
        ms[m.group(1)] = int(f.get("ms", 0)) / 1000
        size[m.group(1)] = int(f.get("bytes", 0)) / 2**20
up, down = ms.get("upload sent", 0), ms.get("download unpacked", 0)
print(f"pod up {ms.get('workspaces uploaded', 0) - up:.1f} s; upload {size.get('upload sent', 0):.0f} MiB in {up:.1f} s"
      f" ({size.get('upload sent', 0) / max(up, 1e-3):.0f} MiB/s); step {ms.get('steps ended', 0) - ms.get('workspaces uploaded', 0):.1f} s;"
      f" download {size.get('download unpacked', 0):.0f} MiB in {down:.1f} s; read-back + write-back"
      f" {ms.get('files read back', 0) - ms.get('steps ended', 0):.1f} s")
EOF
}
tenon_case() { # CASE DIR WANT_OUT
    rm -rf "$WORK/store"
    timed "$1" env TENON_LOG=tenon=debug "$TENON" run "$2" -q --store "$WORK/store" --no-cache --output json "${K8S[@]}"
    check_task "$1" "$3" || die "$1: wrong outcome (stderr: $RAW/$1.err)"
    PHASES[$1]=$(phases "$1")
    if [ "$3" != none ]; then
        [ "$(sha256sum < "$WORK/store/pvc/data/out/copy.bin" | cut -d' ' -f1)" = "$3" ] ||
            die "$1: the copy written back to the host differs"
    fi
    rm -rf "$WORK/store"
}
declare -A PHASES
POD="cp-target"
kubectl_case() {
    kubectl -n "$NS" delete pod "$POD" --grace-period=0 --wait=true >/dev/null 2>&1 || true
    timed k_pod bash -c "kubectl -n '$NS' run '$POD' --image='$IMAGE' --image-pull-policy=IfNotPresent --restart=Never -- sleep 3600 >/dev/null &&
        kubectl -n '$NS' wait --for=condition=Ready pod/'$POD' --timeout=120s >/dev/null"
    timed k_cp_in kubectl -n "$NS" cp "$SRC/model.bin" "$POD:/tmp/model.bin"
    timed k_sum kubectl -n "$NS" exec "$POD" -- sha256sum /tmp/model.bin
    [ "$(cut -d' ' -f1 "$RAW/k_sum.out")" = "$WANT_IN" ] || die "kubectl: the pod's copy differs"
    kubectl -n "$NS" exec "$POD" -- sh -c 'mkdir -p /tmp/out && { cat /tmp/model.bin; echo tail; } > /tmp/out/copy.bin'
    rm -f "$WORK/k-copy.bin"
    timed k_cp_out kubectl -n "$NS" cp "$POD:/tmp/out/copy.bin" "$WORK/k-copy.bin"
    [ "$(sha256sum < "$WORK/k-copy.bin" | cut -d' ' -f1)" = "$WANT_OUT" ] || die "kubectl: the copy back differs"
    rm -f "$WORK/k-copy.bin"
    timed k_delete kubectl -n "$NS" delete pod "$POD" --grace-period=0 --force --wait=false
}

# ---------------------------------------------------------------- the registry data plane
REG=()
if [ "$REGISTRY" = 1 ]; then
    [ -x "$K8S_DIR/image" ] || die "no image tool at $K8S_DIR/image (set K8S_DIR, or REGISTRY=0)"
    [ -x /usr/bin/docker-registry ] || need_apt docker-registry docker-registry || die "docker-registry is required (apt-get install docker-registry)"
    "$K8S_DIR/ctr" images ls -q | grep -qx docker.io/local/registry:2.8 ||
        "$K8S_DIR/image" docker.io/local/registry:2.8 --binary /usr/bin/docker-registry >/dev/null
    TENON_IMAGE="docker.io/local/tenon:bench-$(sha256sum < "$TENON" | cut -c1-12)"
    "$K8S_DIR/ctr" images ls -q | grep -qx "$TENON_IMAGE" || "$K8S_DIR/image" "$TENON_IMAGE" --binary "$TENON" >/dev/null
    kubectl -n "$NS" apply -f - >/dev/null <<YAML
apiVersion: v1
kind: ConfigMap
metadata: {name: registry}
data:
  config.yml: |
    version: 0.1
    log: {level: warn}
    storage: {filesystem: {rootdirectory: /var/lib/registry}}
    http: {addr: 0.0.0.0:5000}
---
apiVersion: v1
kind: Pod
metadata: {name: registry}
spec:
  containers:
    - {name: registry, image: local/registry:2.8, imagePullPolicy: Never, args: [serve, /etc/registry/config.yml],
       volumeMounts: [{name: storage, mountPath: /var/lib/registry}, {name: config, mountPath: /etc/registry}]}
  volumes: [{name: storage, emptyDir: {}}, {name: config, configMap: {name: registry}}]
YAML
    kubectl -n "$NS" wait --for=condition=Ready pod/registry --timeout=120s >/dev/null
    REG_IP=$(kubectl -n "$NS" get pod registry -o jsonpath='{.status.podIP}')
    kubectl -n "$NS" port-forward pod/registry :5000 > "$RAW/port-forward.out" 2>&1 &
    PF_PID=$!
    for _ in $(seq 100); do grep -q 'Forwarding from 127.0.0.1' "$RAW/port-forward.out" && break; sleep 0.1; done
    REG_PORT=$(sed -n 's/^Forwarding from 127.0.0.1:\([0-9]*\) .*/\1/p' "$RAW/port-forward.out" | head -1)
    [ -n "$REG_PORT" ] || die "kubectl port-forward: $(cat "$RAW/port-forward.out")"
    REG=(--cache-repo "oci+http://127.0.0.1:$REG_PORT/tenon/data" --k8s-data-registry "oci+http://$REG_IP:5000/tenon/data"
         --k8s-tenon-image "${TENON_IMAGE#docker.io/}")
    log "registry pod at $REG_IP:5000, port-forward 127.0.0.1:$REG_PORT; tenon image $TENON_IMAGE"
fi
# reg_case CASE PUSHED: the task with the data plane; its debug line must say the model came
# from the registry (PUSHED: the bytes tenon pushed first), and no exec upload may happen
reg_case() {
    rm -rf "$WORK/store"
    timed "$1" env TENON_LOG=tenon=debug "$TENON" run "$WORK/in" -q --store "$WORK/store" --no-cache --output json "${K8S[@]}" "${REG[@]}"
    check_task "$1" none || die "$1: wrong outcome (stderr: $RAW/$1.err)"
    grep -q "data plane: inputs from the registry.* files=1 bytes=$MODEL_BYTES pushed=$2 " "$RAW/$1.err" ||
        die "$1: the model did not come from the registry (stderr: $RAW/$1.err)"
    if grep -q "upload started" "$RAW/$1.err"; then die "$1: an exec upload happened"; fi
    rm -rf "$WORK/store"
}

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
if [ "$REGISTRY" = 1 ]; then
    log "the registry is empty: the first run pushes the model"
    reg_case t_reg_push "$MODEL_BYTES"
fi
for ((i = 1; i <= REPS; i++)); do
    log "rep $i of $REPS"
    if ((i % 2)); then
        tenon_case t_in "$WORK/in" none
        if [ "$REGISTRY" = 1 ]; then reg_case t_reg 0; fi
        kubectl_case
        tenon_case t_inout "$WORK/inout" "$WANT_OUT"
    else
        tenon_case t_inout "$WORK/inout" "$WANT_OUT"
        kubectl_case
        if [ "$REGISTRY" = 1 ]; then reg_case t_reg 0; fi
        tenon_case t_in "$WORK/in" none
    fi
done
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- report
mib() { calc "f'{$1 / 1024:.0f}'"; }
rate() { calc "f'{$MODEL_BYTES / 2**20 / $1:.0f}'"; } # SECONDS -> MiB/s
s() { calc "f'{$(med "$1"):.1f}'"; }
K_IN=$(calc "$(med k_pod) + $(med k_cp_in) + $(med k_sum) + $(med k_delete)")
K_INOUT=$(calc "$K_IN + $(med k_cp_out)")
verdict() { calc "'**met**' if $1 else '**missed**'"; }
OUT_MD="$WORK/RESULTS-k8s-data.md"
{
    echo "# GB-size data on the Kubernetes executor: exec streaming, the registry data plane, kubectl cp"
    echo
    echo "Generated by \`bench/compare-k8s-data.sh$([ "$QUICK" = 1 ] && echo ' --quick')\`${SIZE:+ with SIZE=$SIZE} on $(date -u +%Y-%m-%dT%H:%MZ)."
    echo "Machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(free -g | awk '/Mem:/ {print $2}') GiB RAM, $(findmnt -no FSTYPE -T "$WORK")."
    echo "$(tenon_label), $(kubectl version --client 2>/dev/null | head -1), cluster $(kubectl version 2>/dev/null | awk '/Server Version/ {print $3}') (single node, the same machine)."
    echo "Load average at start: $LOAD_START; at end: $LOAD_END (2 CPUs: above ~0.5 means something else was running)."
    echo "Model: $MODEL_SIZE ($MODEL_BYTES bytes, random). Median of $REPS rep(s), alternating; wall seconds; files in the page cache."
    echo
    echo "| case | s | peak RSS MiB | notes |"
    echo "|---|---:|---:|---|"
    echo "| tenon: one-step task, model bound read-only, \`sha256sum\` in the pod | $(s t_in) | $(mib "${PEAK[t_in]}") | ${PHASES[t_in]} |"
    echo "| tenon: the same, and a copy of the model (+5 bytes) written to a workspace and back to the host | $(s t_inout) | $(mib "${PEAK[t_inout]}") | ${PHASES[t_inout]} |"
    if [ "$REGISTRY" = 1 ]; then
        echo "| tenon reg: the \`tenon in\` task, the model already in the registry and fetched by the init container (no model byte through the API server) | $(s t_reg) | $(mib "${PEAK[t_reg]}") | registry pod; init container of \`${TENON_IMAGE#docker.io/}\` |"
        echo "| tenon reg push: the same with the registry empty (tenon first pushes the model through \`kubectl port-forward\`; 1 run) | $(s t_reg_push) | $(mib "${PEAK[t_reg_push]}") | tenon in the cluster would push to the registry directly |"
    fi
    echo "| kubectl: \`run\` a busybox pod, wait Ready | $(s k_pod) | | |"
    echo "| kubectl: \`kubectl cp\` the model in | $(s k_cp_in) | $(mib "${PEAK[k_cp_in]}") | $(rate "$(med k_cp_in)") MiB/s |"
    echo "| kubectl: \`kubectl exec sha256sum\` | $(s k_sum) | | |"
    echo "| kubectl: \`kubectl cp\` the copy out | $(s k_cp_out) | $(mib "${PEAK[k_cp_out]}") | $(rate "$(med k_cp_out)") MiB/s |"
    echo "| kubectl: delete the pod | $(s k_delete) | | |"
    echo "| kubectl total, same work as tenon in (pod + cp in + sha256sum + delete) | $(calc "f'{$K_IN:.1f}'") | | |"
    echo "| kubectl total, same work as tenon in+out (+ cp out) | $(calc "f'{$K_INOUT:.1f}'") | | |"
    echo
    echo "| goal | measured | verdict |"
    echo "|---|---|---|"
    echo "| tenon's peak RSS under 100 MiB, model in | $(mib "${PEAK[t_in]}") MiB | $(verdict "${PEAK[t_in]} < 100 * 1024") |"
    echo "| tenon's peak RSS under 100 MiB, model in and a copy out | $(mib "${PEAK[t_inout]}") MiB | $(verdict "${PEAK[t_inout]} < 100 * 1024") |"
    if [ "$REGISTRY" = 1 ]; then
        echo "| tenon's peak RSS under 100 MiB, model from the registry | $(mib "${PEAK[t_reg]}") MiB | $(verdict "${PEAK[t_reg]} < 100 * 1024") |"
        echo "| tenon reg vs kubectl (same work) | $(calc "f'{$(med t_reg) / $K_IN:.2f}'")x ($(s t_reg) vs $(calc "f'{$K_IN:.1f}'") s) | |"
        echo "| tenon reg vs tenon in (exec streaming) | $(calc "f'{$(med t_reg) / $(med t_in):.2f}'")x ($(s t_reg) vs $(s t_in) s) | |"
    fi
    echo "| tenon in vs kubectl (same work) | $(calc "f'{$(med t_in) / $K_IN:.2f}'")x ($(s t_in) vs $(calc "f'{$K_IN:.1f}'") s) | |"
    echo "| tenon in+out vs kubectl (same work) | $(calc "f'{$(med t_inout) / $K_INOUT:.2f}'")x ($(s t_inout) vs $(calc "f'{$K_INOUT:.1f}'") s) | |"
    echo
    echo "Peak RSS is of the last rep (\`/usr/bin/time -f %M\`)."
} > "$OUT_MD"

cat "$OUT_MD"
if [ "$WRITE_RESULTS" = 1 ]; then
    cp "$OUT_MD" "$HERE/RESULTS-k8s-data.md"
    log "saved $HERE/RESULTS-k8s-data.md"
fi
