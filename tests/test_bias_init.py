"""``bias(EXPR)``: a projection's bias with an initialiser, evaluated per output on its own axes.

Plain ``bias`` still starts at zero, ``bias init EXPR`` still initialises the weight, and the bias
costs the same parameters whatever starts it. The checker's messages are golden cases
(tests/golden/errors/bias_init_*.rnn, output_bias_init.rnn).
"""

from __future__ import annotations

import torch

from archdsl.lang import spec as S
from archdsl.lang.checker import instantiate
from archdsl.lang.parser import parse
from archdsl.layer import RecurrentLayer

SPEC = """hyper dim = 8
axis h = 2
axis i = 3
project x -> a[h, i], b[i] {options}
state s[h, i]
s' = tanh(s + a + b)
output s
"""


def options(text: str) -> S.ProjOptions:
    (project,) = [st for st in parse(SPEC.format(options=text)).body if isinstance(st, S.Project)]
    return project.options


def test_the_option_forms_parse_apart():
    assert options("bias") == S.ProjOptions(bias=True)
    assert options("") == S.ProjOptions()
    weight = options("bias init uniform(-1, 1)")  # 'init' after 'bias' is still the weight's
    assert weight.bias and weight.bias_init is None and isinstance(weight.init, S.Call)
    both = options("bias(ones()) init zeros()")
    assert both.bias and both.bias_init.func == "ones" and both.init.func == "zeros"
    assert options("init zeros() bias(2)").bias_init.value == 2  # options in any order


def layer(text: str) -> RecurrentLayer:
    return RecurrentLayer(instantiate(parse(SPEC.format(options=text))).layer, seed=0)


def test_each_output_gets_its_slice_on_its_own_axes():
    """linspace[i] runs along i in a[h, i] (its rows h-major, as the weight's) and in b[i]."""
    bias = layer("bias(linspace[i](0, 2) + 10)").proj["0"].bias.detach()
    line = torch.tensor([10.0, 11.0, 12.0])
    torch.testing.assert_close(bias, torch.cat([line, line, line]), rtol=0, atol=0)


def test_plain_bias_starts_at_zero_and_the_count_is_the_same():
    plain, init = layer("bias"), layer("bias(uniform(-1, 1))")
    assert not plain.proj["0"].bias.any()
    assert init.proj["0"].bias.abs().max() <= 1 and init.proj["0"].bias.std() > 0.3
    assert plain.ir.param_count() == init.ir.param_count() == layer("bias init zeros()").ir.param_count()


def test_the_bias_draw_follows_the_layer_seed():
    """Drawn from the layer's generator, as the weights are: one seed, one layer."""
    a, b = layer("bias(normal(0, 1))"), layer("bias(normal(0, 1))")
    torch.testing.assert_close(a.proj["0"].bias, b.proj["0"].bias, rtol=0, atol=0)
