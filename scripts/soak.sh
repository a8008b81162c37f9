#!/usr/bin/env bash
# The seeded chaos soak (issue 15, item 5): ptl-coordinator and three ptl-worker processes (the
# release binaries), each in a network namespace of its own, joined by a bridge; jobs run back to
# back for --minutes while a schedule drawn from --seed kills, stops and cuts them off. Every job
# must end with the final weights of an undisturbed run of the same job, bit for bit, and (train
# jobs) a ledger holding every (step, shard) exactly once; a separate poison run must end with an
# error naming its shard. Needs root and iproute2 (`ip netns`, `tc`), and nft for partitions.
#
#   scripts/soak.sh --seed 1 --minutes 3          (CI)
#   scripts/soak.sh --seed 1 --minutes 3 --dry-run  (the schedule only: the same seed prints the same one)
set -uo pipefail

usage() {
    cat <<'EOF'
usage: scripts/soak.sh [--seed S] [--minutes M] [--out DIR] [--liveness N] [--heartbeat SEC]
                       [--bin DIR] [--dry-run] [--keep] [--help]

The seeded chaos soak: a coordinator and 3 workers, each in its own network namespace (veth pairs
into a bridge that lives in a namespace of its own), run jobs back to back for M minutes under a
schedule of faults drawn from the seed: SIGKILL and SIGSTOP/SIGCONT of workers and of the
coordinator (restarted from its OUT: it resumes from its checkpoint), a worker's or the
coordinator's link down, netem loss/delay/reordering (emulated with nft and htb when the kernel
has no sch_netem), a partition longer than the liveness timeout, the coordinator's OUT (a small
tmpfs) filled just before a checkpoint, and a flood of garbage from a fake peer. Before them: an
undisturbed reference run of each job kind (its final SHA-256 is what every disturbed job must
reproduce) and a poison run in which one shard always fails (it must end with an error naming
the shard). Prints the schedule, every fault as it happens and a summary, also written to
OUT/summary.txt; exits non-zero if anything failed.

  --seed S        seed of the schedule (default 1); the same seed gives the same schedule
  --minutes M     start jobs until M minutes have passed (default 3; each job kind is
                  undisturbed ~10 s, disturbed ~15-40 s; M >= 3 injects every fault kind)
  --out DIR       where logs and the summary go (default out/soak-SEED)
  --liveness N    the coordinator's liveness, in heartbeats (default 5)
  --heartbeat S   heartbeat interval in seconds, coordinator and workers (default 0.2)
  --bin DIR       where ptl-coordinator and ptl-worker are (default .build/release); they are
                  copied to a private directory first, so a rebuild cannot change a running soak
  --dry-run       print the schedule and exit (no root needed)
  --keep          keep the soak's private temp directory (binaries, job outputs) for a post-mortem
EOF
}

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SEED=1 MINUTES=3 OUT="" LIVENESS=5 HB=0.2 BINSRC="$ROOT/.build/release" DRY=0 KEEP=0
while [ $# -gt 0 ]; do
    case "$1" in
        --seed) SEED=${2:?}; shift 2 ;;
        --minutes) MINUTES=${2:?}; shift 2 ;;
        --out) OUT=${2:?}; shift 2 ;;
        --liveness) LIVENESS=${2:?}; shift 2 ;;
        --heartbeat) HB=${2:?}; shift 2 ;;
        --bin) BINSRC=${2:?}; shift 2 ;;
        --dry-run) DRY=1; shift ;;
        --keep) KEEP=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "soak.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
[[ "$SEED" =~ ^[0-9]+$ ]] || { echo "soak.sh: --seed must be a non-negative integer" >&2; exit 2; }
[[ "$MINUTES" =~ ^[0-9]+$ && "$MINUTES" -ge 1 ]] || { echo "soak.sh: --minutes must be a positive integer" >&2; exit 2; }
[[ "$LIVENESS" =~ ^[0-9]+$ && "$LIVENESS" -ge 1 ]] || { echo "soak.sh: --liveness must be a positive integer" >&2; exit 2; }
[[ "$HB" =~ ^[0-9]*\.?[0-9]+$ ]] || { echo "soak.sh: --heartbeat must be a number of seconds" >&2; exit 2; }
OUT=${OUT:-$ROOT/out/soak-$SEED}
HB_MS=$(awk -v h="$HB" 'BEGIN { printf "%d", h * 1000 }')
LIVE_MS=$((HB_MS * LIVENESS))            # how long a silent worker keeps its place
SHARDS=4 TRAIN_STEPS=30

