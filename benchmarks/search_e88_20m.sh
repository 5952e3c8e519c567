#!/usr/bin/env bash
# Search evidence on one GPU: E88 at a 20M-parameter budget, 1-minute trials, as many as fit in about
# nine minutes (one device call), the two best re-trained with one more seed. Run from the repository
# root on the GPU machine (archdsl installed with the CUDA build of torch); it writes the report, its
# figures and the best configuration's command to $DEST (default benchmarks/results/search-e88-20M).
set -euo pipefail
DATA=${DATA:-../shared/data/corpus-train-1.txt.xz}
VAL=${VAL:-../shared/data/corpus-val.txt.xz}
DEST=${DEST:-benchmarks/results/search-e88-20M}
STUDY=search-e88-20M

archdsl search e88 --budget 20M --minutes 1 --trials 100 --time-limit "${LIMIT:-9}" --gpus 0 \
    --backend triton --depth 4:24 --data "$DATA" --val "$VAL" --seeds 1 --top-k 2 \
    --study "$STUDY" --out runs --quiet

mkdir -p "$DEST"
cp runs/$STUDY/report.md runs/$STUDY/report.html runs/$STUDY/*.png "$DEST/"
python - "$STUDY" "$DEST" <<'EOF'
import sys
from pathlib import Path

import optuna

from archdsl.search import results, study as st

name, dest = sys.argv[1], Path(sys.argv[2])
s = optuna.load_study(study_name=name, storage=st.open_storage(name, None, Path("runs")))
best = results.top_trials(s, 1)
(dest / "best-command.txt").write_text(best[0].user_attrs["command"] + "\n" if best else "no trial completed\n")
print((dest / "best-command.txt").read_text(), end="")
EOF
