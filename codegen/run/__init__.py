"""Compiled cells at run time: the execution strategies (``strategies``) and the cells they build
(``loop``, ``persistent``, ``dense``, ``chunked``), the ``torch.library`` custom ops every cell is
called through (``ops``), the on-disk module cache (``runtime``) and autotuning (``tune``)."""
