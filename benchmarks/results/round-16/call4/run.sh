#!/bin/bash
# session 16, call 4 (one GPU): chunk_dmat_kernel with every tile read once (new) against e31d233 (base),
# alternating; then the dv kernel's key block and warps on the new build
R=$1
C=$(cat $R/.gpu_main/commit)
mkdir -p /tmp/r /tmp/w && cd /tmp/w && ln -sfn $R/specs specs && ln -sfn $R/tests tests && mkdir -p bench && cp $R/benchmarks/*.py bench/
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/base $R/.gpu_main/base/*.whl || exit 1
T0=$(date +%s); END=$((T0 + 330))
left() { echo $(( END - $(date +%s) )); }
stamp() { echo "[$(( $(date +%s) - T0 )) s] $*" | tee -a /tmp/r/times.txt; }
pack() { (cd /tmp/r && tar czf $OUT/r.tgz . 2>/dev/null); }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > /tmp/r/device.txt; python3 -c "import torch,triton,fla;print(torch.__version__, triton.__version__, fla.__version__)" >> /tmp/r/device.txt 2>&1
echo $C > /tmp/r/commit.txt; date -u > /tmp/r/date.txt
layers() {  # label, build (base|new), launch settings...
  local label=$1 build=$2; shift 2
  stamp "layers $label $build $*"
  local pp=$PYTHONPATH; [ $build = base ] && pp=/tmp/base:$PYTHONPATH
  PYTHONPATH=$pp timeout $(left) python3 bench/chunked.py --chunk 64 --no-loop --no-peers --profile --cases "gdn GDN_100m" --commit $build ${@:+--launch "$@"} --out /tmp/r/layers-$label.md > /tmp/r/layers-$label.log 2>&1
  stamp "layers $label rc=$?"; pack
}
layers 1-base base; layers 2-new new; layers 3-base base; layers 4-new new
layers 5-new-bk64 new bk=64; layers 6-new-tw8 new token_warps=8; layers 7-new-bk64-tw8 new bk=64 token_warps=8
cat /tmp/r/times.txt
for f in /tmp/r/layers-*.log; do echo "== $f"; grep -E "chunk_|^\| gdn" $f | awk '{print $1, $(NF-1), $(NF-5)}'; done