# ---------------------------------------------------------------------------------------------
# The schedule: a pure function of (seed, minutes, liveness, heartbeat). MINSTD (Park–Miller) in
# shell arithmetic — portable, and the same numbers on every machine.
# The seed is scrambled first (xor-shift-multiply rounds: MINSTD's sequences of seeds 1 and 2
# would otherwise be multiples of each other).
RNG=$(( SEED % 2147483646 + 1 ))
for _ in 1 2 3 4 5 6; do RNG=$(( ((RNG ^ (RNG >> 13) ^ (SEED % 2147483647)) * 48271 + 12345) % 2147483647 )); done
[ "$RNG" -gt 0 ] || RNG=1
rnd() { RNG=$(( RNG * 48271 % 2147483647 )); R=$(( RNG % $1 )); }     # R in [0, $1)
rng_between() { rnd $(( $2 - $1 + 1 )); R=$(( $1 + R )); }           # R in [$1, $2]

KINDS=(worker-kill worker-stop coord-kill coord-stop link-down-worker link-down-coord netem partition tmpfs-full flood)
DECK=()
draw_kind() {   # the next kind from a seeded deck: every kind once per len(KINDS) draws
    if [ ${#DECK[@]} -eq 0 ]; then
        DECK=("${KINDS[@]}")
        for ((i = ${#DECK[@]} - 1; i > 0; i--)); do rnd $((i + 1)); t=${DECK[i]}; DECK[i]=${DECK[R]}; DECK[R]=$t; done
    fi
    K=${DECK[0]}; DECK=("${DECK[@]:1}")
}

rnd $SHARDS; POISON_SHARD=$R
# Jobs alternate: train (--method train, 30 steps × 4 shards, a ledger) and loop (the
# Prune–Tune Loop, 2 rounds: stats, prune, tune, eval). Train jobs get 4 faults, loop jobs 3, so
# the first three jobs (~1.5 min) already meet all 10 kinds. Planned: more jobs than can run.
PLANNED=$(( MINUTES * 60 / 12 + 2 ))
SCHED=()        # job|kind|gap_ms|target|param1|param2
JOBKIND=()
for ((j = 1; j <= PLANNED; j++)); do
    if (( j % 2 == 1 )); then JOBKIND[j]=train; n=4; else JOBKIND[j]=loop; n=3; fi
    for ((f = 0; f < n; f++)); do
        draw_kind
        rng_between 300 2000; gap=$R
        rnd 3; target=$R
        p1=0 p2=0
        case $K in
            worker-kill) rng_between 200 2000; p1=$R ;;                          # restarted after p1 ms
            worker-stop) rng_between 300 $((LIVE_MS * 3)); p1=$R ;;              # stopped p1 ms (past the liveness: a zombie)
            coord-kill) rng_between 200 1500; p1=$R ;;                           # restarted after p1 ms
            coord-stop) rng_between 300 2500; p1=$R ;;
            link-down-worker|link-down-coord) rng_between $((LIVE_MS / 5)) $((LIVE_MS * 4 / 5)); p1=$R ;;   # shorter than the liveness
            netem) rnd 4; target=$R                                              # 3: the coordinator's link
                   rnd 3; p2=$R                                                  # 0 loss, 1 delay, 2 reorder
                   case $p2 in 0) rng_between 5 30 ;; 1) rng_between 20 150 ;; 2) rng_between 20 50 ;; esac; p1=$R
                   rng_between 2000 5000; p3=$R ;;
            partition) rng_between 1 2; p2=$R                                    # this many workers cut off from the coordinator
                       rng_between $((LIVE_MS * 3 / 2)) $((LIVE_MS * 3)); p1=$R ;;
            tmpfs-full) rng_between 16 256; p1=$R ;;                             # KiB left free
            flood) rng_between 200 1000; p1=$R; rnd 1000000; p2=$R ;;            # messages, seed
        esac
        [ "$K" = netem ] && p1="$p1/$p3"
        SCHED+=("$j|$K|$gap|$target|$p1|$p2")
    done
done

describe() {   # a fault line of the schedule in words
    local kind=$2 gap=$3 t=$4 p1=$5 p2=$6 who
    case $kind in
        worker-kill) echo "SIGKILL worker w$t, restarted after $p1 ms" ;;
        worker-stop) echo "SIGSTOP worker w$t for $p1 ms, then SIGCONT" ;;
        coord-kill) echo "SIGKILL the coordinator, restarted (resuming from its checkpoint) after $p1 ms" ;;
        coord-stop) echo "SIGSTOP the coordinator for $p1 ms, then SIGCONT" ;;
        link-down-worker) echo "worker w$t's link down for $p1 ms" ;;
        link-down-coord) echo "the coordinator's link down for $p1 ms" ;;
        netem) who=$([ "$t" = 3 ] && echo "the coordinator's link" || echo "worker w$t's link")
               case $p2 in 0) echo "netem on $who: loss ${p1%/*} % for ${p1#*/} ms" ;;
                           1) echo "netem on $who: delay ${p1%/*} ms ± $(( ${p1%/*} / 4 )) ms for ${p1#*/} ms" ;;
                           2) echo "netem on $who: reorder ${p1%/*} % (delay 10 ms) for ${p1#*/} ms" ;; esac ;;
        partition) local ws="" k; for ((k = 0; k < p2; k++)); do ws+="w$(( (t + k) % 3 )) "; done
                   echo "partition: ${ws% } cut off from the coordinator (and the rest) for $p1 ms (liveness $LIVE_MS ms)" ;;
        tmpfs-full) echo "fill the coordinator's OUT tmpfs to $p1 KiB free (topped up) until a checkpoint write fails; free it and restart" ;;
        flood) echo "a fake peer floods the coordinator with $p1 garbage messages (seed $p2)" ;;
    esac
}

