#!/bin/bash
# Score FracAtlas on a real one-node Slurm cluster with a job array, kill a task mid-way,
# resubmit it, merge, and check that the merged scores equal a single-process run's.
#
#   scripts/slurm_check.sh            # needs root (installs packages, starts daemons)
#
# Installs Debian's slurmctld, slurmd, slurm-client and munge when missing, starts munged (as
# user munge), slurmctld and slurmd (as root, on ports of their own, with the config in
# scripts/slurm/slurm.conf.in), and stops everything it started on exit. The data: the first
# FRACATLAS_IMAGES (240) FracAtlas images from ../shared/data/fracatlas plus a few bad files.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
FRACATLAS=${FRACATLAS:-$ROOT/../shared/data/fracatlas}
N_IMAGES=${FRACATLAS_IMAGES:-240}
SHARDS=4
START=$(date +%s)
say() { echo "[slurm_check $(( $(date +%s) - START )) s] $*"; }
fail() { echo "slurm_check FAILED: $*" >&2; exit 1; }
trap 'echo "slurm_check FAILED at line $LINENO: $BASH_COMMAND" >&2' ERR

[ "$(id -u)" = 0 ] || fail "run as root (it installs packages and starts daemons)"
[ -d "$FRACATLAS/images" ] || fail "no FracAtlas at $FRACATLAS (set FRACATLAS)"

