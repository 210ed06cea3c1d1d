#!/usr/bin/env bash
# Performance as ratios, measured side by side on this machine (docs/performance.md):
#   1. training steps/s of `solver run --no-proof` against the same task trained by
#      bench/train_reference.py on Debian's python3-torch, at each --threads count;
#   2. the cost of proofs: steps/s and whole-command time with a checkpoint every k = 100 and
#      k = 10 against --no-proof;
#   3. `solver verify` (default selection, and --segments all) against the bundle's training time,
#      and its wall time against the goal of 1.2x the replayed steps' share of training + 1 s;
#   4. a long task (the same MLP, 10 epochs, a checkpoint every 10 steps: 938 checkpoints)
#      verified with --q 1 --catch-probability 0.9 against its training time (goal <= 10%), with
#      the chance the verdict states of catching a forger (not with --quick);
#   5. SHA-256 of the bundle's checkpoints by solver's code (bench/hash_bench) against openssl.
# Each figure is the median of 3 runs (--quick: 1 run of a 300-step task); verify's runs of
# different settings alternate (A B A B), so that a slow spell of this machine hits both.
#
#   bench/ratios.sh [--quick] [--threads "1 2"] [--task TASK.json]
# Needs scripts/build.sh first (build/solver); builds bench/hash_bench into build-bench/ when
# build/bench/hash_bench is missing. SOLVER=... and HASH_BENCH=... point at other binaries.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
python=/usr/bin/python3
solver="${SOLVER:-$root/build/solver}"
task="$root/configs/tasks/fashion-mnist-mlp.json"
threads_list="1 2"
repeats=3
quick_steps=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --quick) repeats=1; quick_steps=300; shift ;;
    --threads) threads_list="$2"; shift 2 ;;
    --task) task="$2"; shift 2 ;;
    *) echo "usage: bench/ratios.sh [--quick] [--threads \"1 2\"] [--task TASK.json]" >&2; exit 64 ;;
  esac
done
[[ -x "$solver" ]] || { echo "ratios.sh: $solver is missing: run scripts/build.sh first" >&2; exit 69; }
"$python" -c 'import torch' 2>/dev/null || { echo "ratios.sh: $python lacks torch: apt-get install python3-torch" >&2; exit 69; }

hash_bench="${HASH_BENCH:-$root/build/bench/hash_bench}"
if [[ ! -x "$hash_bench" ]]; then
  echo "building hash_bench into build-bench/ ..." >&2
  cmake -S "$root" -B "$root/build-bench" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSOLVER_BUILD_BENCH=ON >/dev/null
  cmake --build "$root/build-bench" --target hash_bench >/dev/null
  hash_bench="$root/build-bench/bench/hash_bench"
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export SOLVER_KEY="$work/solver.key"  # a throwaway identity: the bench must not create or use the operator's key

# A copy of the task with proof.checkpoint_every = $2 (and, with --quick, a fixed number of steps).
task_copy() {
  "$python" - "$task" "$2" "$quick_steps" "$1" <<'PY'
import json, sys
task = json.load(open(sys.argv[1]))
task["proof"]["checkpoint_every"] = int(sys.argv[2])
if int(sys.argv[3]) > 0:
    task["training"].pop("epochs", None)
    task["training"]["steps"] = int(sys.argv[3])
json.dump(task, open(sys.argv[4], "w"), indent=1)
PY
}
task_copy "$work/k100.json" 100
task_copy "$work/k10.json" 10
# The long task: 10 epochs of the full task, a checkpoint every 10 steps.
"$python" - "$task" "$work/long.json" <<'PY'
import json, sys
task = json.load(open(sys.argv[1]))
task["training"].pop("steps", None)
task["training"]["epochs"] = 10
task["proof"]["checkpoint_every"] = 10
json.dump(task, open(sys.argv[2], "w"), indent=1)
PY

