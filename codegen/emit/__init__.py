"""Writing Triton source: each op's expression and the kernels of a step (``triton``), the persistent
dense recurrence's kernels (``persistent``), the generated module around them (``module``) and its
header (``prelude``), and names that cannot collide (``names``). Text only: no torch."""
