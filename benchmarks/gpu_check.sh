#!/usr/bin/env bash
# The GPU figures in one call (issues 34, 43, 44), within ~9 minutes on a lent GPU machine:
#   1. installs what the GPU image lacks from the carried wheels (.gpucarry/whl: derived by
#      benchmarks/gpu_carry.py from the project's requirements, minus the image's own packages)
#   2. our trainer vs Hugging Face Trainer and a bare PyTorch loop (benchmarks/run.py cases):
#      bert-base on tweets at max_len 128 and on 512-token documents of real text, MiniLM's real
#      weights (equal validation score), MPNet with and without the SDPA swap, DeBERTa-v3's
#      architecture; samples/s, ms per step, MFU on real tokens, host reads in the loop
#   3. make all PROFILE=configs/gpu.yaml TIME=4m on the disaster tweets (MiniLM's real weights
#      carried in fp16): wall time per stage, CV, a validated submission, the paces it measured
#   4. the gpu-marked tests (tests/test_gpu.py)
# and writes one JSON, $OUT/gpu-<device>-<date>.json, with every figure, beside its logs.
#
#   run: bash benchmarks/gpu_check.sh  (carry: [".gpucarry"])   # on the device
#   bash benchmarks/gpu_check.sh --dry-run         # the same script on CPU, tiny sizes, minutes
#
# The dry run builds .gpucarry/ first where it is missing (python benchmarks/gpu_carry.py: wheels
# from PyPI, the fp16 MiniLM, the disaster tweets from ../shared), installs only its pure-Python
# wheels (the cp312 binaries are for the GPU image's Python; this interpreter has its own), trains
# a 2-layer encoder, and gives the flow TIME=3m. Tracking is off (TEXTCOMP_TRACK=0): mlflow-skinny
# is not carried (gpu_carry.py NOT_CARRIED).
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=0
PART=all  # --part trainer (the trainer cases) | flow (make all, then the gpu tests): a lease's 10 minutes a command hold one part each
while (( $# )); do
  case $1 in
    --dry-run) DRY=1 ;;
    --part) PART=$2; shift ;;
    *) echo "gpu_check: unknown argument $1 (--dry-run, --part all|trainer|flow)"; exit 2 ;;
  esac
  shift
done
[[ $PART == all || $PART == trainer || $PART == flow ]] || { echo "gpu_check: --part all|trainer|flow"; exit 2; }
run_part() { [[ $PART == all || $PART == "$1" ]]; }
OUT=${OUT:-$(mktemp -d /tmp/gpu-check-XXXX)}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/gpu_check.log") 2>&1
START=$(date +%s)
CARRY=$PWD/.gpucarry
TMP=$(mktemp -d /tmp/textcomp-gpu-XXXX)
step() { echo "== $(date +%T) +$(( $(date +%s) - START ))s $*"; }
secs() { echo $(( $(date +%s) - $1 )); }

