"""Compiled cells at run time: the execution strategies (``strategies``) and the cells they build
(``loop``, ``persistent``, ``dense``, ``chunked``), the on-disk module cache (``runtime``) and
autotuning (``tune``)."""
