"""The byte-level language model around any mixer (``model``), the baselines beside it
(``baselines``), parameter accounting and the budget solver (``budget``), and decoding (``generate``)."""
