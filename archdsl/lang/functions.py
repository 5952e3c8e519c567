"""The step's functions as data: which exist and how many arguments each takes (``FUNCTIONS``), the
ones that are one elementwise op (``UNARY``, and the operators ``BINARY``), and the ones written in
terms of the primitive ops (``SUGAR``). The elaborate pass reads these tables; adding a function is
adding a row."""

from __future__ import annotations

from archdsl.ir import Op

L2_EPS = 1e-6

#: per-step functions: name -> number of arguments (and whether it takes an axis, as ``sum[i]``)
FUNCTIONS: dict[str, tuple[int, bool]] = {
    "exp": (1, False),
    "log": (1, False),
    "tanh": (1, False),
    "sigmoid": (1, False),
    "softplus": (1, False),
    "relu": (1, False),
    "abs": (1, False),
    "sqrt": (1, False),
    "silu": (1, False),
    "sg": (1, False),
    "identity": (1, False),
    "square": (1, False),
    "max": (2, False),
    "min": (2, False),
    "spectral_norm": (2, False),
    "sum": (1, True),
    "mean": (1, True),
    "dot": (2, True),
    "l2norm": (1, True),
    "shift": (1, False),  # shift(a): the previous token's a; shift[c](a): the last |c| tokens on axis c
    "conv": (2, True),  # conv[c](a, w) = sum[c](w * shift[c](a)): a depthwise causal convolution
    "cos": (1, False),
    "sin": (1, False),
    "index": (0, True),  # index[i](): 0, 1, …, size(i) - 1 along axis i, a constant
    "position": (0, False),  # position(): the token's place in its sequence, 0, 1, … (per token)
    "rounded": (1, False),  # rounded(a): a rounded to the layer's 16-bit type (before the recurrence)
}
#: functions that are one elementwise op
UNARY = {
    "exp": Op.EXP,
    "log": Op.LOG,
    "tanh": Op.TANH,
    "sigmoid": Op.SIGMOID,
    "softplus": Op.SOFTPLUS,
    "relu": Op.RELU,
    "abs": Op.ABS,
    "sqrt": Op.SQRT,
    "cos": Op.COS,
    "sin": Op.SIN,
    "rounded": Op.ROUND,
}
#: the arithmetic operators of the per-step math
BINARY = {"+": Op.ADD, "-": Op.SUB, "*": Op.MUL, "/": Op.DIV}
#: functions written in terms of the primitive ops: name -> a tree ``(Op, *args)`` over the call's
#: arguments ``"a"``, ``"b"``, the size ``"|i|"`` of the axis in brackets, and literals. ``SUM`` and
#: ``SHIFT`` work along the axis in brackets. (``shift`` and ``spectral_norm`` have rules of their own.)
SUGAR: dict[str, object] = {
    "identity": "a",
    "square": (Op.MUL, "a", "a"),
    "silu": (Op.MUL, "a", (Op.SIGMOID, "a")),
    "sg": (Op.MUL, "a", (Op.MUL, "a", (Op.SIGMOID, "a"))),  # a * silu(a)
    "max": (Op.MAXIMUM, "a", "b"),
    "min": (Op.MINIMUM, "a", "b"),
    "sum": (Op.SUM, "a"),
    "dot": (Op.SUM, (Op.MUL, "a", "b")),
    "mean": (Op.DIV, (Op.SUM, "a"), "|i|"),
    "l2norm": (Op.DIV, "a", (Op.ADD, (Op.SQRT, (Op.SUM, (Op.MUL, "a", "a"))), L2_EPS)),
    "conv": (Op.SUM, (Op.MUL, (Op.SHIFT, "a"), "b")),
}
