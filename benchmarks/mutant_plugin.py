"""A pytest plugin that imports one module of archdsl with a planted bug (benchmarks/mutation.py).

``ARCHDSL_MUTANT=<id>`` names the mutant; before anything imports the module, a finder placed first
on ``sys.meta_path`` compiles the mutated source in its place, so the files on disk never change and
several mutants can run at once."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys

MODULES = {
    "archdsl/autodiff.py": "archdsl.autodiff",
    "archdsl/reference.py": "archdsl.reference",
    "codegen/emit/triton.py": "archdsl.codegen.emit.triton",
    "codegen/hoist.py": "archdsl.codegen.hoist",
    "codegen/emit/persistent.py": "archdsl.codegen.emit.persistent",
}


class _Loader(importlib.machinery.SourceFileLoader):
    def __init__(self, name, path, source):
        super().__init__(name, path)
        self.source = source

    def get_code(self, fullname):
        return compile(self.source, self.path, "exec")


class _Finder(importlib.abc.MetaPathFinder):
    def __init__(self, name: str, old: str, new: str, count: int):
        self.name, self.old, self.new, self.count = name, old, new, count

    def find_spec(self, fullname, path, target=None):
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            sys.meta_path.insert(0, self)
        with open(spec.origin) as f:
            text = f.read()
        assert text.count(self.old) == self.count, f"mutant does not apply to {spec.origin}"
        loader = _Loader(fullname, spec.origin, text.replace(self.old, self.new))
        return importlib.util.spec_from_file_location(fullname, spec.origin, loader=loader)


def pytest_configure(config):
    mutant_id = os.environ.get("ARCHDSL_MUTANT")
    if not mutant_id:
        return
    from mutation import MUTANTS

    mut = next(x for x in MUTANTS if x.id == mutant_id)
    assert MODULES[mut.file] not in sys.modules, "the module was imported before the mutant was planted"
    sys.meta_path.insert(0, _Finder(MODULES[mut.file], mut.old, mut.new, mut.count))
