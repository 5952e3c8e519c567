"""Triton source for a cell: ``TRITON[op]`` gives each op's expression and ``_Kernel`` writes the lines
of one kernel body (the fused loop's kernels are in ``fused``, the per-token ones in ``token``, the
module around them in ``module``), in the style of flash-linear-attention's ``fused_recurrent.py``.

Naming: ``p_`` pointers, ``b_`` register blocks, ``o_``/``m_`` offsets and masks per axis,
``i_`` program ids; every name derived from the spec comes from the kernel's ``Namespace``
(codegen/emit/names.py), so no spec name can meet another or the emitter's own. Every block has one
dimension per layer axis (size 1 where a value lacks it), the layout the reference interpreter uses too.

A kernel given ``names`` (node -> its spec name) and ``sizes`` (axis -> a ``tl.constexpr`` name) reads
as the spec: values named ``b_kh``, offsets ``o_h * I + o_i``, literals folded into their uses,
broadcasts that the next op makes anyway dropped, masks that are always true left out.
"""

from __future__ import annotations

import math

from archdsl.codegen.emit.names import Namespace, identifier
from archdsl.codegen.plan import Plan

from archdsl.autodiff import GRAD, Cell
from archdsl.ir import BINARY, Graph, Op
from archdsl.reference import rename_permutation

TRITON: dict[Op, str] = {
    Op.INPUT: "",  # leaves are loaded by the kernels' prologues
    Op.PARAM: "",
    Op.STATE: "",
    Op.CONST: "tl.full({shape}, {attr}, tl.float32)",
    Op.NEG: "-{0}",
    Op.EXP: "tl.exp({0})",
    Op.LOG: "tl.log({0})",
    Op.TANH: "_tanh({0})",
    Op.SIGMOID: "tl.sigmoid({0})",
    Op.SOFTPLUS: "_softplus({0})",
    Op.RELU: "tl.maximum({0}, 0.0)",
    Op.ABS: "tl.abs({0})",
    Op.SQRT: "tl.sqrt({0})",
    Op.STEP: "tl.where({0} > 0, 1.0, 0.0)",
    Op.SIGN: "tl.where({0} > 0, 1.0, tl.where({0} < 0, -1.0, 0.0))",
    Op.COS: "tl.cos({0})",
    Op.SIN: "tl.sin({0})",
    Op.ADD: "{0} + {1}",
    Op.SUB: "{0} - {1}",
    Op.MUL: "{0} * {1}",
    Op.DIV: "{0} / {1}",
    Op.MAXIMUM: "tl.maximum({0}, {1})",
    Op.MINIMUM: "tl.minimum({0}, {1})",
    Op.SUM: "tl.sum(tl.where({mask}, {0}, 0.0), axis={axis}, keep_dims=True)",
    Op.RENAME: "tl.permute({0}, {perm})",
    Op.EXPAND: "{0} + tl.zeros({shape}, tl.float32)",
}

HELPERS = """
@triton.jit
def _tanh(x):
    # tanh from exp (portable to the CPU interpreter); a series near 0 keeps relative accuracy
    ax = tl.abs(x)
    e = tl.exp(-2.0 * ax)
    big = (1.0 - e) / (1.0 + e)
    x2 = x * x
    small = ax * (1.0 - x2 / 3.0 * (1.0 - 0.4 * x2))
    r = tl.where(ax < 0.0625, small, big)
    return tl.where(x < 0, -r, r)


@triton.jit
def _log1p(u):
    # log(1 + u) to a few ulps for small u (Goldberg): the rounding of 1 + u cancels out
    w = 1.0 + u
    return tl.where(w == 1.0, u, tl.log(w) * (u / (w - 1.0)))


@triton.jit
def _softplus(x):
    return tl.maximum(x, 0.0) + _log1p(tl.exp(-tl.abs(x)))
"""


def _row_major(name, axes, extents) -> str:
    """``name(a) * stride_a + …`` over ``axes`` laid out row-major with these extents."""
    terms = []
    for k, a in enumerate(axes):
        stride = math.prod(extents[k + 1 :])
        terms.append(name(a) + (f" * {stride}" if stride != 1 else ""))
    return " + ".join(terms)