print_schedule() {
    echo "schedule (seed $SEED, $MINUTES min, heartbeat ${HB} s, liveness $LIVENESS = $LIVE_MS ms; $PLANNED jobs planned, run while time remains):"
    echo "  poison run: every worker fails every task of shard $POISON_SHARD (ptl-worker --fault-fail-shard $POISON_SHARD)"
    local last=0 line j kind gap t p1 p2
    for line in "${SCHED[@]}"; do
        IFS='|' read -r j kind gap t p1 p2 <<<"$line"
        if [ "$j" != "$last" ]; then echo "  job $j (${JOBKIND[j]}):"; last=$j; fi
        printf '    +%5d ms  %-17s %s\n' "$gap" "$kind" "$(describe "$j" "$kind" "$gap" "$t" "$p1" "$p2")"
    done
}

if [ "$DRY" = 1 ]; then print_schedule; exit 0; fi

# ---------------------------------------------------------------------------------------------
# Preconditions.
if [ "$(id -u)" != 0 ]; then echo "soak.sh: needs root (network namespaces, tmpfs)" >&2; exit 2; fi
for tool in ip tc nft awk sha256sum mount; do
    command -v $tool >/dev/null || { echo "soak.sh: needs $tool" >&2; exit 2; }
done
for b in ptl-coordinator ptl-worker; do
    [ -x "$BINSRC/$b" ] || { echo "soak.sh: $BINSRC/$b missing: swift build -c release" >&2; exit 2; }
done

# Everything the soak makes is tagged with this PID: two soaks never share a namespace or mount.
TAG=$$
WORK=$(mktemp -d "/tmp/ptl-soak-$TAG.XXXXXX")
BIN=$WORK/bin MNT=$WORK/coord-out
NS_SW=ptlsoak$TAG-sw NS_C=ptlsoak$TAG-c
NS_W=(ptlsoak$TAG-w0 ptlsoak$TAG-w1 ptlsoak$TAG-w2)
ALL_NS=("$NS_SW" "$NS_C" "${NS_W[@]}")
CPID="" WPID=("" "" "") EXTRA_PIDS=() MADE_NS=() MOUNTED=0

