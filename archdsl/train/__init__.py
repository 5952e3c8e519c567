"""Training and measuring: the fixed-budget trainer (``trainer``), its data, checkpoints, logs and
plots, ``archdsl train`` (``cli``), ``archdsl bench``, ``archdsl sample`` and a run's export."""