if (( DRY )); then
  PY=${PYTHON:-$(python3 tools/setup_env.py which)}
  if [[ ! -d $CARRY/whl ]]; then
    step "building $CARRY (python benchmarks/gpu_carry.py)"
    "$PY" benchmarks/gpu_carry.py || { echo "gpu_check: benchmarks/gpu_carry.py failed"; exit 2; }
  fi
  WHEELS=$(ls "$CARRY"/whl/*-none-any.whl)
  # (name, benchmarks/run.py arguments): the GPU cases at tiny sizes
  CASES=("tiny-tweets|--model tiny --n-train 96 --n-val 32 --max-len 32 --epochs 1 --runs ours,bare,hf_grouped")
  FLOW_TIME=3m
  CASE_LIMIT=300
else
  PY=python3
  [[ -d $CARRY/whl ]] || { echo "gpu_check: $CARRY is missing: run python benchmarks/gpu_carry.py here first, then carry .gpucarry"; exit 2; }
  WHEELS=$(ls "$CARRY"/whl/*.whl)
  T="--token-batches --eval-batch-tokens 65536"
  CASES=(  # most wanted first; torch.compile in cases of its own (a compile that outruns CASE_LIMIT loses only itself)
    "bert-base-long-512|--model bert-base --data long --n-train 1200 --max-len 512 --batch-size 64 --epochs 2 --runs ours,hf_grouped,bare $T"
    "bert-base-tweets-128|--model bert-base --n-train 4000 --max-len 128 --epochs 2 --runs ours,hf_grouped $T"
    "minilm-tweets-128|--model minilm --n-train 4000 --max-len 128 --epochs 3 --lr 8e-5 --runs ours,hf_grouped $T"
    "bert-base-tweets-128-compiled|--model bert-base --n-train 4000 --max-len 128 --epochs 2 --runs ours_compiled $T"
    "mpnet-base-long-512|--model mpnet-base --data long --n-train 300 --max-len 512 --batch-size 32 --epochs 2 --runs ours,ours_eager $T"
    "deberta-v3-base-long-512|--model deberta-v3-base --data long --n-train 300 --max-len 512 --batch-size 32 --epochs 2 --runs ours $T"
  )
  FLOW_TIME=4m
  CASE_LIMIT=120  # one case never eats the next one's time
fi

step "install: $(echo "$WHEELS" | wc -w) wheels -> $TMP/site"
t=$(date +%s)
# shellcheck disable=SC2086
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$TMP/site" $WHEELS \
  || { echo "gpu_check: the carried wheels did not install"; exit 3; }
INSTALL_S=$(secs "$t")
# the fp16 MiniLM package first (it shadows a PyPI one), then the wheels, then the project
export PYTHONPATH="$CARRY/site:$TMP/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export TEXTCOMP_OFFLINE=1 TEXTCOMP_CACHE="$TMP/cache" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
export TEXTCOMP_TRACK=0
"$PY" -c "import optuna, ftfy, symspellpy, nlpaug, nltk, iterstrat, pipeline
import pipeline.stages.augment, pipeline.stages.tune, pipeline.stages.clean
from pipeline.core.embedded import corpus_path; print('embedded corpus:', corpus_path())
from pipeline.modeling.backbones import resolve_backbone; print('minilm:', resolve_backbone('packaged:minilm'))" \
  || { echo "gpu_check: imports failed after the install"; exit 3; }
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
      [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())])"

TRAINER_RC=0 TRAINER_S=0 FLOW_RC=0 FLOW_S=0 TESTS_RC=0 TESTS_S=0
if run_part trainer; then
step "trainer cases: ${#CASES[@]}"
t=$(date +%s)
for c in "${CASES[@]}"; do
  name=${c%%|*}; args=${c#*|}
  step "  $name: $args"
  # shellcheck disable=SC2086
  # each case's JSON in $TMP/cases, their logs in one file ($OUT brings back at most 8 files)
  mkdir -p "$TMP/cases"
  echo "== $name: $args" >> "$OUT/trainer.log"
  timeout "$CASE_LIMIT" "$PY" benchmarks/run.py --only trainer --case "$name" $args --tmp "$TMP/bench" \
    --out "$TMP/cases/trainer-$name.json" > "$TMP/cases/$name.log" 2>&1 || { TRAINER_RC=1; tail -5 "$TMP/cases/$name.log"; }
  cat "$TMP/cases/$name.log" >> "$OUT/trainer.log"
  grep -E '^(ours|ours_compiled|ours_eager|bare|hf_grouped|hf_maxlen): ' "$TMP/cases/$name.log" | cut -c1-220
done
TRAINER_S=$(secs "$t")

fi

if run_part flow; then
step "make all PROFILE=configs/gpu.yaml TIME=$FLOW_TIME on the disaster tweets"
mkdir -p "$TMP/work" .make
touch "$TMP/installed"  # the stamp: everything is installed (make would otherwise pip-install)
t=$(date +%s)
make all PYTHON="$PY" STAMP="$TMP/installed" DATA="$CARRY/data/nlp-getting-started" WORKDIR="$TMP/work" \
  PROFILE=configs/gpu.yaml TIME="$FLOW_TIME" SET="augment.methods=[] train.augment=[]" \
  > "$OUT/flow.log" 2>&1
FLOW_RC=$?
FLOW_S=$(secs "$t")
tail -15 "$OUT/flow.log"
cp "$TMP/work/reports/paces.json" "$OUT/paces.json" 2>/dev/null

step "gpu-marked tests"
t=$(date +%s)
"$PY" -m pytest -q -s -p no:cacheprovider -m gpu tests/test_gpu.py --junitxml="$OUT/gpu-tests.xml" > "$OUT/tests.log" 2>&1
TESTS_RC=$?
TESTS_S=$(secs "$t")
grep -E "^bucketed fold" "$OUT/tests.log"
tail -3 "$OUT/tests.log"
fi

step "results"
DRY=$DRY INSTALL_S=$INSTALL_S TRAINER_RC=$TRAINER_RC TRAINER_S=$TRAINER_S FLOW_RC=$FLOW_RC FLOW_S=$FLOW_S \
TESTS_RC=$TESTS_RC TESTS_S=$TESTS_S WORK="$TMP/work" OUT="$OUT" CARRY="$CARRY" FLOW_TIME="$FLOW_TIME" \
START="$START" PART="$PART" TMP="$TMP" "$PY" - <<'EOF'
import json, os, re, time
import xml.etree.ElementTree as ET
from pathlib import Path

import torch

env, out, work = os.environ, Path(os.environ["OUT"]), Path(os.environ["WORK"])
read = lambda p: json.loads(p.read_text()) if p.exists() else None  # noqa: E731
gpu = torch.cuda.is_available()
device = torch.cuda.get_device_name(0) if gpu else "cpu (dry run)"
plan = read(work / "reports" / "plan.json") or {}
sub = read(work / "submissions" / "submission.json") or {}
tests = {"passed": 0, "failed": 0, "skipped": 0}
if (out / "gpu-tests.xml").exists():
    suite = ET.parse(out / "gpu-tests.xml").getroot().iter("testsuite")
    for s in suite:
        n, f, e, k = (int(s.get(x, 0)) for x in ("tests", "failures", "errors", "skipped"))
        tests = {"passed": n - f - e - k, "failed": f + e, "skipped": k}
cases = {p.stem[len("trainer-"):]: read(p) for p in sorted((Path(env["TMP"]) / "cases").glob("trainer-*.json"))}
trainer = next(iter(cases.values()), None) or {}
res = {
    "device": device, "dry_run": env["DRY"] == "1", "date": time.strftime("%Y-%m-%d"),
    "gpus": torch.cuda.device_count() if gpu else 0,
    "capability": ".".join(map(str, torch.cuda.get_device_capability(0))) if gpu else None,
    "torch": torch.__version__, "carry": read(Path(env["CARRY"]) / "sizes.json"),
    "seconds": {"install": int(env["INSTALL_S"]), "trainer_bench": int(env["TRAINER_S"]),
                "flow": int(env["FLOW_S"]), "tests": int(env["TESTS_S"]), "total": int(time.time()) - int(env["START"])},
    "trainer": {k: trainer.get(k) for k in ("precision", "train_samples_per_s", "hf_trainer_samples_per_s",
                                            "train_speedup_vs_hf", "hf_trainer_grouped_samples_per_s",
                                            "train_speedup_vs_hf_grouped", "mfu", "peak_mem_mb", "peer_comparable")},
    "trainer_runs": trainer.get("trainer"), "trainer_rc": int(env["TRAINER_RC"]),
    "trainer_cases": {k: (v or {}).get("trainer_cases", {}).get(k) for k, v in cases.items()},
    "flow": {"rc": int(env["FLOW_RC"]), "time": env["FLOW_TIME"], "budget_s": plan.get("budget_s"),
             "stages": {k: {"estimate_s": v.get("estimate_s"), "actual_s": v.get("actual_s")}
                        for k, v in (plan.get("stages") or {}).items()},
             "runs": [{k: r.get(k) for k in ("name", "epochs", "max_len", "actual_s", "complete")}
                      for r in plan.get("runs") or []],
             "cuts": plan.get("cuts"), "replans": plan.get("replans"),
             "metric": sub.get("metric"), "cv": sub.get("cv"), "submission_valid": bool(sub.get("valid")),
             "submission_rows": sub.get("rows"), "source": sub.get("source")},
    "tests": {**tests, "rc": int(env["TESTS_RC"])},
    "paces": read(work / "reports" / "paces.json"),
}
ours = (trainer.get("trainer") or {}).get("ours") or {}
res["trainer"]["tokens_per_s"] = ours.get("tokens_per_s")
slug = re.sub(r"[^a-z0-9]+", "-", device.lower()).strip("-")
part = "" if env["PART"] == "all" else f"-{env['PART']}"
res["part"] = env["PART"]
path = out / f"gpu-{'dryrun' if res['dry_run'] else slug}-{res['date']}{part}.json"
path.write_text(json.dumps(res, indent=1) + "\n")
print(json.dumps({k: res[k] for k in ("device", "seconds", "trainer", "tests")}, indent=1))
for name, case in res["trainer_cases"].items():
    if not case:
        print(f"{name}: failed")
        continue
    runs = {w: case[w] for w in ("ours", "ours_compiled", "ours_eager", "bare", "hf_grouped", "hf_maxlen") if w in case}
    print(name, " ".join(f"{w}={r['samples_per_s']:.0f}/s,{r.get('ms_per_step', 0):.1f}ms,"
                         f"mfu={(r.get('mfu') or 0):.1%},f1={r['f1']:.3f}" for w, r in runs.items()))
print("flow:", json.dumps({k: res["flow"][k] for k in ("rc", "cv", "metric", "submission_valid")}))
print("wrote", path)
EOF
rm -rf "$TMP"
step "done"
(( TRAINER_RC == 0 && FLOW_RC == 0 && TESTS_RC == 0 ))
