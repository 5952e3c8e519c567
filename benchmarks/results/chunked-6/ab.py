"""Runs a benchmark script with the short convolution's old backward when CONV_OLD=1 (call 1's A/B):
``python ab.py SCRIPT [ARGS…]``."""

import os
import runpy
import sys

from archdsl.codegen.run import shortconv

if os.environ.get("CONV_OLD") == "1":
    shortconv.BACKWARD.update(halo=False, bt=32)
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
