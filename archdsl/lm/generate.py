"""Decoding with the byte-level LM: the forward with a state per layer, one token at a time, and
sampling (``LanguageModel.forward_state``, ``.step``, ``.generate`` call these).

The states are a list with one entry per layer, each that layer's dict {state name: [B, *axes]}.
The computation is ``LanguageModel.forward``'s, so a prompt fed whole and then token by token gives
the logits of the whole sequence fed at once.

On a GPU, ``generate`` replays each byte's step as one CUDA graph (``GraphedStep``): a byte through
every layer is hundreds of small kernels, each with Python around its launch, so an eager step waits
on the host (0.75–3.5 ms a layer on an H200 for 25–75 µs of GPU work, benchmarks/host_time.py).
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

from archdsl.errors import ArchdslError
from archdsl.lm.blocks import normed

States = list  # [dict[str, torch.Tensor] | None], one per layer


def spec_layers(model) -> list:
    """The ``RecurrentLayer`` of each layer; a model with other mixers (a baseline) cannot decode here."""
    from archdsl.layer import RecurrentLayer

    layers = [getattr(m, "layer", None) for m in model.mixers]
    if not all(isinstance(layer, RecurrentLayer) for layer in layers):
        name = model.info.get("model", type(model.mixers[0]).__name__)
        raise ArchdslError(
            f"'{name}' has no one-step path in archdsl: decoding needs a model built from a spec",
            hint="baselines (mamba2, fla-gdn, llama, nn-lstm, nn-gru) decode with their own libraries",
        )
    return layers


def forward_state(model, idx: torch.Tensor, states: States | None = None, cu_seqlens=None):
    """idx [B, T] bytes -> (logits [B, T, 256], the states after the last byte), from ``states``.

    ``cu_seqlens``: idx [1, total] packs sequences (archdsl/packed.py); the states are then each
    sequence's, [N, *axes] per layer."""
    layers = spec_layers(model)
    if not isinstance(idx, torch.Tensor) or idx.dim() != 2 or idx.dtype not in (torch.int64, torch.int32):
        found = f"{idx.dtype} {list(idx.shape)}" if isinstance(idx, torch.Tensor) else type(idx).__name__
        raise ArchdslError(f"idx must be integer bytes [batch, time], found {found}")
    states = list(states) if states is not None else [None] * len(layers)
    if len(states) != len(layers):
        raise ArchdslError(f"states: one entry per layer ({len(layers)}), found {len(states)}")
    y = model.embed(idx.long())
    r = torch.zeros(y.shape, dtype=torch.float32, device=y.device)
    out = []
    for norm, layer, s in zip(model.norms, layers, states):
        r = r + y.float()
        y, s = layer(normed(norm, r), s, cu_seqlens=cu_seqlens)
        out.append(s)
    h = normed(model.norm_f, r + y.float())
    return F.linear(h, model.embed.weight), out


def step(model, token: torch.Tensor, states: States | None = None):
    """token [B] -> (logits [B, 256], the states after it)."""
    logits, states = forward_state(model, token.reshape(-1, 1), states)
    return logits[:, 0], states


def _shapes(states: States) -> list:
    return [{k: (v.shape, v.dtype) for k, v in s.items()} for s in states]


class GraphedStep:
    """``step`` captured once as a CUDA graph: the byte and every layer's states live in fixed buffers,
    each call copies the byte in and replays the graph, which computes the logits and writes the new
    states over the old. The logits returned are the graph's buffer: the next call overwrites them.

    ``states`` must have the shapes every later step keeps (a spec that reads earlier tokens carries
    its last inputs, a history that grows over the first steps: ``_Stepper`` waits for it). Raises
    what the capture raises (an operation a graph cannot hold), after which eager steps still run."""

    def __init__(self, model, token: torch.Tensor, states: States):
        self.token = token.clone()
        self.states = [{k: v.clone() for k, v in s.items()} for s in states]
        # a caller's autocast as it is, its cast cache off: the graph must not read casts made outside it
        cast = torch.autocast(
            "cuda", torch.get_autocast_dtype("cuda"), torch.is_autocast_enabled("cuda"), cache_enabled=False
        )
        side = torch.cuda.Stream()  # a first step off the capture: kernels compiled and tuned for it
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side), cast:
            step(model, self.token, self.states)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph), cast:
            self.logits, new = step(model, self.token, self.states)
            for old, s in zip(self.states, new):
                for name, t in s.items():
                    old[name].copy_(t)

    def __call__(self, token: torch.Tensor) -> torch.Tensor:
        self.token.copy_(token)
        self.graph.replay()
        return self.logits


