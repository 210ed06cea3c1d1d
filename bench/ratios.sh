#!/usr/bin/env bash
# Performance as ratios, measured side by side on this machine (docs/performance.md):
#   1. training steps/s of `solver run --no-proof` against the same task trained by
#      bench/train_reference.py on Debian's python3-torch, at each --threads count;
#   2. the cost of proofs: steps/s and whole-command time with a checkpoint every k = 100 and
#      k = 10 against --no-proof;
#   3. `solver verify` (default selection, and --segments all) against the bundle's training time;
#   4. SHA-256 of the bundle's checkpoints by solver's code (bench/hash_bench) against openssl.
# Each figure is the median of 3 runs (--quick: 1 run of a 300-step task).
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

# Verification against training, on the first thread count's k=100 bundle.
first_threads="${threads_list%% *}"
bundle="$work/k100-t$first_threads"
train_s=$("$python" -c 'import json,sys; print(json.load(open(sys.argv[1]))["outcome"]["train_seconds"])' "$bundle/manifest.json")
for selection in default all; do
  args=(); [[ $selection == all ]] && args=(--segments all)
  for ((r = 0; r < repeats; ++r)); do
    began=$(now)
    "$solver" verify "$bundle" "${args[@]}" >/dev/null 2>&1
    samples[verify.$selection]+="$(calc "$(now) - $began") "
  done
  v=$(med "verify.$selection")
  row "verify ($selection) s vs training s" "$(fmt "$v")" "$(fmt "$train_s") (train)" "$(fmt "$(calc "$v / $train_s")")x" "-"
done

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
