#!/bin/bash
# session 23, call 1 (one GPU): where the host's time goes in eager layer calls (host_time.py) and
# what one Triton launch costs from Python on this machine
R=$1
C=$(cat $R/.gpu_main/commit)
D=/tmp/s23a
mkdir -p $D/prof /tmp/w23a && cd /tmp/w23a && ln -sfn $R/specs specs && mkdir -p bench && cp $R/benchmarks/*.py bench/
T0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - T0 )) s] $*" | tee -a $D/times.txt; }
pack() { (cd $D && tar czf $OUT/r.tgz . 2>/dev/null); }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > $D/device.txt; python3 -c "import torch,triton;print(torch.__version__, triton.__version__)" >> $D/device.txt 2>&1
lscpu | grep -i "model name" >> $D/device.txt
echo $C > $D/commit.txt; date -u > $D/date.txt
( while sleep 20; do pack; done ) & P=$!
stamp "launch"
timeout 120 python3 - > $D/launch.txt 2>&1 <<'PY'
import time, torch, triton, triton.language as tl
@triton.jit
def k(a, b, c, s0, s1, s2, s3, s4, s5, s6, s7, s8, s9, n, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(c + i, tl.load(a + i, mask=i < n) + tl.load(b + i, mask=i < n), mask=i < n)
a = torch.zeros(1024, device="cuda"); b = torch.zeros_like(a); c = torch.zeros_like(a)
args = (a, b, c, *range(1, 11), 1024)
for _ in range(10): k[(8,)](*args, BLOCK=128)
torch.cuda.synchronize()
for rep in range(3):
    t = time.perf_counter()
    for _ in range(2000): k[(8,)](*args, BLOCK=128)
    h = (time.perf_counter() - t) / 2000 * 1e6
    torch.cuda.synchronize()
    print(f"jit launch: {h:.1f} us host a launch (14 args)")
x = torch.zeros(1024, device="cuda")
t = time.perf_counter()
for _ in range(2000): x.add_(1)
print(f"torch add_: {(time.perf_counter() - t) / 2000 * 1e6:.1f} us host a launch")
PY
stamp "launch rc=$?"
stamp "host_time"
timeout 400 python3 bench/host_time.py --cases gdn e88 mamba2 --cprofile $D/prof > $D/host.md 2> $D/host.log
stamp "host_time rc=$?"
kill $P; pack
cat $D/times.txt $D/launch.txt $D/host.md; tail -5 $D/host.log
