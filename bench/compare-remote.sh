#!/usr/bin/env bash
# Shared cache through an OCI registry, in one run and side by side: tenon's `--cache-repo`
# against a DVC local-directory remote and against `curl` to the same registry, on the
# scenario of compare-dvc.sh (10,000 small files, one large model, 3 stages; bench/lib/scenario.sh).
#
#   nice -n 19 bash bench/compare-remote.sh          # full: 10 x 1,000 files, 1 GiB model and probe, 3 reps
#   nice -n 19 bash bench/compare-remote.sh --quick  # smoke test: 10 x 100 files, 64 MiB, 1 rep
#
# Options: --quick, --reps N, --keep (keep the work dir), --workdir DIR, --no-build,
#          --no-results (do not write bench/RESULTS-remote.md).
# Env: TENON_BIN (use this binary, no build; TENON_LABEL says what it is), DVC_VERSION
#      (default 3.67.1), REGISTRY_BIN (default /usr/bin/docker-registry, Debian's package).
#
# Machines A and B are two directories and two stores on this host. The data and the model are
# committed to git (for both tools), so B's `git clone` has the inputs and neither tool fetches
# them: what is timed on B is getting the outputs and deciding that nothing has to run.
#   registry  docker-registry on 127.0.0.1:<free port>, its own config (filesystem storage in
#             the work dir, deletes enabled), killed at exit; URL oci+http://127.0.0.1:P/bench/cache
#   A         tenon run, empty store, no remote ("A cold"); tenon run --cache-repo, empty store,
#             empty repository ("A cold + push"; each rep but the last pushes to a throw-away
#             repository bench/cache-repN, so every rep uploads)
#   B         fresh `git clone` of A, empty store, same --cache-repo; `--output json` must show
#             every task Cached from the registry (cachedFrom.remote, no remote warning) and the
#             outputs must be byte-identical to A's (sha256), else exit 1. Its floor: the same run
#             with a copy of A's store and no remote (every input hashed again, local restore).
#   DVC       the same stages in dvc.yaml; A: dvc repro, dvc push to a local directory remote,
#             commit dvc.lock; B: fresh clone, empty cache, timed `dvc pull && dvc repro`
#   transfer  the scenario's large file is an input, and caches push outputs, so a bench-only
#             one-task pipeline (probe) writes one output of MODEL_SIZE: a copy of the model
#             (base.bin, a hard link, deliberately not a declared input, so no run hashes it)
#             with the seed param stamped over its first 32 bytes (a new key and digest per
#             seed). tenon's upload = [probe run with --cache-repo, empty store, new seed] - [the
#             same run without a remote]; download = [probe on an empty store B with
#             --cache-repo, record in the registry] - [the same run hitting the record in the
#             local store]: both restore the output into the run dir, the difference is
#             fetching, verifying and storing it. curl: POST /v2/bench/curl/blobs/uploads/,
#             then PUT <Location>&digest=sha256:... -T model.bin; GET the blob -o /dev/null.
#             Also from the registry's own log: how long it spent on the blob requests.
# Times: median of N reps, wall clock; each timed command's peak RSS comes from /usr/bin/time.
# MB/s = 10^6 bytes per second. Files are in the page cache: this measures the tools and HTTP,
# not the disk. The full run needs about 11 GiB free in the work dir (checked first).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"

# shellcheck source=bench/lib/scenario.sh
. "$HERE/lib/scenario.sh"
# shellcheck source=bench/lib/measure.sh
. "$HERE/lib/measure.sh"
WORK="${TMPDIR:-/tmp}/tenon-bench-remote"
REGISTRY_BIN="${REGISTRY_BIN:-/usr/bin/docker-registry}"
bench_options "$@"
scenario_sizes
if [ "$QUICK" = 1 ]; then : "${REPS:=1}"; else : "${REPS:=3}"; fi

# ---------------------------------------------------------------- tools
[ -x /usr/bin/time ] || need_apt /usr/bin/time time || die "/usr/bin/time is required (apt-get install time)"
[ -x "$REGISTRY_BIN" ] || need_apt docker-registry docker-registry || die "no registry at $REGISTRY_BIN (apt-get install docker-registry)"
command -v curl >/dev/null || die "curl is required"
command -v openssl >/dev/null || die "openssl is required"
setup_tools
# only the flags below configure the shared cache
unset TENON_CACHE_REPO TENON_CACHE_READ_ONLY TENON_CACHE_CREDENTIALS_FILE TENON_CACHE_CA_FILE \
    TENON_CACHE_SIGN_KEY TENON_CACHE_VERIFY_KEY