# 1. Packages.
missing=()
for tool in slurmctld:slurmctld slurmd:slurmd sbatch:slurm-client munged:munge; do
    command -v "${tool%%:*}" >/dev/null || [ -x "/usr/sbin/${tool%%:*}" ] || missing+=("${tool##*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# 2. The binaries (debug profile: dependencies are optimized there) and a small bundle.
say "building the score and quickstart examples"
cargo build -j "${CARGO_JOBS:-$(nproc)}" --example score --example quickstart
SCORE=$ROOT/target/debug/examples/score
WORK=$(mktemp -d /tmp/fracture-slurm.XXXXXX)
chmod 755 "$WORK"
STATE=$WORK/slurm
mkdir -p "$STATE/ctld" "$STATE/d"
STARTED_PIDS=()
cleanup() {
    set +e
    if [ -n "${SLURM_CONF:-}" ] && [ -f "$STATE/slurmctld.pid" ]; then
        scancel --quiet --user=root 2>/dev/null
    fi
    for pidfile in "$STATE/slurmd.pid" "$STATE/slurmctld.pid"; do
        [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null
    done
    for pid in "${STARTED_PIDS[@]}"; do kill "$pid" 2>/dev/null; done
    sleep 1
    [ -n "${MUNGE_STARTED:-}" ] && [ -f "$WORK/munged.pid" ] && kill "$(cat "$WORK/munged.pid")" 2>/dev/null
    if [ "${KEEP:-0}" = 1 ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

say "training a throwaway bundle (quickstart, 1 epoch)"
"$ROOT/target/debug/examples/quickstart" --out "$WORK/quickstart" --per-class 12 --epochs 1 \
    --image-size 64 --device cpu >"$WORK/quickstart.log" 2>&1 || { cat "$WORK/quickstart.log"; fail "quickstart"; }
MODEL=$WORK/quickstart/bundle

# 3. The input: FracAtlas images (links) and bad files.
INPUT=$WORK/archive
mkdir -p "$INPUT/fracatlas" "$INPUT/bad"
find "$FRACATLAS/images" -type f -name '*.jpg' | sort >"$WORK/all-images.txt"
sed -n "1,${N_IMAGES}p" "$WORK/all-images.txt" | while read -r f; do
    ln -s "$f" "$INPUT/fracatlas/$(basename "$(dirname "$f")")_$(basename "$f")"
done
: >"$INPUT/bad/empty.jpg"
echo "not an image" >"$INPUT/bad/notes.txt"
head -c 1000 "$(sed -n 1p "$WORK/all-images.txt")" >"$INPUT/bad/cut.jpg"
printf 'DICM' | dd of="$INPUT/bad/header-only.dcm" bs=1 seek=128 2>/dev/null
TOTAL=$(find -L "$INPUT" -type f | wc -l)
[ "$TOTAL" -ge 204 ] || fail "only $TOTAL inputs"
say "$TOTAL inputs"

# 4. munge and the cluster.
if ! pgrep -x munged >/dev/null; then
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    [ -s /etc/munge/munge.key ] || { dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 2>/dev/null; chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key; }
    runuser -u munge -- /usr/sbin/munged --pid-file="$WORK/munged.pid" 2>/dev/null \
        || runuser -u munge -- /usr/sbin/munged
    [ -f "$WORK/munged.pid" ] || pgrep -x -n munged >"$WORK/munged.pid"
    MUNGE_STARTED=1
fi
HOST=$(hostname -s)
sed -e "s|@HOST@|$HOST|g" -e "s|@CPUS@|$(nproc)|g" -e "s|@STATE@|$STATE|g" \
    -e "s|@PORT_CTLD@|${SLURMCTLD_PORT:-16817}|g" -e "s|@PORT_D@|${SLURMD_PORT:-16818}|g" \
    scripts/slurm/slurm.conf.in >"$STATE/slurm.conf"
export SLURM_CONF=$STATE/slurm.conf
/usr/sbin/slurmctld -f "$SLURM_CONF" -i
/usr/sbin/slurmd -f "$SLURM_CONF"
for _ in $(seq 60); do
    sinfo -h -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated)' && break
    sleep 1
done
sinfo -h -o '%T' | grep -qE '^(idle|mixed|allocated)' || { tail -20 "$STATE"/*.log; fail "the node did not come up"; }
say "cluster up: $(sinfo -h -o '%N %T %c CPUs')"

# 5. The array: 4 tasks, batch 2 (so that a task is mid-way long enough to be cancelled).
OUT=$WORK/out
mkdir -p "$OUT"
ENV="ALL,FRACTURE_SCORE=$SCORE,FRACTURE_MODEL=$MODEL,FRACTURE_INPUT=$INPUT,FRACTURE_OUT=$OUT,FRACTURE_BATCH=2"
JOB=$(sbatch --parsable --chdir="$WORK" --export="$ENV" scripts/slurm/score.sbatch)
say "submitted array job $JOB"
# Cancel task 1 once it has written a few rows, before it is done.
VICTIM=1
CSV=$OUT/shard-$VICTIM-of-$SHARDS.csv
for _ in $(seq 600); do
    rows=$( [ -f "$CSV" ] && echo $(( $(wc -l <"$CSV") - 1 )) || echo 0)
    [ "$rows" -ge 6 ] && break
    sleep 0.2
done
[ -f "$OUT/shard-$VICTIM-of-$SHARDS.done" ] && fail "task $VICTIM finished before it could be cancelled (use more images)"
scancel "${JOB}_$VICTIM"
say "cancelled task ${JOB}_$VICTIM (SIGTERM, then SIGKILL) after $rows rows"
wait_for_job() {
    for _ in $(seq 1800); do
        [ -z "$(squeue -h -j "$1" 2>/dev/null)" ] && return 0
        sleep 1
    done
    fail "job $1 still queued after 30 minutes"
}
wait_for_job "$JOB"
[ -f "$OUT/shard-$VICTIM-of-$SHARDS.done" ] && fail "the cancelled task wrote its .done"
before=$(( $(wc -l <"$CSV") - 1 ))
if "$SCORE" --merge "$OUT" 2>"$WORK/merge-refused.txt"; then fail "merge accepted a cancelled shard"; fi
grep -q "not done" "$WORK/merge-refused.txt" || { cat "$WORK/merge-refused.txt"; fail "merge refused for another reason"; }
say "merge refused while task $VICTIM is unfinished ($before rows kept); resubmitting it"
JOB2=$(sbatch --parsable --chdir="$WORK" --array="$VICTIM" --export="$ENV,FRACTURE_SHARDS=$SHARDS" scripts/slurm/score.sbatch)
wait_for_job "$JOB2"
for i in $(seq 0 $((SHARDS - 1))); do
    [ -f "$OUT/shard-$i-of-$SHARDS.done" ] || { cat "$WORK"/fracture-score-*.log; fail "shard $i not done"; }
done
grep -h "resumed" "$WORK"/fracture-score-"${JOB2}"_*.log
grep -q "$before resumed" "$WORK"/fracture-score-"${JOB2}"_*.log || fail "the resubmitted task did not resume its $before rows"
"$SCORE" --merge "$OUT"

# 6. The same folder in one process, no scheduler, with the tasks' one thread (rows are
# identical bit for bit at the same thread count; parallel reductions split by the thread
# count move a probability in its 8th significant digit).
env -u SLURM_CONF RAYON_NUM_THREADS=1 "$SCORE" --model "$MODEL" --input "$INPUT" --out "$WORK/single" --shard 0/1 --device cpu \
    2>"$WORK/single.log"
"$SCORE" --merge "$WORK/single"
cmp "$OUT/scores.csv" "$WORK/single/scores.csv" || { diff "$OUT/scores.csv" "$WORK/single/scores.csv" | head; fail "sharded and single-process scores differ"; }
rows=$(( $(wc -l <"$OUT/scores.csv") - 1 ))
[ "$rows" = "$TOTAL" ] || fail "$rows rows for $TOTAL inputs"
say "OK: $rows rows, identical to the single-process run; summary:"
cat "$OUT/summary.json"