class _Kernel:
    """Writes the lines of one kernel body; ``ns`` hands out its names derived from the spec.

    ``names``: node -> (key, preferred name) of the values the spec names (None: every value is
    ``b<node>``); ``sizes``: axis -> the name of its size, a ``tl.constexpr`` parameter (None: literal
    sizes). Either turns on the tidy form (``tidy``)."""

    def __init__(self, plan: Plan, names: dict | None = None, sizes: dict | None = None):
        self.plan, self.lines = plan, []
        self.ns = Namespace()
        self.names, self.sizes = names, sizes
        self.inline: dict[int, str] = {}  # literals written into their uses
        self.alias: dict[int, int] = {}  # broadcasts the next op makes anyway: node -> its argument
        if sizes:
            self.ns.taken.update(sizes.values())

    def w(self, line: str = "", indent: int = 1) -> None:
        self.lines.append("    " * indent + line if line else "")

    # ---- names derived from the spec ------------------------------------------------------------
    def ax(self, role: str, a: str) -> str:
        """Per-axis names: ``o_h`` offsets, ``m_h`` mask, ``l_h`` local offsets, ``i_h`` tile index."""
        return self.ns((role, a), f"{role}_{a}")

    def ptr(self, kind: str, name: str) -> str:
        """A tensor argument: ``kind`` is ``in`` (per-token inputs, cotangents ``d:y`` too), ``const``,
        ``out`` (a part's outputs, the loop's readout ``y``)."""
        return self.ns((kind, name), f"p_{self.label(name)}")

    def dptr(self, kind: str, name: str) -> str:
        """The gradient output of an ``in`` or ``const`` argument: ``p_dk``."""
        return self.ns(("d" + kind, name), f"p_d{self.label(name)}")

    def sptr(self, role: str, s: str) -> str:
        """A state's buffers: ``h0``/``ht`` initial and final, ``ck`` checkpoints, ``dht``/``dh0`` their
        cotangents, ``scr`` the segment's recomputed states."""
        return self.ns((role, s), f"p_{role}_{s}")

    def blk(self, s: str) -> str:
        """The register block a state lives in: ``b_S``."""
        return self.ns(("block", s), f"b_{s}")

    def dblk(self, kind: str, name: str) -> str:
        """The block a cotangent is carried or summed in: ``b_dS`` (state), ``b_dA_log`` (const)."""
        return self.ns(("dblock", kind, name), f"b_d{self.label(name)}")

    def label(self, name: str) -> str:
        """A leaf's readable name: a constant's spec name where it has one (``c1`` -> ``dt_bias``)."""
        return getattr(self, "labels", {}).get(name, name)

    def val(self, i: int) -> str:
        """The name of node ``i``'s value: its spec name (``b_kh``), else ``b<i>``."""
        if i in self.inline:
            return self.inline[i]
        if i in self.alias:
            return self.val(self.alias[i])
        if self.names and i in self.names:
            key, preferred = self.names[i]
            return self.ns(key, preferred)
        return f"b{i}"

    def nxt(self, i: int, ahead: int = 0) -> str:
        """The register a per-token value of a later step is prefetched into: ``n_kh`` (the next
        step), ``n2_kh`` (the one after), ``n<i>``."""
        tag = "n" if not ahead else f"n{ahead + 1}"
        if self.names and i in self.names:
            key, preferred = self.names[i]
            return self.ns(("next", key, ahead), f"{tag}_" + preferred.removeprefix("b_"))
        return f"{tag}_{i}" if ahead else f"n{i}"

    # ---- sizes, blocks, offsets, masks ----------------------------------------------------------
    @property
    def tidy(self) -> bool:
        return self.sizes is not None

    def size(self, a: str) -> str:
        return self.sizes[a] if self.sizes else str(self.plan.sizes[a])

    def numel(self, axes) -> str:
        """Elements of a compact tensor with these axes: ``(H * I)`` (or the literal product)."""
        if not self.tidy:
            return str(math.prod(self.plan.sizes[a] for a in axes))
        names = [self.size(a) for a in axes]
        return "1" if not names else names[0] if len(names) == 1 else "(" + " * ".join(names) + ")"

    def trivial(self, a: str) -> bool:
        """Is axis ``a``'s mask always true (its blocks tile it exactly)? Only the tidy form asks."""
        return self.tidy and self.plan.sizes[a] % self.plan.block[a] == 0

    def shape(self, axes) -> str:
        return "[" + ", ".join(str(self.plan.block[a]) if a in axes else "1" for a in self.plan.axes) + "]"

    def offset(self, axes) -> str:
        """Flat offset block of a compact tensor with these axes (row-major over its own axes)."""
        if not self.tidy:
            return _row_major(lambda a: self.ax("o", a), axes, [self.plan.sizes[a] for a in axes]) or "z0"
        terms = [
            self.ax("o", a) + "".join(f" * {self.size(b)}" for b in axes[k + 1 :]) for k, a in enumerate(axes)
        ]
        return " + ".join(terms) or "z0"

    def load(self, ptr: str, axes, cond: str | None = None) -> str:
        """A masked load, converted to fp32 (a value with no axes needs no mask)."""
        # the condition is on the step index: z0 + … makes it a block, as Triton's CPU interpreter
        # needs (and a value with no axes gets a block mask that way too)
        block_mask = self.mask(axes) if axes else None
        block_mask = None if block_mask == "None" else block_mask
        mask = " & ".join(m for m in (block_mask, f"(z0 + {cond})" if cond else None) if m)
        if self.tidy and not block_mask and cond:
            mask = f"z0 + {cond}"
        if not mask:
            return f"tl.load({ptr}).to(tl.float32)"
        return f"tl.load({ptr}, mask={mask}, other=0.0).to(tl.float32)"

    def mask(self, axes) -> str:
        return " & ".join(self.ax("m", a) for a in axes if not self.trivial(a)) or "None"

    def where(self, axes, value: str) -> str:
        """``value`` where the block is inside the tensor, 0 in its padding."""
        mask = self.mask(axes)
        return value if mask == "None" else f"tl.where({mask}, {value}, 0.0)"

    def store(self, ptr: str, value: str, axes, indent: int = 1) -> None:
        mask = self.mask(axes)
        self.w(f"tl.store({ptr}, {value}" + (f", mask={mask})" if mask != "None" else ")"), indent)

    def atomic_add(self, ptr: str, value: str, axes, indent: int = 1) -> None:
        """``value`` added in place (relaxed order: the kernel reads none of these sums back)."""
        mask = self.mask(axes)
        self.w(
            f"tl.atomic_add({ptr}, {value}"
            + (f", mask={mask}" if mask != "None" else "")
            + ', sem="relaxed")',
            indent,
        )

    def local_offset(self, axes) -> str:
        """Flat offset inside a padded register block (for scratch memory)."""
        return _row_major(lambda a: self.ax("l", a), axes, [self.plan.block[a] for a in axes]) or "0"

    def header(self, name: str, sig: list[str], flags: str) -> None:
        """``@triton.jit def name(pointers…, T, flags):`` then the program ids, offsets and masks."""
        self.lines += ["@triton.jit", f"def {name}(", "    " + ", ".join(sig) + ",", f"    T, {flags},", "):"]
        self.prologue()
        self.w("NC = tl.cdiv(T, CHUNK)")

    def load_consts(self, cell: Cell, params: dict[str, int]) -> None:
        """Parameter-only values are loaded once, before the time loop."""
        for c, i in params.items():
            ax = cell.consts[c]
            at = self.ptr("const", c) if self.tidy else f"{self.ptr('const', c)} + {self.offset(ax)}"
            self.w(f"{self.val(i)} = {self.load(at, ax)}" + ("" if self.tidy else f"  # {c}"))

    def prologue(self) -> None:
        p = self.plan
        self.w("i_b = tl.program_id(0).to(tl.int64)")
        self.w("i_s = tl.program_id(1)")
        rest = "i_s"
        for a in reversed(p.split):
            self.w(f"{self.ax('i', a)} = {rest} % {p.tiles[a]}")
            rest = f"({rest} // {p.tiles[a]})"
        K = len(p.axes)
        for k, a in enumerate(p.axes):
            idx = ", ".join(":" if j == k else "None" for j in range(K))
            step = "" if self.tidy and p.block[a] == 1 else f" * {p.block[a]}"
            start = f"{self.ax('i', a)}{step} + " if a in p.split else ""
            self.w(f"{self.ax('l', a)} = tl.arange(0, {p.block[a]})[{idx}]")
            self.w(f"{self.ax('o', a)} = {start}{self.ax('l', a)}")
            if not self.trivial(a):
                self.w(f"{self.ax('m', a)} = {self.ax('o', a)} < {self.size(a)}")
        self.w(f"z0 = tl.zeros({self.shape(())}, tl.int32)  # offset of a value with no axes")

    def node_expr(self, g: Graph, i: int) -> str:
        n = g[i]
        args = [self.val(a) for a in n.args]
        tmpl = TRITON[n.op]
        if n.op is Op.SUM:
            return self.sum_expr(n.attr, args[0])
        if n.op is Op.RENAME:
            return tmpl.format(*args, perm=tuple(rename_permutation(self.plan.axes, n.attr)))
        if n.op is Op.EXPAND and self.tidy:
            return f"tl.broadcast_to({args[0]}, {self.shape(n.axes)})"
        if n.op in (Op.EXPAND, Op.CONST):
            attr = n.attr if n.op is Op.EXPAND or math.isfinite(n.attr) else f"float('{n.attr}')"
            return tmpl.format(*args, shape=self.shape(n.axes), attr=attr)
        return tmpl.format(*args)

    def sum_expr(self, axis_name: str, x: str) -> str:
        """``x`` summed over one axis of the block (its padding left out), the axis kept as 1."""
        axis = self.plan.axes.index(axis_name)
        if self.trivial(axis_name):
            return f"tl.sum({x}, axis={axis}, keep_dims=True)"
        return TRITON[Op.SUM].format(x, mask=self.ax("m", axis_name), axis=axis)

    def compute(self, g: Graph, order, indent: int, skip=()) -> None:
        for i in order:
            n = g[i]
            if n.op in (Op.INPUT, Op.PARAM, Op.STATE) or i in skip or i in self.inline or i in self.alias:
                continue
            self.w(f"{self.val(i)} = {self.node_expr(g, i)}", indent)

    def fold(self, g: Graph, orders, kept) -> None:
        """The tidy form's folding over the nodes that ``orders`` compute: a literal whose every use is
        an elementwise op with a block goes into those uses (``1.0 - b_x``, not a block of ones made
        every step), and a broadcast whose every use is an elementwise op that broadcasts to the same
        block anyway is dropped. ``kept``: nodes read by name outside ``compute`` (stored, carried)."""
        uses: dict[int, list[int]] = {}
        for j in sorted(set().union(*map(set, orders))):
            for a in g[j].args:
                uses.setdefault(a, []).append(j)
        axes = {}
        for i in sorted(uses):
            n, js = g[i], uses[i]
            if i in kept or not all(g[j].op in BINARY for j in js):
                continue
            others = [g[j].args[1 - g[j].args.index(i)] if g[j].args.count(i) == 1 else None for j in js]
            if any(o is None or g[o].op in (Op.CONST, Op.EXPAND) for o in others):
                continue
            if n.op is Op.CONST and isinstance(n.attr, (int, float)) and math.isfinite(n.attr):
                self.inline[i] = repr(float(n.attr))
            elif n.op is Op.EXPAND:
                src = axes.get(n.args[0], g[n.args[0]].axes)
                if all(set(g[o].axes) | set(src) == set(g[j].axes) for o, j in zip(others, js)):
                    self.alias[i] = n.args[0]
                    axes[i] = src


