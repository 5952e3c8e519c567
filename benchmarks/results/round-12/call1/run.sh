#!/bin/bash
# session 12 call 1: the backlog of session 11's lost call (rwkv6 control, recompute A/B and LM peak,
# e42/e66/mlstm/e70 compile times), retnet on its chunked spec (time, tf32x3 agreement), GLA launch sweep
R=$1
C=$(cat $R/.gpu_main/commit)
mkdir -p /tmp/r /tmp/w && cd /tmp/w && ln -sf $R/specs specs && ln -sf $R/tests tests && mkdir -p bench && cp $R/benchmarks/*.py bench/
T0=$(date +%s); END=$((T0 + 480))
left() { echo $(( END - $(date +%s) )); }
stamp() { echo "[$(( $(date +%s) - T0 )) s] $*" | tee -a /tmp/r/times.txt; }
pack() { (cd /tmp/r && tar czf $OUT/r.tgz --exclude='*.pt' --exclude='*.safetensors' --exclude='*/runs/*' . 2>/dev/null); }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > /tmp/r/device.txt; python3 -c "import torch,triton,fla;print(torch.__version__, triton.__version__, fla.__version__)" >> /tmp/r/device.txt 2>&1
echo $C > /tmp/r/commit.txt
gla() {  # label, launch settings...
  local lab=$1; shift
  stamp "gla $lab on GPU $CUDA_VISIBLE_DEVICES"
  timeout $(left) python3 bench/chunked.py --chunk 64 --no-loop --no-peers --profile --cases "gla GLA_100m" --commit $C --out /tmp/r/gla-$lab.md --launch "$@" > /tmp/r/gla-$lab.log 2>&1
  stamp "gla $lab rc=$?"; pack
}
lane0() {
  export CUDA_VISIBLE_DEVICES=0
  stamp "rwkv6 control"
  timeout 260 python3 bench/oracle.py --out /tmp/r/rwkv6-control --no-time --first-config --specs rwkv6 --dtypes bf16 --control fused_recurrent --trace-every 90 > /tmp/r/rwkv6-control.log 2>&1
  stamp "rwkv6 control rc=$?"; pack
  stamp "retnet tf32x3"
  timeout $(left) python3 bench/oracle.py --out /tmp/r/retnet-x3 --no-time --first-config --specs retnet --tf32-off tf32x3 --trace-every 90 > /tmp/r/retnet-x3.log 2>&1
  stamp "retnet tf32x3 rc=$?"; pack
}
lane1() {
  export CUDA_VISIBLE_DEVICES=1
  stamp "compile times"
  timeout 230 python3 bench/compile_times.py --out /tmp/r/ct --specs e42,e66,mlstm,e70,retnet,e74 --lanes 3 --timeout 70 --commit $C > /tmp/r/ct.log 2>&1
  stamp "compile times rc=$?"; pack
  for s in 0 1; do
    stamp "lm recompute=$s"
    ARCHDSL_RECOMPUTE=$s timeout $(( $(left) / 2 + 5 )) python3 -m archdsl.cli bench specs/mamba2.rnn --params 100M --align 128 --steps 20 --backend triton --seed 0 --out /tmp/r/lm-recompute-$s > /tmp/r/lm-recompute-$s.txt 2>&1
    stamp "lm recompute=$s rc=$?"; pack
  done
}
lane2() {
  export CUDA_VISIBLE_DEVICES=2
  stamp "retnet time"
  timeout 300 python3 bench/oracle.py --out /tmp/r/retnet-time --time-only --specs retnet --trace-every 90 > /tmp/r/retnet-time.log 2>&1
  stamp "retnet time rc=$?"; pack
  gla base2 store_half=1
  gla ss2 states_stages=2
  gla ds2 dstates_stages=2
  gla ss3 states_stages=3 dstates_stages=3
}
lane3() {
  export CUDA_VISIBLE_DEVICES=3
  local i=0
  for s in 0 1 0 1; do
    i=$((i+1)); stamp "layers recompute=$s ($i)"
    ARCHDSL_RECOMPUTE=$s timeout $(left) python3 bench/chunked.py --chunk 64 --no-loop --no-peers --profile --cases "gdn GDN_100m" "mamba2 Mamba2_100m" "gla GLA_100m" --commit $C --out /tmp/r/layers-$i-recompute-$s.md > /tmp/r/layers-$i-recompute-$s.log 2>&1
    stamp "rc=$?"; pack
  done
  gla base3 store_half=1
  gla sw8 states_warps=8 dstates_warps=8
  gla ss2ds2 states_stages=2 dstates_stages=2
  stamp "token sweep gla"
  timeout $(left) python3 bench/token_sweep.py --specs gla --tokens 4 8 16 32 --warps 4 8 --out /tmp/r/token-sweep-gla.md > /tmp/r/token-sweep-gla.log 2>&1
  stamp "token sweep rc=$?"; pack
}
lane0 & P0=$!; lane1 & P1=$!; lane2 & P2=$!; lane3 & P3=$!
wait $P0 $P1 $P2 $P3
pack; stamp all done