export NO_COLOR=1

# ---------------------------------------------------------------- work dir and registry
rm -rf "$WORK"
mkdir -p "$WORK"
# at the peak (the probe's pull): the seed repo (2 copies of the model), the registry (one
# probe output per rep), two stores (object + restored copy) and one spare, plus 1 GiB; a
# shared machine's disk must not fill up
NEED_KIB=$(( ($(numfmt --from=iec "$MODEL_SIZE") * (7 + REPS) + (1 << 30)) / 1024 ))
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

log "starting $REGISTRY_BIN"
start_registry
BASE="http://127.0.0.1:$REG_PORT"
CACHE_URL="oci+http://127.0.0.1:$REG_PORT/bench/cache"
log "registry at $BASE (pid $REG_PID)"

# ---------------------------------------------------------------- timing helpers
RAW="$WORK/raw"
mkdir -p "$RAW"
declare -A TIMES  # case -> wall microseconds of each rep
declare -A PEAK   # case -> peak RSS KiB of the last rep

# srv CASE: median registry-side seconds of a case's reps
srv() { median ${SRV[$1]}; }

# reg_mark; reg_requests MARK: "METHOD status xN, ..." of the requests the registry logged since MARK
reg_mark() { wc -l < "$REG/registry.log"; }
reg_requests() {
    tail -n +"$(($1 + 1))" "$REG/registry.log" |
        sed -n '/msg="response completed/s/.*http\.request\.method=\([A-Z]*\).*http\.response\.status=\([0-9]*\).*/\1 \2/p' |
        sort | uniq -c | awk '{printf "%s%s %s x%s", (NR > 1 ? ", " : ""), $2, $3, $1} END {if (!NR) printf "none"}'
}

