# IMM ablation arms (benchmarks/imm.md, "Ablations"). usage: bash benchmarks/scripts/imm_ablation.sh VARIANT... (each "default" or "field=value[,field=value]")
export OMP_NUM_THREADS=1
B=${FEWSTEP:-.venv/bin/fewstep}
for v in "$@"; do
  if [ "$v" = default ]; then set_args=(); else set_args=(--imm-set "$v"); fi
  $B bench toy --methods imm --datasets checkerboard2d,gmm8d --steps 1,2,4,8 --train-scale 0.25 "${set_args[@]}" \
     --runs-dir bench_out/imm-ablation-runs --out "bench_out/imm-ablation/$v"
done