class _Stepper:
    """``step`` with the states carried: eager until the states keep their shapes from one step to
    the next, then (``graphs``) one ``GraphedStep``; if its capture fails, eager to the end, with a
    warning that says why."""

    def __init__(self, model, states: States, graphs: bool):
        self.model, self.states, self.graphs, self.graphed = model, states, graphs, None

    def __call__(self, token: torch.Tensor) -> torch.Tensor:
        if self.graphed is not None:
            return self.graphed(token)
        logits, new = step(self.model, token, self.states)
        if self.graphs and _shapes(new) == _shapes(self.states):
            try:
                self.graphed = GraphedStep(self.model, token, new)
            except RuntimeError as e:  # what a graph cannot hold: decode on without one
                reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
                warnings.warn(f"generate: decoding without CUDA graphs ({reason})", stacklevel=3)
                self.graphs = False
        self.states = new
        return logits


def sample(logits: torch.Tensor, temperature: float, top_k: int | None, generator) -> torch.Tensor:
    """One byte per row of logits [B, 256]: the most likely at temperature 0, else a draw."""
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(logits.softmax(-1), 1, generator=generator)[:, 0]


@torch.no_grad()
def generate(
    model,
    prompt,
    n: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int | None = None,
    graphs: bool | None = None,
):
    """The prompt followed by ``n`` sampled bytes.

    ``prompt``: str or bytes (returns the same type; a str decodes invalid UTF-8 as U+FFFD) or an
    integer tensor [B, T] (returns [B, T + n]). The prompt runs through the full forward once, then
    each new byte through one step. ``graphs``: replay the step as a CUDA graph (``GraphedStep``;
    None: on a GPU; the same bytes as eager steps)."""
    as_type = type(prompt)
    if isinstance(prompt, str):
        prompt = prompt.encode()
    if isinstance(prompt, bytes | bytearray):
        prompt = torch.tensor(list(prompt), dtype=torch.long).reshape(1, -1)
    if not isinstance(prompt, torch.Tensor) or prompt.dim() != 2 or prompt.shape[1] == 0:
        raise ArchdslError("generate: the prompt must be non-empty text, bytes, or a tensor [batch, time]")
    if not (isinstance(n, int) and n >= 0) or temperature < 0 or (top_k is not None and top_k < 1):
        raise ArchdslError(
            f"generate: n >= 0, temperature >= 0 and top_k >= 1, found {n}, {temperature}, {top_k}"
        )
    device = model.embed.weight.device
    if graphs is None:
        graphs = device.type == "cuda"
    elif graphs and device.type != "cuda":
        raise ArchdslError(f"generate: CUDA graphs need a model on a GPU, found one on {device}")
    gen = torch.Generator(device=device).manual_seed(seed) if seed is not None else None
    was_training = model.training
    model.eval()
    try:
        logits, states = forward_state(model, prompt.to(device), None)
        out = [prompt.to(device)]
        last, stepper = logits[:, -1], _Stepper(model, states, graphs)
        for k in range(n):
            token = sample(last, temperature, top_k, gen)
            out.append(token[:, None])
            if k + 1 < n:
                last = stepper(token)
    finally:
        model.train(was_training)
    tokens = torch.cat(out, dim=1)
    if as_type in (str, bytes, bytearray):
        data = bytes(tokens[0].tolist())
        return data.decode("utf-8", errors="replace") if as_type is str else data
    return tokens