median() { sort -g | awk '{ v[NR] = $1 } END { printf "%.9f", (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
calc() { awk "BEGIN { printf \"%.9f\", $1 }"; }
now() { date +%s.%N; }
# "trained X: N steps in T s (R steps/s), ..." -> R
steps_per_s() { sed -n 's/.*steps in [0-9.]* s (\([0-9.]*\) steps\/s).*/\1/p'; }

# run_solver KEY TASK THREADS BUNDLE [--no-proof]: appends its steps/s and wall seconds to samples[KEY.*].
declare -A samples
run_solver() {
  local key="$1" task_file="$2" threads="$3" out="$4"; shift 4
  rm -rf "$out"
  local began; began=$(now)
  local text; text=$("$solver" run "$task_file" --out "$out" --threads "$threads" "$@" 2>/dev/null)
  local wall; wall=$(calc "$(now) - $began")
  samples[$key.rate]+="$(echo "$text" | steps_per_s) "
  samples[$key.wall]+="$wall "
}
med() { echo "${samples[$1]}" | tr ' ' '\n' | grep . | median; }
fmt() { printf "%.${2:-2}f" "$1"; }
percent() { printf "%+.1f%%" "$(calc "($1 / $2 - 1) * 100")"; }

rows=()
row() { rows+=("$(printf '%-34s %14s %14s %10s  %s' "$@")"); }
row "measure" "solver" "reference" "ratio" "goal"

for threads in $threads_list; do
  for ((r = 0; r < repeats; ++r)); do
    run_solver "t$threads.none" "$work/k100.json" "$threads" "$work/none" --no-proof
    python_json=$("$python" "$root/bench/train_reference.py" "$work/k100.json" --threads "$threads")
    samples[t$threads.python]+="$(echo "$python_json" | "$python" -c 'import json,sys; print(json.load(sys.stdin)["steps_per_s"])') "
    run_solver "t$threads.k100" "$work/k100.json" "$threads" "$work/k100-t$threads"
    run_solver "t$threads.k10" "$work/k10.json" "$threads" "$work/k10-t$threads"
  done
  none=$(med "t$threads.none.rate"); py=$(med "t$threads.python")
  row "train steps/s, threads=$threads" "$(fmt "$none" 1)" "$(fmt "$py" 1) (py)" "$(fmt "$(calc "$none / $py")")x" ">= 1.10x"
  for k in 100 10; do
    rate=$(med "t$threads.k$k.rate"); wall=$(med "t$threads.k$k.wall"); none_wall=$(med "t$threads.none.wall")
    goal=$([[ $k == 100 ]] && echo "<= 2%" || echo "-")
    row "proof k=$k steps/s, threads=$threads" "$(fmt "$rate" 1)" "$(fmt "$none" 1) (off)" \
        "$(percent "$none" "$rate")" "$goal (training loop)"
    row "proof k=$k run wall s, threads=$threads" "$(fmt "$wall")" "$(fmt "$none_wall") (off)" \
        "$(percent "$wall" "$none_wall")" "- (load, train, eval, bundle)"
  done
done

# verify_solver KEY BUNDLE [ARGS...]: appends the wall and CPU (user + system) seconds of
# `solver verify --json` to samples[KEY.*]; the verdict stays in $work/KEY.json.
verify_solver() {
  local key="$1" bundle="$2"; shift 2
  local TIMEFORMAT='%R %U %S' times wall user sys
  times=$( { time "$solver" verify "$bundle" --json "$@" >"$work/$key.json" 2>/dev/null; } 2>&1 )
  read -r wall user sys <<<"$times"
  samples[$key.wall]+="$wall "
  samples[$key.cpu]+="$(calc "$user + $sys") "
}
verdict_field() { "$python" -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$work/$1.json" "$2"; }
# What the verdict KEY replayed and the chances of catching a forger that it states.
detection_note() {
  "$python" - "$work/$1.json" <<'PY'
import json, sys
v = json.load(open(sys.argv[1]))
d = v["detection"]
chances = ", ".join(f'{f["fraction"] * 100:g}% ({f["segments"]}) {f["probability"]:.3f}' for f in d["faked_fractions"])
print(f'{v["segments_replayed"]} of {v["segments_total"]} segments replayed ({d["always_replayed"]} always, '
      f'{d["random_draws"]} drawn); chance to catch a forger who faked 1 segment {d["one_segment"]:.3f}, {chances}')
PY
}
train_seconds() { "$python" -c 'import json,sys; print(json.load(open(sys.argv[1]))["outcome"]["train_seconds"])' "$1/manifest.json"; }

# Verification against training, on the first thread count's k=100 bundle, with a fixed
# verifier seed so that every run replays the same segments.
first_threads="${threads_list%% *}"
bundle="$work/k100-t$first_threads"
train_s=$(train_seconds "$bundle")
for ((r = 0; r < repeats; ++r)); do
  verify_solver verify.default "$bundle" --seed 1
  verify_solver verify.all "$bundle" --seed 1 --segments all
done
# verify_rows KEY LABEL TRAIN_S: its wall time against training, against the goal for the share
# it replayed, and its CPU time.
verify_rows() {
  local v cpu fraction goal_s
  v=$(med "$1.wall"); cpu=$(med "$1.cpu"); fraction=$(verdict_field "$1" replayed_fraction)
  goal_s=$(calc "1.2 * $fraction * $3 + 1")
  row "$2 s vs training s" "$(fmt "$v")" "$(fmt "$3") (train)" "$(fmt "$(calc "$v / $3")")x" "${4:--}"
  row "$2 s, $(fmt "$(calc "$fraction * 100")" 1)% replayed" "$(fmt "$v")" "$(fmt "$goal_s") (goal)" \
      "$(fmt "$(calc "$v / $goal_s")")x" "<= 1.00x (1.2 x share + 1 s)"
  row "$2 CPU s (user + sys)" "$(fmt "$cpu")" "$(fmt "$v") (wall)" "$(fmt "$(calc "$cpu / $v")")x" "-"
}
verify_rows verify.default "verify (default)" "$train_s"
verify_rows verify.all "verify (all)" "$train_s"

# The long task, verified cheaply: the largest change of each epoch, the final segment, and
# enough random draws to catch with probability 0.9 a forger who faked 10% of the segments.
long_note="long task: skipped (--quick)"
if [[ $quick_steps == 0 ]]; then
  "$solver" run "$work/long.json" --out "$work/long" --threads "$first_threads" >/dev/null 2>&1
  long_train_s=$(train_seconds "$work/long")
  for ((r = 0; r < repeats; ++r)); do
    verify_solver verify.long "$work/long" --seed 1 --q 1 --catch-probability 0.9
  done
  verify_rows verify.long "long task verify" "$long_train_s" "<= 0.10x"
  long_note="long task: $(detection_note verify.long)"
fi

# Checkpoint hashing, over the k=10 bundle's checkpoints, both from the page cache.
mapfile -t ckpts < <(ls "$work/k10-t$first_threads"/ckpt/*.safetensors)
cat "${ckpts[@]}" >/dev/null
bytes=$(cat "${ckpts[@]}" | wc -c)
for ((r = 0; r < repeats; ++r)); do
  samples[hash.solver]+="$("$hash_bench" "${ckpts[@]}" | "$python" -c 'import json,sys; print(json.load(sys.stdin)["seconds"])') "
  began=$(now)
  openssl dgst -sha256 "${ckpts[@]}" >/dev/null
  samples[hash.openssl]+="$(calc "$(now) - $began") "
done
ours=$(calc "$bytes / $(med hash.solver) / 1e9"); theirs=$(calc "$bytes / $(med hash.openssl) / 1e9")
row "sha256 GB/s (${#ckpts[@]} ckpts, $((bytes / 1000000)) MB)" "$(fmt "$ours")" "$(fmt "$theirs") (openssl)" "$(fmt "$(calc "$ours / $theirs")")x" "-"

echo "$("$solver" version | head -1), python3-torch $("$python" -c 'import torch; print(torch.__version__)'), $(nproc) cores, median of $repeats"
printf '%s\n' "${rows[@]}"
echo "default verify: $(detection_note verify.default)"
echo "$long_note"
