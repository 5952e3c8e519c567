"""Pass 5, verify: what can only be judged once the whole step is elaborated, then the IR.

Every learned value (parameter, projection output) must be read: one that is not would silently never
train. A state whose update does not read it, and a definition nothing reads, are warnings. Then the
:class:`LayerIR` is assembled — stored tensors laid out in axis declaration order — and checked
structurally by ``archdsl.ir.verify``.
"""

from __future__ import annotations

from archdsl import ir
from archdsl.errors import ArchdslError, ArchdslWarning
from archdsl.ir import LayerIR, Op, ParamSpec
from archdsl.lang import spec as S
from archdsl.lang.elaborate import Elaborator
from archdsl.lang.scope import Scope, Step


def verify(names: Scope, step: Step, el: Elaborator) -> tuple[LayerIR, list[ArchdslWarning]]:
    warnings = _not_recurrent(step, el)
    _all_learned_used(step, el)
    for name, st in names.values.items():
        if isinstance(st, S.Define) and name not in el.node_of:
            warnings.append(ArchdslWarning(f"'{name}' is defined but never used", st.target.span))
    layer = _layer(names, step, el)
    ir.verify(layer)
    return layer, warnings


def _not_recurrent(step: Step, el: Elaborator) -> list[ArchdslWarning]:
    """A warning for each state whose update does not read the state."""
    warnings = []
    for s in step.states:
        deps = el.graph.ancestors([el.next_state[s.name]])
        if not any(el.graph[d].op is Op.STATE and el.graph[d].attr == s.name for d in deps):
            warnings.append(
                ArchdslWarning(
                    f"the update of state '{s.name}' does not depend on '{s.name}'",
                    step.updates[s.name].span,
                    "the layer is then not recurrent in this state",
                )
            )
    return warnings


def _all_learned_used(step: Step, el: Elaborator) -> None:
    """Every learned thing must be used: a declared but unused parameter would silently not train."""
    for st in [*step.params, *(t for p in step.projections for t in p.targets)]:
        if st.name not in el.used:
            what = "parameter" if isinstance(st, S.Param) else "projection output"
            raise ArchdslError(
                f"{what} '{st.name}' is never used",
                st.span,
                "an unused learned value would silently never train; remove it or declare it inside an 'if'",
            )


def _layer(names: Scope, step: Step, el: Elaborator) -> LayerIR:
    axes = tuple(names.axes)
    out = step.output
    return LayerIR(
        name=names.decl.spec.name,
        source=names.decl.spec.source,
        hypers=dict(names.hypers),
        choices=dict(names.choices),
        sizes={a: names.axis_size(a) for a in axes},
        axes=axes,
        projections=el.projections,
        # stored tensors are laid out in axis declaration order, whatever order a spec lists them in
        params=[ParamSpec(p.name, names.canon(p.axes), p.init) for p in step.params],
        states={s.name: names.canon(s.axes) for s in step.states},
        graph=el.graph,
        values={k: v for k, v in el.node_of.items() if not k.endswith("'")},
        pre=dict(el.pre),
        sequence=dict(el.sequence),
        next_state=el.next_state,
        output=out.name,
        output_node=el.output_node,
        output_init=out.options.init,
        dim=int(names.hypers["dim"]),
        numbers={
            **names.hypers,
            **{k: names.number(S.Ref(k, False, None, v.span)) for k, v in names.lets.items()},
            **{a: names.axis_size(a) for a in axes},
        },
    )
