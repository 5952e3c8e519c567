#!/bin/bash
# session 12 call 3: mlstm's illegal memory access (new and base, launches blocking), the cycle fix's
# peak and time (recompute on/off), retnet in bf16 products, gdn/mamba2 against the libraries
R=$1
C=$(cat $R/.gpu_main/commit)
mkdir -p /tmp/r /tmp/w && cd /tmp/w && ln -sf $R/specs specs && ln -sf $R/tests tests && mkdir -p bench && cp $R/benchmarks/*.py bench/
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/base $R/.gpu_main/base/*.whl || exit 1
T0=$(date +%s); END=$((T0 + 470))
left() { echo $(( END - $(date +%s) )); }
stamp() { echo "[$(( $(date +%s) - T0 )) s] $*" | tee -a /tmp/r/times.txt; }
pack() { (cd /tmp/r && tar czf $OUT/r.tgz --exclude='*.pt' --exclude='*.safetensors' --exclude='*/runs/*' . 2>/dev/null); }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > /tmp/r/device.txt; python3 -c "import torch,triton,fla;print(torch.__version__, triton.__version__, fla.__version__)" >> /tmp/r/device.txt 2>&1
echo $C > /tmp/r/commit.txt
mlstm() {  # label build
  stamp "mlstm $1"
  local pp=$PYTHONPATH; [ $2 = base ] && pp=/tmp/base:$PYTHONPATH
  PYTHONPATH=$pp CUDA_LAUNCH_BLOCKING=1 timeout 120 python3 bench/compile_times.py --out /tmp/r/ct-$1 --specs mlstm --lanes 1 --timeout 55 --commit $2 > /tmp/r/ct-$1.log 2>&1
  stamp "mlstm $1 rc=$?"; pack
}
layers() {  # label recompute
  stamp "layers $1"
  ARCHDSL_RECOMPUTE=$2 timeout $(left) python3 bench/chunked.py --chunk 64 --no-loop --no-peers --profile --cases "gdn GDN_100m" "mamba2 Mamba2_100m" "gla GLA_100m" "retnet RetNet_100m" --commit $C --out /tmp/r/layers-$1.md > /tmp/r/layers-$1.log 2>&1
  stamp "layers $1 rc=$?"; pack
}
lane0() { export CUDA_VISIBLE_DEVICES=0; mlstm new1 new; mlstm base1 base; mlstm new2 new; }
lane1() { export CUDA_VISIBLE_DEVICES=1; layers 1-r0 0; layers 2-r1 1; layers 3-r0 0; layers 4-r1 1; }
lane2() {
  export CUDA_VISIBLE_DEVICES=2
  stamp "gdn mamba2 peers"
  timeout $(left) python3 bench/chunked.py --chunk 64 --no-loop --profile --cases "gdn GDN_100m" "mamba2 Mamba2_100m" --commit $C --out /tmp/r/peers.md > /tmp/r/peers.log 2>&1
  stamp "peers rc=$?"; pack
}
lane3() {
  export CUDA_VISIBLE_DEVICES=3
  stamp "retnet 100M compile"
  timeout 150 python3 bench/compile_times.py --out /tmp/r/ct-retnet --specs retnet,e42 --lanes 2 --timeout 70 --commit $C > /tmp/r/ct-retnet.log 2>&1
  stamp "retnet compile rc=$?"; pack
  mlstm new3 new
}
lane0 & P0=$!; lane1 & P1=$!; lane2 & P2=$!; lane3 & P3=$!
wait $P0 $P1 $P2 $P3
pack; stamp all done
