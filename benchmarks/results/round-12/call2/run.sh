#!/bin/bash
# session 12 call 2: base (927a7f5) against new on the chunked layers (recompute off on both; then new with
# it on: the fixed recompute's cost), GLA's readout backward, retnet at RetNet_100m against fla and the loop,
# retnet at --params 100M (its failing kernel), GLA against fla's chunk_gla
R=$1
C=$(cat $R/.gpu_main/commit)
mkdir -p /tmp/r /tmp/w && cd /tmp/w && ln -sf $R/specs specs && ln -sf $R/tests tests && mkdir -p bench && cp $R/benchmarks/*.py bench/
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/base $R/.gpu_main/base/*.whl || exit 1
T0=$(date +%s); END=$((T0 + 500))
left() { echo $(( END - $(date +%s) )); }
stamp() { echo "[$(( $(date +%s) - T0 )) s] $*" | tee -a /tmp/r/times.txt; }
pack() { (cd /tmp/r && tar czf $OUT/r.tgz --exclude='*.pt' --exclude='*.safetensors' --exclude='*/runs/*' . 2>/dev/null); }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > /tmp/r/device.txt; python3 -c "import torch,triton,fla;print(torch.__version__, triton.__version__, fla.__version__)" >> /tmp/r/device.txt 2>&1
echo $C > /tmp/r/commit.txt
layers() {  # label, build (base|new), recompute
  stamp "layers $1"
  local pp=$PYTHONPATH; [ $2 = base ] && pp=/tmp/base:$PYTHONPATH
  PYTHONPATH=$pp ARCHDSL_RECOMPUTE=$3 timeout $(left) python3 bench/chunked.py --chunk 64 --no-loop --no-peers --profile --cases "gdn GDN_100m" "mamba2 Mamba2_100m" "gla GLA_100m" --commit $2 --out /tmp/r/layers-$1.md > /tmp/r/layers-$1.log 2>&1
  stamp "layers $1 rc=$?"; pack
}
lane0() {
  export CUDA_VISIBLE_DEVICES=0
  layers 1-base-r0 base 0; layers 2-new-r0 new 0; layers 3-base-r0 base 0; layers 4-new-r0 new 0
  layers 5-new-r1 new 1; layers 6-new-r0 new 0; layers 7-new-r1 new 1
}
lane1() {
  export CUDA_VISIBLE_DEVICES=1
  stamp "compile times retnet"
  timeout 200 python3 bench/compile_times.py --out /tmp/r/ct --specs retnet,retnet:heads=8:dim=1024,gla,mlstm --lanes 2 --timeout 90 --commit $C > /tmp/r/ct.log 2>&1
  stamp "compile times rc=$?"; pack
  stamp "token sweep gla new"
  timeout 100 python3 bench/token_sweep.py --specs gla gdn mamba2 --tokens 16 --warps 4 8 --out /tmp/r/token-sweep-new.md > /tmp/r/token-sweep-new.log 2>&1
  stamp "token sweep new rc=$?"; pack
  stamp "token sweep gla base"
  PYTHONPATH=/tmp/base:$PYTHONPATH timeout 100 python3 bench/token_sweep.py --specs gla gdn mamba2 --tokens 16 --warps 4 8 --out /tmp/r/token-sweep-base.md > /tmp/r/token-sweep-base.log 2>&1
  stamp "token sweep base rc=$?"; pack
}
lane2() {
  export CUDA_VISIBLE_DEVICES=2
  stamp "retnet vs fla and loop"
  timeout $(left) python3 bench/chunked.py --chunk 64 --profile --cases "retnet RetNet_100m" --commit $C --out /tmp/r/retnet.md > /tmp/r/retnet.log 2>&1
  stamp "retnet rc=$?"; pack
}
lane3() {
  export CUDA_VISIBLE_DEVICES=3
  stamp "gla vs chunk_gla"
  timeout $(left) python3 bench/chunked.py --chunk 64 --no-loop --profile --cases "gla GLA_100m" --commit $C --out /tmp/r/gla-peer.md > /tmp/r/gla-peer.log 2>&1
  stamp "gla peer rc=$?"; pack
}
lane0 & P0=$!; lane1 & P1=$!; lane2 & P2=$!; lane3 & P3=$!
wait $P0 $P1 $P2 $P3
pack; stamp all done
