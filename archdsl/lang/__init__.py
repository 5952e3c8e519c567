"""The language: ``.rnn`` text -> syntax tree -> a checked, typed IR (``archdsl.ir``).

parser (lark grammar -> ``spec`` dataclasses, ``syntax_errors`` in words) -> checker (a spec and a
configuration -> ``LayerIR`` in five passes: ``declarations`` -> ``config`` -> ``scope`` ->
``elaborate`` -> ``verify``; sizes evaluated by ``sizes``, search ranges read by ``space``) ->
``check_cmd`` (``archdsl check``). Nothing here imports torch or triton: checking a spec is instant on
any machine.
"""