cleanup() {
    set +e
    local p ns
    for p in $CPID "${WPID[@]}" "${EXTRA_PIDS[@]}"; do
        [ -n "$p" ] && { kill -CONT "$p"; kill -KILL "$p"; } 2>/dev/null
    done
    for ns in "${MADE_NS[@]}"; do          # anything else still inside our namespaces is ours too
        for p in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
    done
    wait 2>/dev/null
    for ns in "${MADE_NS[@]}"; do ip netns del "$ns" 2>/dev/null; done
    if [ "$MOUNTED" = 1 ]; then umount "$MNT" 2>/dev/null || umount -l "$MNT"; fi
    if [ "$KEEP" = 1 ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mkdir -p "$BIN" "$WORK/cache"
cp "$BINSRC/ptl-coordinator" "$BINSRC/ptl-worker" "$BIN/"
if ! "$BIN/ptl-worker" --help 2>&1 | grep -q -- --fault-fail-shard; then
    echo "soak.sh: $BINSRC/ptl-worker predates --fault-fail-shard: rebuild (swift build -c release)" >&2; exit 2
fi
rm -rf "$OUT/logs" "$OUT/jobs" "$OUT/summary.txt" "$OUT/schedule.txt"
mkdir -p "$OUT/logs" "$OUT/jobs"
LOG=$OUT/logs

# The network: a bridge in a namespace of its own (a switch), and a veth pair from it into the
# coordinator's namespace and into each worker's. Nothing is added to the host's namespace, and
# the addresses come from 198.18.0.0/15, the range RFC 2544 reserves for benchmarking network
# devices: no real network uses it, and since no interface of the host carries it, it cannot
# collide with (or be routed to) anything the host has. A non-loopback bind without CURVE needs
# --insecure, which is what the soak uses: the namespaces reach nothing but each other, and the
# flood must reach the coordinator's decoder (with CURVE a stranger is refused at the handshake).
net() { ip "$@" || { echo "soak.sh: ip $*: failed" >&2; exit 2; }; }
for ns in "${ALL_NS[@]}"; do net netns add "$ns"; MADE_NS+=("$ns"); done
net -n "$NS_SW" link add br0 type bridge
net -n "$NS_SW" link set br0 up
node_ns() { [ "$1" = c ] && echo "$NS_C" || echo "${NS_W[${1#w}]}"; }
declare -A ADDR=([c]=198.18.0.1 [w0]=198.18.0.11 [w1]=198.18.0.12 [w2]=198.18.0.13)
for node in c w0 w1 w2; do
    ns=$(node_ns $node)
    net -n "$NS_SW" link add "p-$node" type veth peer name eth0 netns "$ns"
    net -n "$NS_SW" link set "p-$node" master br0 up
    net -n "$ns" addr add "${ADDR[$node]}/24" dev eth0
    net -n "$ns" link set eth0 up
    net -n "$ns" link set lo up
done
ENDPOINT="tcp://${ADDR[c]}:5555"
NETEM=0
if ip netns exec "$NS_SW" tc qdisc add dev br0 root netem delay 1ms 2>/dev/null; then
    NETEM=1; ip netns exec "$NS_SW" tc qdisc del dev br0 root
fi

# The coordinator's OUT: a small tmpfs (a checkpoint of the demo model is ~25 MB; the newest,
# the one before and one being written, plus the final model, fit in 128 MB).
mkdir -p "$MNT"
mount -t tmpfs -o size=128m,mode=0755 "ptlsoak$TAG" "$MNT" || { echo "soak.sh: cannot mount a tmpfs" >&2; exit 2; }
MOUNTED=1

# ---------------------------------------------------------------------------------------------
# Time, processes.
now_ms() { local t=${EPOCHREALTIME/./}; NOW=$(( t / 1000 )); }
now_ms; T0=$NOW
stamp() { now_ms; printf '[%6.1f s]' "$(awk -v d=$((NOW - T0)) 'BEGIN { print d / 1000 }')"; }
say() { echo "$(stamp) $*"; }
secs() { awk -v ms="$1" 'BEGIN { printf "%.1f", ms / 1000 }'; }

job_args() {   # the coordinator's arguments of a job kind (OUT last)
    local kind=$1 out=$2 bind=$3
    local common=(--model "$ROOT/models/demo" --checkpoint-every 1 --heartbeat "$HB" --liveness "$LIVENESS" --bind "$bind")
    if [ "$kind" = train ]; then
        echo --method train "${common[@]}" --steps $TRAIN_STEPS --batch-size 16 --shards $SHARDS --lr 1e-3 --out "$out"
    else
        echo "${common[@]}" --target-params 0.8 --step 0.1 --remove-layers 1 --tune-steps 6 --batch-size 8 --shards $SHARDS \
             --calibration-lines 16 --heldout-lines 16 --eval-count 16 --max-new-tokens 48 --out "$out"
    fi
}

CEXIT="" COUT="" CKIND="" CLOG=""
start_coord() {   # the job's coordinator, in its namespace, appending to its log
    ip netns exec "$NS_C" "$BIN/ptl-coordinator" $(job_args "$CKIND" "$COUT" "$ENDPOINT") --insecure >>"$CLOG" 2>&1 &
    CPID=$! CEXIT=""
}
coord_running() {   # false once it has exited (its status then in CEXIT)
    [ -n "$CEXIT" ] && return 1
    if kill -0 "$CPID" 2>/dev/null; then return 0; fi
    wait "$CPID" 2>/dev/null; CEXIT=$?; return 1
}
W_RESTART_AT=(0 0 0) W_STARTS=(0 0 0) W_EXITS_UNASKED=0 W_KILLED=(0 0 0) W_EXTRA=""
start_worker() {
    local i=$1
    ip netns exec "${NS_W[i]}" "$BIN/ptl-worker" --connect "$ENDPOINT" --id "w$i" --heartbeat "$HB" \
        --cache "$WORK/cache/w$i" $W_EXTRA >>"$LOG/worker-w$i.log" 2>&1 &
    WPID[i]=$! W_STARTS[i]=$(( W_STARTS[i] + 1 ))
}
tick() {   # restarts workers that died (after their restart delay); notes the coordinator's exit
    local i
    now_ms
    for i in 0 1 2; do
        [ -z "${WPID[i]}" ] && continue
        if ! kill -0 "${WPID[i]}" 2>/dev/null; then
            wait "${WPID[i]}" 2>/dev/null
            if [ "${W_KILLED[i]}" = 0 ]; then
                W_EXITS_UNASKED=$((W_EXITS_UNASKED + 1)); say "worker w$i exited by itself: restarting it"
                W_RESTART_AT[i]=$NOW
            fi
            WPID[i]=""
        fi
    done
    for i in 0 1 2; do
        if [ -z "${WPID[i]}" ] && [ "${W_RESTART_AT[i]}" -gt 0 ] && [ "$NOW" -ge "${W_RESTART_AT[i]}" ]; then
            W_RESTART_AT[i]=0 W_KILLED[i]=0; start_worker "$i"
        fi
    done
    coord_running >/dev/null
}
nap() {   # sleeps $1 ms, ticking
    now_ms; local until=$(( NOW + $1 ))
    while now_ms; [ "$NOW" -lt "$until" ]; do tick; sleep 0.05; done
}
wait_coord() {   # waits (ticking) until the coordinator exits or $1 ms pass; true if it exited
    now_ms; local until=$(( NOW + $1 ))
    while coord_running; do now_ms; [ "$NOW" -ge "$until" ] && return 1; tick; sleep 0.05; done
    return 0
}
sha_of() { [ -f "$1/final/model.safetensors" ] && sha256sum "$1/final/model.safetensors" | cut -c1-64 || echo none; }
ledger_check() {   # "ok N" when OUT/ledger.jsonl holds every (step, shard) once, in order; else why not
    local f=$1/ledger.jsonl got want
    [ -f "$f" ] || { echo "missing"; return; }
    got=$(grep -o '"shard":[0-9]*,"step":[0-9]*' "$f" | sed 's/"shard":\([0-9]*\),"step":\([0-9]*\)/\2\/\1/' | tr '\n' ' ')
    want=$(for ((s = 0; s < TRAIN_STEPS; s++)); do for ((h = 0; h < SHARDS; h++)); do printf '%s ' "$s/$h"; done; done)
    if [ "$got" = "$want" ]; then echo "ok $((TRAIN_STEPS * SHARDS))"
    else echo "BAD ($(wc -l <"$f") entries, $(echo "$got" | tr ' ' '\n' | sort | uniq -d | wc -l) duplicated)"; fi
}

# Link faults. A partition and emulated loss drop packets in the switch (nft, bridge family), so
# the hosts' own stacks see nothing but silence, as behind a real partition.
switch_nft() { ip netns exec "$NS_SW" nft "$@"; }
netem_on() {   # $1 node, $2 variant (0 loss, 1 delay, 2 reorder), $3 amount
    local node=$1 v=$2 a=$3 ns; ns=$(node_ns "$node")
    if [ "$NETEM" = 1 ]; then
        local spec
        case $v in 0) spec="loss ${a}%" ;; 1) spec="delay ${a}ms $((a / 4))ms" ;; 2) spec="delay 10ms reorder ${a}% 50%" ;; esac
        ip netns exec "$ns" tc qdisc add dev eth0 root netem $spec
        ip netns exec "$NS_SW" tc qdisc add dev "p-$node" root netem $spec
        NETEM_HOW="tc netem $spec, both directions"
        return
    fi
    # No sch_netem in this kernel: loss in the switch (nft numgen), delay as a throttled link
    # (htb: queueing delay), reordering as two htb classes of different speed with a random
    # quarter to half of the packets sent through the slow one (nft sets their priority).
    case $v in
        0) switch_nft "add table bridge ptlnetem; add chain bridge ptlnetem f { type filter hook forward priority 0; };
                       add rule bridge ptlnetem f iifname \"p-$node\" numgen random mod 100 < $a drop;
                       add rule bridge ptlnetem f oifname \"p-$node\" numgen random mod 100 < $a drop"
           NETEM_HOW="emulated (no sch_netem): ${a} % loss in the switch, both directions" ;;
        1) local rate=$(( 4000 / a ))mbit
           for side in "$ns eth0" "$NS_SW p-$node"; do
               set -- $side
               ip netns exec "$1" tc qdisc add dev "$2" root handle 1: htb default 1 2>/dev/null
               ip netns exec "$1" tc class add dev "$2" parent 1: classid 1:1 htb rate "$rate" ceil "$rate" 2>/dev/null
           done
           NETEM_HOW="emulated (no sch_netem): link throttled to $rate both ways (queueing delay)" ;;
        2) ip netns exec "$ns" tc qdisc add dev eth0 root handle 1: htb default 1 2>/dev/null
           ip netns exec "$ns" tc class add dev eth0 parent 1: classid 1:1 htb rate 10gbit 2>/dev/null
           ip netns exec "$ns" tc class add dev eth0 parent 1: classid 1:2 htb rate 20mbit ceil 20mbit 2>/dev/null
           ip netns exec "$ns" nft "add table inet ptlnetem; add chain inet ptlnetem o { type filter hook output priority 0; };
                                    add rule inet ptlnetem o oifname \"eth0\" numgen random mod 100 < $a meta priority set 1:2"
           NETEM_HOW="emulated (no sch_netem): ${a} % of the packets out of the link through a slower htb class (reordered)" ;;
    esac
}
netem_off() {
    local node=$1 ns; ns=$(node_ns "$node")
    ip netns exec "$ns" tc qdisc del dev eth0 root 2>/dev/null
    ip netns exec "$NS_SW" tc qdisc del dev "p-$node" root 2>/dev/null
    switch_nft delete table bridge ptlnetem 2>/dev/null
    ip netns exec "$ns" nft delete table inet ptlnetem 2>/dev/null
    true
}
partition_on() {   # cuts the given nodes off from everything
    local rules="add table bridge ptlpart; add chain bridge ptlpart f { type filter hook forward priority 0; };" node
    for node in "$@"; do rules+=" add rule bridge ptlpart f iifname \"p-$node\" drop; add rule bridge ptlpart f oifname \"p-$node\" drop;"; done
    switch_nft "$rules"
}
partition_off() { switch_nft delete table bridge ptlpart 2>/dev/null; true; }

