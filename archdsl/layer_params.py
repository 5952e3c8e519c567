"""The parameter containers of a ``RecurrentLayer``: a spectral norm with its persistent power-
iteration vector, and the spec's parameters by name."""

from __future__ import annotations

import torch
from torch import nn


class SpectralNorm(nn.Module):
    """rho * W / (sigma + eps), sigma = |u^T W v| from ``iters`` power iterations per forward.

    As the research code computes it: each iteration normalises ``v = W^T u`` and ``u = W v`` by
    ``norm + eps``, and the persistent vector ``u`` carries over between forward passes (stored in
    training mode only). Gradients flow through W alone (u and v are constants, as in torch's
    ``spectral_norm``)."""

    def __init__(self, rows: int, rho: float, iters: int = 3, eps: float = 1e-8):
        super().__init__()
        if iters < 1:
            raise ValueError(f"spectral-norm iterations must be at least 1, found {iters}")
        self.rho, self.iters, self.eps = rho, iters, eps
        self.register_buffer("u", nn.functional.normalize(torch.randn(rows), dim=0))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        w2 = w.reshape(w.shape[0], -1)
        with torch.no_grad():
            u = self.u.to(w2.dtype)
            for _ in range(self.iters):
                v = w2.t() @ u
                v = v / (v.norm() + self.eps)
                u = w2 @ v
                u = u / (u.norm() + self.eps)
            if self.training:
                self.u.copy_(u)
        sigma = torch.dot(u, w2 @ v).abs()
        return w * (self.rho / (sigma + self.eps)).to(w.dtype)


class ParamTable(nn.Module):
    """The spec's parameters by name: ``table[name]``, and ``params.<name>`` in the state dict.

    Unlike ``nn.ParameterDict`` it takes any spec name: a name that is an attribute of the module
    (``type``, ``to``, ``float``, ``forward``, ``keys``…) or that ends in ``_`` is stored with one
    more ``_``, a mapping that no two names share (``type`` -> ``type_``, ``b_`` -> ``b__``)."""

    def __init__(self, params: dict[str, nn.Parameter]):
        super().__init__()
        self.names = tuple(params)
        for name, p in params.items():
            self.register_parameter(self.key(name), p)

    def key(self, name: str) -> str:
        taken = name in self.__dict__ or hasattr(type(self), name)  # not the parameters themselves
        return name + "_" if taken or name.endswith("_") else name

    def __getitem__(self, name: str) -> nn.Parameter:
        return self._parameters[self.key(name)]

    def __len__(self) -> int:
        return len(self._parameters)

    def items(self):
        """(spec name, parameter) pairs, in the spec's order."""
        return [(name, self[name]) for name in self.names]

    def values(self):
        return [p for _, p in self.items()]
