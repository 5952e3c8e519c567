"""Writing Triton source: each op's expression and the kernels of a step (``triton``), the generated
module around them (``module``), and names that cannot collide (``names``). Text only: no torch."""
