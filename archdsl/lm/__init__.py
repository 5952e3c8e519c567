"""The byte-level language model: its config and spec lookup (``config``, no torch), the model around
any mixer (``model``, with the torch blocks and norms in ``blocks``), the baselines, each count beside
its constructor (``baselines``), parameter accounting and the budget solver (``budget``), ``build_model``
(``zoo``: resolves a spec once) and decoding (``generate``)."""