# reg_blob_secs MARK up|down: seconds the registry spent, by its own log since MARK, on blob
# uploads (PATCH and PUT under /blobs/uploads/) or on downloads of blobs of 1 MiB or more:
# the transfer as the server saw it, without the client's start-up and bookkeeping.
reg_blob_secs() {
    tail -n +"$(($1 + 1))" "$REG/registry.log" | "$PY" -c '
import re, sys
want = sys.argv[1]
unit = {"ns": 1e-9, "\u00b5s": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
def secs(d):
    return sum(float(v) * unit[u] for v, u in re.findall(r"([0-9.]+)(ns|\u00b5s|us|ms|s|m|h)", d))
total = 0.0
for line in sys.stdin:
    if "msg=\"response completed" not in line:
        continue
    f = dict(re.findall(r"([a-z.]+)=(\"[^\"]*\"|\S+)", line))
    f = {k: v.strip("\"") for k, v in f.items()}
    m, uri = f.get("http.request.method"), f.get("http.request.uri", "")
    if want == "up" and m in ("PATCH", "PUT") and "/blobs/uploads/" in uri:
        total += secs(f["http.response.duration"])
    elif want == "down" and m == "GET" and "/blobs/sha256:" in uri and int(f.get("http.response.written", 0)) >= 1 << 20:
        total += secs(f["http.response.duration"])
print(f"{total:.6f}")
' "$2"
}

# ---------------------------------------------------------------- scenario
SEED="$WORK/seed"       # the data and model, committed once; every repo below is a clone of it
TA="$WORK/tenon-a"      # machine A, tenon
TB="$WORK/tenon-b"      # machine B, tenon (a fresh clone of TA per rep)
DA="$WORK/dvc-a"        # machine A, DVC
DB="$WORK/dvc-b"        # machine B, DVC (a fresh clone of DA per rep)
GIT=(git -c core.compression=0 -c core.looseCompression=0 -c user.email=bench@example.invalid -c user.name=bench)

log "scenario: $NFILES files of 1 KiB in $DIRS dirs, model of $MODEL_SIZE (committed to git)"
mkdir -p "$SEED"
"${GIT[@]}" -C "$SEED" init -q
scenario_data "$SEED"
"${GIT[@]}" -C "$SEED" add -A
"${GIT[@]}" -C "$SEED" commit -q -m "bench data"
MODEL="$SEED/model/model.bin"
MODEL_BYTES=$(stat -c %s "$MODEL")

git clone -q "$SEED" "$TA"
scenario_tenon_pipeline "$TA"
"${GIT[@]}" -C "$TA" add -A
"${GIT[@]}" -C "$TA" commit -q -m "tenon pipeline"

git clone -q "$SEED" "$DA"
scenario_dvc "$DA" "$WORK/dvc-site-a"
"${GIT[@]}" -C "$DA" add -A
"${GIT[@]}" -C "$DA" commit -q -m "dvc pipeline"

# the transfer probe: one task, one output of MODEL_SIZE (see the header)
# shellcheck disable=SC2016
PROBE_CMD='cp base.bin "$OUT/blob/blob.bin"; printf "%032d" "$(params.seed)" | dd of="$OUT/blob/blob.bin" bs=32 count=1 conv=notrunc 2>/dev/null'
probe_yaml() { # DIR
    mkdir -p "$1"
    {
        cat <<EOF
apiVersion: tekton.dev/v1
kind: PipelineRun
metadata:
  name: probe-run
  annotations:
    tenon.dev/repo-workspace: source
spec:
  params:
    - {name: seed, value: "0"}
EOF
        run_workspaces 2Gi
        cat <<EOF
  pipelineSpec:
    params:
      - name: seed
    workspaces:
      - name: source
      - name: work
    tasks:
EOF
        tenon_task write-blob "" "probe.yaml" blob "$PROBE_CMD" seed | sed 's/^/  /'
    } > "$1/probe.yaml"
}
PA="$WORK/probe-a"
PB="$WORK/probe-b"
probe_yaml "$PA"
probe_yaml "$PB"
ln "$MODEL" "$PA/base.bin"
ln "$MODEL" "$PB/base.bin"

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- machine A, tenon
log "A: tenon run, empty store, no remote ($REPS reps)"
for ((i = 1; i <= REPS; i++)); do
    rm -rf "$WORK/store-a0"
    timed a_cold "$TENON" run "$TA" -q --store "$WORK/store-a0" --output json
done
A0_DIR=$(run_dir "$RAW/a_cold.out")
log "A: tenon run --cache-repo, empty store, empty repository ($REPS reps)"
for ((i = 1; i <= REPS; i++)); do
    url="$CACHE_URL"; [ "$i" = "$REPS" ] || url="$CACHE_URL-rep$i"
    rm -rf "$WORK/store-a"
    mark=$(reg_mark)
    timed a_push "$TENON" run "$TA" -q --store "$WORK/store-a" --cache-repo "$url" --output json
    A_STATS=$(check_report "$RAW/a_push.out" push 2>/dev/null) || { check_report "$RAW/a_push.out" push || true; die "A's push is wrong (stderr: $RAW/a_push.err)"; }
done
log "    A's push: $A_STATS"
A_REQ=$(reg_requests "$mark")
log "    registry requests of A's last push: $A_REQ"
A_DIR=$(run_dir "$RAW/a_push.out")
sums "$A_DIR/volumes/work" $STAGE_OUTPUTS > "$WORK/a.sums"
sums "$A0_DIR/volumes/work" $STAGE_OUTPUTS | cmp -s - "$WORK/a.sums" || die "A's outputs differ between the runs with and without a remote"
# (404 NAME_UNKNOWN when nothing was pushed)
TAGS=$(curl -sS "$BASE/v2/bench/cache/tags/list" | "$PY" -c 'import json, sys; print(len(json.load(sys.stdin).get("tags") or []))')
log "    bench/cache holds $TAGS tags after A's push"

# ---------------------------------------------------------------- machine B, tenon
log "B: fresh clone, empty store, tenon run --cache-repo ($REPS reps; every task must be Cached)"
for ((i = 1; i <= REPS; i++)); do
    rm -rf "$TB" "$WORK/store-b"
    git clone -q "$TA" "$TB"
    mark=$(reg_mark)
    timed b_tenon "$TENON" run "$TB" -q --store "$WORK/store-b" --cache-repo "$CACHE_URL" --output json
    B_STATS=$(check_report "$RAW/b_tenon.out" remote-hit) ||
        die "B: not every task was Cached from the registry (report: $RAW/b_tenon.out, stderr: $RAW/b_tenon.err)"
    B_DIR=$(run_dir "$RAW/b_tenon.out")
    sums "$B_DIR/volumes/work" $STAGE_OUTPUTS | cmp -s - "$WORK/a.sums" ||
        { sums "$B_DIR/volumes/work" $STAGE_OUTPUTS | diff "$WORK/a.sums" - >&2 || true; die "B's restored outputs differ from A's"; }
done
B_REQ=$(reg_requests "$mark")
# the floor of B's run: the same run on the fresh clone with a copy of A's store and no remote
# (its stat cache is keyed by inode, so every input is hashed again; the hits restore locally)
for ((i = 1; i <= REPS; i++)); do
    rm -rf "$WORK/store-bl"
    cp -a "$WORK/store-a" "$WORK/store-bl"
    timed b_local "$TENON" run "$TB" -q --store "$WORK/store-bl" --output json
    check_report "$RAW/b_local.out" local-hit 2>/dev/null || die "B with A's store: not every task Cached ($RAW/b_local.out)"
done
hashed() { "$PY" -c 'import json, sys; h = json.load(open(sys.argv[1]))["hashing"]; print("%d files, %.0f MiB" % (h["hashedFiles"], h["hashedBytes"] / 2**20))' "$1"; }
B_HASHED=$(hashed "$RAW/b_tenon.out")
B_LOCAL_HASHED=$(hashed "$RAW/b_local.out")
log "    all Cached, outputs byte-identical to A's; $B_STATS; registry requests of B's last run: $B_REQ"

# ---------------------------------------------------------------- DVC
log "DVC A: dvc repro, dvc push to a local directory remote"
(cd "$DA" && "$DVC" remote add -q -d r "$WORK/dvc-remote")
timed dvc_a_repro bash -c "cd '$DA' && '$DVC' repro"
timed dvc_a_push bash -c "cd '$DA' && '$DVC' push"
"${GIT[@]}" -C "$DA" add -A
"${GIT[@]}" -C "$DA" commit -q -m "dvc.lock"
sums "$DA/out" $STAGE_OUTPUTS | cmp -s - "$WORK/a.sums" || die "DVC's and tenon's outputs differ"
log "DVC B: fresh clone, empty cache, dvc pull && dvc repro ($REPS reps)"
for ((i = 1; i <= REPS; i++)); do
    rm -rf "$DB" "$WORK/dvc-site-b"
    git clone -q "$DA" "$DB"
    dvc_local_config "$DB" "$WORK/dvc-site-b"
    timed dvc_b bash -c "cd '$DB' && '$DVC' pull && '$DVC' repro"
    sums "$DB/out" $STAGE_OUTPUTS | cmp -s - "$WORK/a.sums" || die "DVC B's outputs differ from A's"
done
DVC_B_RAN=$(grep -c "Running stage" "$RAW/dvc_b.out" || true)
log "    DVC B ran $DVC_B_RAN stage(s) after the pull (0 expected)"
rm -rf "$TA" "$TB" "$DA" "$DB" "$WORK"/store-a* "$WORK"/store-b*  # (disk space)

# ---------------------------------------------------------------- transfer: curl
log "transfer floor: curl, $MODEL_SIZE blob ($REPS reps)"
MODEL_DIGEST=$(sha256sum "$MODEL" | cut -d' ' -f1)
curl_push() {
    local loc sep
    loc=$(curl -fsS -X POST -D - -o /dev/null "$BASE/v2/bench/curl/blobs/uploads/" |
        awk 'tolower($1) == "location:" {print $2}' | tr -d '\r')
    [ -n "$loc" ] || die "no Location from POST /v2/bench/curl/blobs/uploads/"
    case "$loc" in http*) ;; *) loc="$BASE$loc" ;; esac
    sep='?'; case "$loc" in *\?*) sep='&' ;; esac
    curl -fsS -X PUT -H 'Content-Type: application/octet-stream' -T "$MODEL" -o /dev/null \
        "$loc${sep}digest=sha256:$MODEL_DIGEST"
}
declare -A SRV  # case -> registry-side seconds of each rep
curl_verified() { # what a verified restore does at least: GET into a file and hash it
    curl -fsS "$BASE/v2/bench/curl/blobs/sha256:$MODEL_DIGEST" | tee "$WORK/curl-down.bin" | sha256sum | cut -d' ' -f1
}
for ((i = 1; i <= REPS; i++)); do
    mark=$(reg_mark)
    timed curl_up curl_push
    SRV[curl_up]+="$(reg_blob_secs "$mark" up) "
    mark=$(reg_mark)
    timed curl_down curl -fsS -o /dev/null -w '%{size_download}' "$BASE/v2/bench/curl/blobs/sha256:$MODEL_DIGEST"
    SRV[curl_down]+="$(reg_blob_secs "$mark" down) "
    [ "$(cat "$RAW/curl_down.out")" = "$MODEL_BYTES" ] || die "curl GET returned $(cat "$RAW/curl_down.out") bytes, not $MODEL_BYTES"
    rm -f "$WORK/curl-down.bin"
    timed curl_file curl_verified
    [ "$(cat "$RAW/curl_file.out")" = "$MODEL_DIGEST" ] || die "curl GET into a file: wrong digest"
    timed sha_floor openssl dgst -sha256 "$MODEL"
