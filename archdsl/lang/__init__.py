"""The language: ``.rnn`` text -> syntax tree -> a checked, typed IR (``archdsl.ir``).

parser (lark grammar -> ``spec`` dataclasses, ``syntax_errors`` in words) -> checker (a spec and a
configuration -> ``LayerIR``, sizes evaluated by ``sizes``) -> ``check_cmd`` (``archdsl check``).
Nothing here imports torch or triton: checking a spec is instant on any machine.
"""