LEAVES = (Op.INPUT, Op.PARAM, Op.STATE, Op.CONST)


def _needed(g: Graph, roots) -> list[int]:
    return sorted(g.ancestors(roots))


def _leaf_ids(g: Graph, order, op: Op) -> dict[str, int]:
    return {g[i].attr: i for i in order if g[i].op is op}


def _numel(plan: Plan, axes) -> int:
    return math.prod(plan.sizes[a] for a in axes)


def spec_names(g: Graph, names: dict[int, str], next_state=None, cotangent=None, n_fwd: int = 0) -> dict:
    """node -> (namespace key, preferred name) of every value of ``g`` that has a name: leaves by
    their own (``b_S``, the state's block itself; ``b_dy``), values the spec names (``b_kh``), new
    states (``b_S_next``), and in a backward the cotangents of those (``b_dkh``, ``b_ddelta``)."""
    out: dict[int, tuple] = {}
    for i, n in enumerate(g.nodes):
        if n.op is Op.STATE and n.attr.startswith(GRAD):
            s = n.attr[len(GRAD) :]
            out[i] = (("dblock", "state", s), f"b_d{s}")
        elif n.op is Op.STATE:
            out[i] = (("block", n.attr), f"b_{n.attr}")
        elif n.op in (Op.INPUT, Op.PARAM):
            out[i] = (("leaf", n.op.value, n.attr), "b_" + identifier(names.get(i, n.attr)))
    for i, name in names.items():
        if i < len(g) and g[i].op not in LEAVES:
            out.setdefault(i, (("value", name), f"b_{name}"))
    for s, i in (next_state or {}).items():
        out.setdefault(i, (("next", s), f"b_{s}_next"))
    for f, c in sorted((cotangent or {}).items(), reverse=True):
        if c >= n_fwd and c not in out and f in out and g[f].op is not Op.STATE and g[c].op not in LEAVES:
            key, preferred = out[f]
            out[c] = (("grad", key), "b_d" + preferred.removeprefix("b_"))
    return out


def const_labels(g: Graph, names: dict[int, str]) -> dict[str, str]:
    """Constants (``c0, c1, …``) that are a named spec value: ``{"c1": "dt_bias"}``."""
    return {g[i].attr: names[i] for i in range(len(g)) if g[i].op is Op.PARAM and i in names}