done
rm -f "$WORK/curl-down.bin"
# nothing reads the curl blob again: drop its bytes from the registry's storage (disk space)
rm -rf "$REG/data/docker/registry/v2/blobs/sha256/${MODEL_DIGEST:0:2}/$MODEL_DIGEST"

# ---------------------------------------------------------------- transfer: tenon
log "transfer: tenon probe with one $MODEL_SIZE output ($REPS reps each)"
for ((i = 1; i <= REPS; i++)); do
    rm -rf "$WORK/store-p0"
    timed probe_local "$TENON" run "$PA" -q --store "$WORK/store-p0" --param seed=0 --output json
    rm -rf "$WORK/store-p0"
    rm -rf "$WORK/store-pa"
    mark=$(reg_mark)
    timed probe_push "$TENON" run "$PA" -q --store "$WORK/store-pa" --param "seed=$i" --cache-repo "$CACHE_URL" --output json
    SRV[probe_push]+="$(reg_blob_secs "$mark" up) "
    PUSH_STATS=$(check_report "$RAW/probe_push.out" push 2>/dev/null) || { check_report "$RAW/probe_push.out" push || true; die "probe: the push is wrong (stderr: $RAW/probe_push.err)"; }
done
PUSH_REQ=$(reg_requests "$mark")
# the last seed pushed ($REPS) is in the registry and in store-pa
for ((i = 1; i <= REPS; i++)); do
    rm -rf "$WORK/store-pa/runs/probe-run"/*  # earlier run dirs' copies of the output (disk space)
    timed probe_hit "$TENON" run "$PA" -q --store "$WORK/store-pa" --param "seed=$REPS" --output json
    check_report "$RAW/probe_hit.out" local-hit 2>/dev/null || die "probe: the local rerun was not Cached ($RAW/probe_hit.out)"
    rm -rf "$WORK/store-pb"
    HIT_DIR=$(run_dir "$RAW/probe_hit.out")
    mark=$(reg_mark)
    timed probe_pull "$TENON" run "$PB" -q --store "$WORK/store-pb" --param "seed=$REPS" --cache-repo "$CACHE_URL" --output json
    SRV[probe_pull]+="$(reg_blob_secs "$mark" down) "
    PULL_STATS=$(check_report "$RAW/probe_pull.out" remote-hit 2>/dev/null) ||
        { check_report "$RAW/probe_pull.out" remote-hit || true; die "probe on B: not Cached from the registry ($RAW/probe_pull.out, $RAW/probe_pull.err)"; }
done
PULL_REQ=$(reg_requests "$mark")
cmp -s "$HIT_DIR/volumes/work/blob/blob.bin" "$(run_dir "$RAW/probe_pull.out")/volumes/work/blob/blob.bin" ||
    die "probe: B's restored blob differs from A's"
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- report
# MB/s of MODEL_BYTES in SECONDS; n/a when a difference of two runs came out <= 0 (noise)
mbps() { calc "f'{$MODEL_BYTES / $1 / 1e6:.0f}' if $1 > 0 else 'n/a'"; }
pct() { case "$1$2" in *n/a*) echo n/a ;; *) calc "f'{100 * $1 / $2:.0f}'" ;; esac; }
verdict() { calc "'**met**' if $1 else '**missed**'"; }
pct_verdict() { case "$1" in n/a) echo "n/a (rerun with more --reps)" ;; *) verdict "$1 >= 80" ;; esac; }
UP_T=$(calc "$(med probe_push) - $(med probe_local)")
DOWN_T=$(calc "$(med probe_pull) - $(med probe_hit)")
UP_TENON=$(mbps "$UP_T"); DOWN_TENON=$(mbps "$DOWN_T")
UP_CURL=$(mbps "$(med curl_up)"); DOWN_CURL=$(mbps "$(med curl_down)")
UP_PCT=$(pct "$UP_TENON" "$UP_CURL")
DOWN_PCT=$(pct "$DOWN_TENON" "$DOWN_CURL")
FILE_CURL=$(mbps "$(med curl_file)")
SRV_UP_CURL=$(mbps "$(srv curl_up)"); SRV_UP_TENON=$(mbps "$(srv probe_push)")
SRV_DOWN_CURL=$(mbps "$(srv curl_down)"); SRV_DOWN_TENON=$(mbps "$(srv probe_pull)")
secs() { calc "f'{$1:.3f}'"; }
SPEED_A=$(calc "f'{$(med a_cold) / $(med b_tenon):.2f}'")
SPEED_DVC=$(calc "f'{$(med dvc_b) / $(med b_tenon):.1f}'")
B_RSS=$(awk -v k="${PEAK[b_tenon]}" 'BEGIN {printf "%.1f MiB", k / 1024}')

OUT_MD="$WORK/RESULTS-remote.md"
{
    echo "# Shared cache: tenon --cache-repo vs a DVC remote vs curl"
    echo
    echo "Generated by \`bench/compare-remote.sh$([ "$QUICK" = 1 ] && echo ' --quick')\` on $(date -u +%Y-%m-%dT%H:%MZ)."
    echo "Machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(free -g | awk '/Mem:/ {print $2}') GiB RAM, $(findmnt -no FSTYPE -T "$WORK")."
    echo "$(tenon_label), DVC $("$DVC" --version), $("$REGISTRY_BIN" --version 2>&1 | awk '{print $1, $3}') on 127.0.0.1, $(curl --version | head -1 | awk '{print $1, $2}')."
    echo "Load average at start: $LOAD_START; at end: $LOAD_END (2 CPUs: above ~0.5 means something else was running)."
    echo "Scenario: $NFILES files of 1 KiB + one $MODEL_SIZE model, committed to git; 3 stages. Machine B: a fresh"
    echo "\`git clone\` and an empty store (DVC: an empty cache) against the same registry (DVC: a local-directory remote)."
    echo "Median of $REPS rep(s), wall ms; files in the page cache."
    echo
    echo "| case | ms |"
    echo "|---|---:|"
    echo "| A: \`tenon run\`, empty store, no remote (A cold) | $(ms a_cold) |"
    echo "| A: \`tenon run --cache-repo\`, empty store, empty repository (A cold + push; $TAGS tags pushed) | $(ms a_push) |"
    echo "| B: \`tenon run --cache-repo\`, fresh clone, empty store (all tasks Cached, outputs identical) | $(ms b_tenon) |"
    echo "| B: \`tenon run --cache-repo\` above hashed $B_HASHED | |"
    echo "| B: \`tenon run\`, fresh clone, a copy of A's store, no remote (hashed $B_LOCAL_HASHED; the floor of B's run) | $(ms b_local) |"
    echo "| A: \`dvc repro\`, empty cache (1 run) | $(ms dvc_a_repro) |"
    echo "| A: \`dvc push\` to the directory remote (1 run) | $(ms dvc_a_push) |"
    echo "| B: \`dvc pull && dvc repro\`, fresh clone, empty cache ($DVC_B_RAN stages re-ran) | $(ms dvc_b) |"
    echo
    echo "| transfer of $MODEL_SIZE ($MODEL_BYTES bytes) | wall s | MB/s | tenon / curl | registry-side s | MB/s | tenon / curl |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
    echo "| curl up: POST + \`PUT ?digest=\` with \`-T\` | $(secs "$(med curl_up)") | $UP_CURL | | $(secs "$(srv curl_up)") | $SRV_UP_CURL | |"
    echo "| tenon up: probe run with --cache-repo ($(ms probe_push) ms) - without ($(ms probe_local) ms) | $(secs "$UP_T") | $UP_TENON | $UP_PCT % | $(secs "$(srv probe_push)") | $SRV_UP_TENON | $(pct "$SRV_UP_TENON" "$SRV_UP_CURL") % |"
    echo "| curl down: GET \`-o /dev/null\` | $(secs "$(med curl_down)") | $DOWN_CURL | | $(secs "$(srv curl_down)") | $SRV_DOWN_CURL | |"
    echo "| SHA-256 alone: \`openssl dgst -sha256\` of the blob (what verifying a download costs at least) | $(secs "$(med sha_floor)") | $(mbps "$(med sha_floor)") | | | | |"
    echo "| curl down into a file, hashed: \`curl \| tee FILE \| sha256sum\` | $(secs "$(med curl_file)") | $FILE_CURL | | | | |"
    echo "| tenon down: probe on empty store B with --cache-repo ($(ms probe_pull) ms) - local hit ($(ms probe_hit) ms) | $(secs "$DOWN_T") | $DOWN_TENON | $DOWN_PCT % | $(secs "$(srv probe_pull)") | $SRV_DOWN_TENON | $(pct "$SRV_DOWN_TENON" "$SRV_DOWN_CURL") % |"
    echo
    echo "| target | measured | verdict |"
    echo "|---|---|---|"
    echo "| B: every task Cached, outputs byte-identical to A's | yes ($REPS of $REPS reps) | **met** |"
    echo "| B vs A cold | ${SPEED_A}x faster ($(ms b_tenon) vs $(ms a_cold) ms) | (no goal) |"
    echo "| B >= 10x faster than DVC's pull + repro | ${SPEED_DVC}x ($(ms b_tenon) vs $(ms dvc_b) ms) | $(verdict "$(med dvc_b) >= 10 * $(med b_tenon)") |"
    echo "| upload >= 80 % of curl's throughput | $UP_PCT % ($UP_TENON vs $UP_CURL MB/s) | $(pct_verdict "$UP_PCT") |"
    echo "| download >= 80 % of curl's throughput | $DOWN_PCT % ($DOWN_TENON vs $DOWN_CURL MB/s) | $(pct_verdict "$DOWN_PCT") |"
    echo "| peak RSS of B's \`tenon run\` | $B_RSS | (no goal) |"
    echo "| peak RSS of the probe's $MODEL_SIZE push / pull | $(awk -v a="${PEAK[probe_push]}" -v b="${PEAK[probe_pull]}" 'BEGIN {printf "%.1f / %.1f MiB", a / 1024, b / 1024}') | (no goal) |"
    echo
    echo "tenon's remoteCache counters (last rep): A's push: $A_STATS; B: $B_STATS;"
    echo "the probe's push: $PUSH_STATS; its pull on B: $PULL_STATS."
    echo "Registry requests (method status xcount), last rep: A's push: $A_REQ; B's run: $B_REQ;"
    echo "the probe's push: $PUSH_REQ; its pull on B: $PULL_REQ."
    echo
    echo "Notes: tenon's wall transfer rows are differences of two whole runs (see the script's header),"
    echo "so they include tenon's hashing and the write into the store; curl writes nothing (\`-o /dev/null\`)."
    echo "Registry-side: the summed \`http.response.duration\` of the blob PATCH/PUT (up) or of the GET of"
    echo "the $MODEL_SIZE blob (down) in the registry's log, i.e. how long the server was busy with the bytes."
    echo "The goals (>= 80 %) are judged on the wall columns."
    echo "DVC's B time includes hashing the inputs (DVC has no state on a fresh clone); so does tenon's."
} > "$OUT_MD"

cat "$OUT_MD"
if [ "$WRITE_RESULTS" = 1 ]; then
    cp "$OUT_MD" "$HERE/RESULTS-remote.md"
    log "saved $HERE/RESULTS-remote.md"
fi