# The shell's own notices (bash reports every process the soak SIGKILLs) go to a log; the soak's
# messages go to stdout, its errors to fd 3.
exec 3>&2 2>>"$LOG/shell.log"

# ---------------------------------------------------------------------------------------------
print_schedule | tee "$OUT/schedule.txt"
echo
say "namespaces ${ALL_NS[*]}; coordinator at $ENDPOINT; OUT on a 128 MB tmpfs; netem: $([ $NETEM = 1 ] && echo "tc netem" || echo "not in this kernel (sch_netem): emulated with nft and htb")"

# 1. The undisturbed references: the same jobs, 3 local workers on loopback, normal disk.
declare -A REF_SHA REF_MS
for kind in train loop; do
    now_ms; t=$NOW
    "$BIN/ptl-coordinator" $(job_args $kind "$WORK/ref-$kind" tcp://127.0.0.1:0) --local-workers 3 >"$LOG/reference-$kind.log" 2>&1
    rc=$?; now_ms
    REF_MS[$kind]=$((NOW - t)) REF_SHA[$kind]=$(sha_of "$WORK/ref-$kind")
    if [ $rc != 0 ] || [ "${REF_SHA[$kind]}" = none ]; then
        echo "soak.sh: the undisturbed $kind run failed (exit $rc): $(grep -m1 '^Error' "$LOG/reference-$kind.log")" >&3; exit 1
    fi
    say "reference $kind: $(secs ${REF_MS[$kind]}) s, final SHA-256 ${REF_SHA[$kind]}"
done

# 2. The poison run: every worker fails every task of one shard; the run must end with an
#    error naming it (the scheduler gives up on a task after 4 failures), not with a model.
CKIND=train COUT=$WORK/poison CLOG=$LOG/poison-coordinator.log
start_coord
W_EXTRA="--fault-fail-shard $POISON_SHARD"
for i in 0 1 2; do start_worker $i; done
if wait_coord 120000; then :; else kill -KILL "$CPID" 2>/dev/null; coord_running; fi
for i in 0 1 2; do W_KILLED[i]=1; kill -TERM "${WPID[i]}" 2>/dev/null; done
for i in 0 1 2; do wait "${WPID[i]}" 2>/dev/null; WPID[i]=""; W_KILLED[i]=0; done
W_EXTRA=""
POISON_EXIT=$CEXIT POISON_LINE=$(grep -m1 '^Error' "$CLOG" || echo "(no error line)")
POISON_OK=no
if [ "$CEXIT" != 0 ] && [ "$(sha_of "$COUT")" = none ] && echo "$POISON_LINE" | grep -q "shard$POISON_SHARD\b.*shard $POISON_SHARD"; then POISON_OK=yes; fi
say "poison run (shard $POISON_SHARD): exit $CEXIT, $POISON_LINE — as expected: $POISON_OK"

# 3. Disturbed jobs, back to back, while time remains. Workers stay up across jobs (they
#    re-register with each new coordinator on the same endpoint).
declare -A INJ SURV SKIP
for k in "${KINDS[@]}"; do INJ[$k]=0 SURV[$k]=0 SKIP[$k]=0; done
JOB_LINES=() FAULT_LINES=() ALL_OK=1 JOBS=0 DIST_MS=0 DIST_REF_MS=0
for i in 0 1 2; do start_worker $i; done
for ((j = 1; j <= PLANNED; j++)); do
    now_ms; (( NOW - T0 >= MINUTES * 60000 )) && break
    JOBS=$j CKIND=${JOBKIND[j]} COUT=$MNT/job-$j CLOG=$LOG/coordinator-job-$j.log
    say "job $j ($CKIND) starts"
    now_ms; JT0=$NOW
    start_coord
    PENDING=()        # this job's faults: kind|detail|specific check passed
    for line in "${SCHED[@]}"; do
        IFS='|' read -r fj kind gap t p1 p2 <<<"$line"
        [ "$fj" = "$j" ] || continue
        nap "$gap"
        what=$(describe "$fj" "$kind" "$gap" "$t" "$p1" "$p2")
        if ! coord_running; then
            SKIP[$kind]=$((SKIP[$kind] + 1)); say "  skipped (the job had ended): $kind: $what"; continue
        fi
        INJ[$kind]=$((INJ[$kind] + 1))
        say "  $kind: $what"
        ok=yes note=""
        case $kind in
            worker-kill)
                if [ -n "${WPID[t]}" ]; then
                    W_KILLED[t]=1; kill -KILL "${WPID[t]}"; now_ms; W_RESTART_AT[t]=$(( NOW + p1 ))
                    nap "$p1"; nap 100
                    [ -n "${WPID[t]}" ] || { ok=no; note="not restarted"; }
                else note="w$t was down already"; fi ;;
            worker-stop)
                if [ -n "${WPID[t]}" ]; then kill -STOP "${WPID[t]}"; nap "$p1"; kill -CONT "${WPID[t]}"; fi ;;
            coord-kill)
                kill -KILL "$CPID"; coord_running; nap "$p1"
                had=$([ -d "$COUT/checkpoint" ] && echo yes || echo no)
                echo "--- soak: SIGKILLed; restarted (a checkpoint to resume from: $had) ---" >>"$CLOG"
                start_coord; note="checkpoint to resume from: $had" ;;
            coord-stop)
                kill -STOP "$CPID"; nap "$p1"; kill -CONT "$CPID" ;;
            link-down-worker)
                ip -n "${NS_W[t]}" link set eth0 down; nap "$p1"; ip -n "${NS_W[t]}" link set eth0 up ;;
            link-down-coord)
                ip -n "$NS_C" link set eth0 down; nap "$p1"; ip -n "$NS_C" link set eth0 up ;;
            netem)
                node=$([ "$t" = 3 ] && echo c || echo "w$t")
                NETEM_HOW=""; netem_on "$node" "$p2" "${p1%/*}"; note=$NETEM_HOW
                nap "${p1#*/}"; netem_off "$node" ;;
            partition)
                nodes=(); for ((k = 0; k < p2; k++)); do nodes+=("w$(( (t + k) % 3 ))"); done
                partition_on "${nodes[@]}"; nap "$p1"; partition_off ;;
            tmpfs-full)
                # Filled to p1 KiB free, and topped up as space comes free (a save writes the new
                # checkpoint, then drops the one before the last): the next checkpoint write fails.
                before=$([ -d "$COUT/checkpoint" ] && echo yes || echo no)
                fill() { local a; a=$(df --output=avail -B1 "$MNT" | tail -1)
                         (( a > p1 * 1024 )) && head -c $(( a - p1 * 1024 )) /dev/zero >>"$MNT/filler" 2>/dev/null; true; }
                now_ms; until_ms=$(( NOW + 60000 ))
                while coord_running && now_ms && [ "$NOW" -lt "$until_ms" ]; do fill; tick; sleep 0.02; done
                if ! coord_running; then
                    err=$(grep '^Error' "$CLOG" | tail -1)
                    if [ "$CEXIT" = 0 ]; then ok=no; note="the job ended before any write failed (not triggered)"
                    elif [ "$CEXIT" -ge 128 ] || [ -z "$err" ]; then ok=no; note="crashed (exit $CEXIT) ${err:-without an error line}"
                    elif echo "$err" | grep -q "$COUT/" && echo "$err" | grep -qi "space"; then note="clean: exit $CEXIT, $err"
                    else ok=no; note="unclear error (exit $CEXIT): $err"; fi
                else ok=no; note="the coordinator did not stop within 60 s of the disk filling"; kill -KILL "$CPID"; coord_running; fi
                rm -f "$MNT/filler"
                if [ "$CEXIT" != 0 ]; then
                    had=$([ -d "$COUT/checkpoint" ] && echo yes || echo no)
                    [ "$before" = yes ] && [ "$had" = no ] && { ok=no; note+="; the checkpoint it had is gone"; }
                    note+="; a checkpoint before: $before, after: $had"
                    echo "--- soak: space freed; restarted (checkpoint before the fill: $before, kept: $had) ---" >>"$CLOG"
                    start_coord
                fi ;;
            flood)
                before=$(grep -c "rejected message" "$CLOG")
                timeout 60 ip netns exec "${NS_W[t]}" "$BIN/ptl-worker" --connect "$ENDPOINT" --id "flood-$j" --fault-flood "$p1" \
                    --fault-seed "$p2" >>"$LOG/flood.log" 2>&1 &
                fp=$!; EXTRA_PIDS+=("$fp")
                while kill -0 $fp 2>/dev/null; do tick; sleep 0.05; done
                wait $fp; frc=$?
                nap 1000
                after=$(grep -c "rejected message" "$CLOG")
                note="$((after - before)) refused by the coordinator"
                [ $frc = 0 ] || { ok=no; note+="; the flood exited $frc"; }
                if ! coord_running && [ "$CEXIT" != 0 ]; then ok=no; note+="; the coordinator died (exit $CEXIT)"; fi ;;
        esac
        PENDING+=("$kind|$what${note:+ — $note}|$ok")
    done
    # The rest of the job, undisturbed: a generous bound, then it counts as hung.
    limit=$(( REF_MS[$CKIND] * 8 + 120000 ))
    if ! wait_coord "$limit"; then say "job $j: no end within $(secs $limit) s: killed"; kill -KILL "$CPID"; coord_running; CEXIT=hung; fi
    now_ms; JMS=$((NOW - JT0))
    sha=$(sha_of "$COUT")
    ledger="n/a (the loop keeps none)"; ledger_ok=1
    if [ "$CKIND" = train ]; then ledger=$(ledger_check "$COUT"); [[ $ledger == ok* ]] || ledger_ok=0; fi
    job_ok=1; { [ "$CEXIT" = 0 ] && [ "$sha" = "${REF_SHA[$CKIND]}" ] && [ $ledger_ok = 1 ]; } || job_ok=0
    [ $job_ok = 1 ] || ALL_OK=0
    DIST_MS=$((DIST_MS + JMS)) DIST_REF_MS=$((DIST_REF_MS + REF_MS[$CKIND]))
    for p in "${PENDING[@]}"; do
        IFS='|' read -r kind detail ok <<<"$p"
        [ "$ok" = yes ] && [ $job_ok = 1 ] && SURV[$kind]=$((SURV[$kind] + 1)) && s=yes || s=no
        FAULT_LINES+=("job $j: $kind: $detail — survived: $s")
    done
    JOB_LINES+=("$(printf 'job %2d %-5s %6s s (undisturbed %s s) exit %-4s SHA %s… %s ref; ledger %s; %d faults' \
        "$j" "$CKIND" "$(secs $JMS)" "$(secs ${REF_MS[$CKIND]})" "$CEXIT" "${sha:0:16}" \
        "$([ "$sha" = "${REF_SHA[$CKIND]}" ] && echo "==" || echo "!=")" "$ledger" "${#PENDING[@]}")")
    say "${JOB_LINES[-1]}"
    mkdir -p "$OUT/jobs/job-$j"
    cp "$COUT/metrics.jsonl" "$COUT/ledger.jsonl" "$OUT/jobs/job-$j/" 2>/dev/null
    echo "$sha" >"$OUT/jobs/job-$j/final.sha256"
    [ $job_ok = 1 ] || { cp -a "$COUT" "$OUT/jobs/job-$j/out"; say "job $j failed: its OUT kept in $OUT/jobs/job-$j/out"; }
    rm -rf "$COUT"
done

# ---------------------------------------------------------------------------------------------
now_ms; TOTAL_MS=$((NOW - T0))
MISSING=()
for k in "${KINDS[@]}"; do [ "${INJ[$k]}" -gt 0 ] || MISSING+=("$k"); [ "${SURV[$k]}" = "${INJ[$k]}" ] || ALL_OK=0; done
[ "$POISON_OK" = yes ] || ALL_OK=0
[ "$W_EXITS_UNASKED" = 0 ] || ALL_OK=0
if [ "$MINUTES" -ge 3 ] && [ ${#MISSING[@]} -gt 0 ]; then ALL_OK=0; fi
{
    echo "ptl chaos soak: seed $SEED, $MINUTES min (ran $(secs $TOTAL_MS) s in all), heartbeat $HB s, liveness $LIVENESS ($LIVE_MS ms), 3 workers"
    echo "binaries: ptl-coordinator $(sha256sum "$BIN/ptl-coordinator" | cut -c1-12), ptl-worker $(sha256sum "$BIN/ptl-worker" | cut -c1-12); netem: $([ $NETEM = 1 ] && echo "tc netem" || echo "emulated (no sch_netem in this kernel)")"
    echo
    printf '%-18s %8s %8s %12s\n' "fault" "injected" "survived" "skipped(end)"
    for k in "${KINDS[@]}"; do printf '%-18s %8d %8s %12d\n' "$k" "${INJ[$k]}" "$([ "${SURV[$k]}" = "${INJ[$k]}" ] && echo "yes" || echo "NO ${SURV[$k]}/${INJ[$k]}")" "${SKIP[$k]}"; done
    printf '%-18s %8d %8s\n' "poison-shard" 1 "$POISON_OK"
    [ ${#MISSING[@]} = 0 ] || echo "never injected: ${MISSING[*]}"
    echo
    echo "reference (undisturbed, 3 local workers): train $(secs ${REF_MS[train]}) s SHA ${REF_SHA[train]}"
    echo "                                          loop  $(secs ${REF_MS[loop]}) s SHA ${REF_SHA[loop]}"
    echo "jobs run: $JOBS"
    for l in "${JOB_LINES[@]}"; do echo "  $l"; done
    echo "time: disturbed jobs $(secs $DIST_MS) s against $(secs $DIST_REF_MS) s undisturbed: overhead $(awk -v a=$DIST_MS -v b=$DIST_REF_MS 'BEGIN { printf "%+.0f %%", b ? 100 * (a - b) / b : 0 }')"
    echo "poison run (shard $POISON_SHARD): exit $POISON_EXIT, no final model: $POISON_LINE"
    [ "$W_EXITS_UNASKED" = 0 ] || echo "workers that exited by themselves: $W_EXITS_UNASKED (see $LOG/worker-*.log)"
    echo
    echo "faults:"
    for l in "${FAULT_LINES[@]}"; do echo "  $l"; done
    echo
    echo "RESULT: $([ $ALL_OK = 1 ] && echo PASS || echo FAIL)"
} >"$OUT/summary.txt"
echo
cat "$OUT/summary.txt"
echo "(summary in $OUT/summary.txt, logs in $LOG)"
[ $ALL_OK = 1 ]
