"""Parser: ``.rnn`` text -> :class:`archdsl.lang.spec.SpecFile`, with lark's errors turned into
located :class:`ArchdslError`s that say what was expected and what was found."""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path

import lark
from lark import Transformer, v_args

from archdsl.errors import ArchdslError, Span
from archdsl.lang import spec as S
from archdsl.lang.syntax_errors import syntax_error


@functools.cache
def _lark() -> lark.Lark:
    text = resources.files("archdsl.grammar").joinpath("rnn.lark").read_text()
    return lark.Lark(text, parser="lalr", strict=True, propagate_positions=True, maybe_placeholders=True)


def _span(file: str, meta_or_token) -> Span:
    m = meta_or_token
    if getattr(m, "empty", False):
        return Span(file, 0, 0, 0, 0)
    return Span(file, m.line, m.column, m.end_line, m.end_column)


class _ToAst(Transformer):
    def __init__(self, file: str):
        super().__init__()
        self.file = file

    def _s(self, meta) -> Span:
        return _span(self.file, meta)

    # expressions
    @v_args(meta=True)
    def number(self, meta, items):
        text = str(items[0])
        is_int = text.isdigit()
        return S.Num(int(text) if is_int else float(text), is_int, self._s(meta))

    @v_args(meta=True)
    def ref(self, meta, items):
        name, prime, axes = items
        return S.Ref(str(name), prime is not None, axes, self._s(meta))

    def names(self, items):
        return tuple(str(t) for t in items)

    def axes(self, items):
        return items[0]

    @v_args(meta=True)
    def call(self, meta, items):
        name, axes, *args = items
        args = tuple(a for a in args if a is not None)
        return S.Call(str(name), axes, args, self._s(meta))

    def _bin(self, op, meta, items):
        return S.BinOp(op, items[0], items[1], self._s(meta))

    @v_args(meta=True)
    def add(self, meta, items):
        return self._bin("+", meta, items)

    @v_args(meta=True)
    def sub(self, meta, items):
        return self._bin("-", meta, items)

    @v_args(meta=True)
    def mul(self, meta, items):
        return self._bin("*", meta, items)

    @v_args(meta=True)
    def div(self, meta, items):
        return self._bin("/", meta, items)

    @v_args(meta=True)
    def floordiv(self, meta, items):
        return self._bin("//", meta, items)

    @v_args(meta=True)
    def mod(self, meta, items):
        return self._bin("%", meta, items)

    @v_args(meta=True)
    def neg(self, meta, items):
        return S.Neg(items[0], self._s(meta))

    # conditions
    @v_args(meta=True)
    def compare(self, meta, items):
        return S.Compare(str(items[1]), items[0], items[2], self._s(meta))

    @v_args(meta=True)
    def cond_or(self, meta, items):
        return S.BoolOp("or", tuple(items), self._s(meta))

    @v_args(meta=True)
    def cond_and(self, meta, items):
        return S.BoolOp("and", tuple(items), self._s(meta))

    @v_args(meta=True)
    def not_(self, meta, items):
        return S.BoolOp("not", (items[0],), self._s(meta))

    # statements
    def header(self, items):
        return ("header", str(items[0]), _span(self.file, items[0]))

    @v_args(meta=True)
    def hyper(self, meta, items):
        return S.Hyper(str(items[0]), items[1], self._s(meta))

    @v_args(meta=True)
    def let(self, meta, items):
        return S.Let(str(items[0]), items[1], self._s(meta))

    @v_args(meta=True)
    def axis(self, meta, items):
        return S.Axis(str(items[0]), items[1], self._s(meta))

    @v_args(meta=True)
    def choice(self, meta, items):
        default = str(items[2]) if items[2] is not None else None
        return S.Choice(str(items[0]), items[1], default, self._s(meta))

    @v_args(meta=True)
    def target(self, meta, items):
        return S.Target(str(items[0]), items[1] or (), self._s(meta))

    @v_args(meta=True)
    def bias(self, meta, items):
        return ("bias", items[0], self._s(meta))

    @v_args(meta=True)
    def init(self, meta, items):
        return ("init", items[0], self._s(meta))

    @v_args(meta=True)
    def snorm(self, meta, items):
        return ("spectral_norm", items[0], self._s(meta))

    @staticmethod
    def _options(items) -> S.ProjOptions:
        options = {}
        for key, value, span in items:
            if key in options:
                raise ArchdslError(f"'{key}' is given twice", span, "give each option once")
            options[key] = value
        if "bias" in options:  # plain 'bias' starts at zero; 'bias(EXPR)' at EXPR
            options["bias_init"] = options.pop("bias")
            options["bias"] = True
        return S.ProjOptions(**options)

    @v_args(meta=True)
    def project(self, meta, items):
        targets = tuple(i for i in items[1:] if isinstance(i, S.Target))
        opts = self._options([i for i in items[1:] if isinstance(i, tuple)])
        return S.Project(str(items[0]), targets, opts, self._s(meta))

    @v_args(meta=True)
    def param(self, meta, items):
        return S.Param(str(items[0]), items[1] or (), items[2], self._s(meta))

    @v_args(meta=True)
    def state(self, meta, items):
        return S.State(str(items[0]), items[1], self._s(meta))

    @v_args(meta=True)
    def define(self, meta, items):
        return S.Define(items[0], items[1], self._s(meta))

    @v_args(meta=True)
    def output(self, meta, items):
        return S.Output(str(items[0]), self._options(items[1:]), self._s(meta))

    @v_args(meta=True)
    def setting(self, meta, items):
        return S.Setting(str(items[0]), items[1], self._s(meta))

    @v_args(meta=True)
    def preset(self, meta, items):
        seen = set()
        for setting in items[1:]:
            if setting.name in seen:
                raise ArchdslError(f"preset '{items[0]}' sets '{setting.name}' twice", setting.span)
            seen.add(setting.name)
        return S.Preset(str(items[0]), tuple(items[1:]), self._s(meta))

    @v_args(meta=True)
    def interval(self, meta, items):
        return S.Interval(items[0], items[1], items[2] is not None, self._s(meta))

    @v_args(meta=True)
    def set(self, meta, items):
        return S.ValueSet(tuple(items), self._s(meta))

    @v_args(meta=True)
    def range(self, meta, items):
        return S.Range(str(items[0]), items[1], self._s(meta))

    @v_args(meta=True)
    def search(self, meta, items):
        return S.Search(tuple(items), self._s(meta))

    @v_args(meta=True)
    def require(self, meta, items):
        msg = str(items[1])[1:-1] if items[1] is not None else None
        return S.Require(items[0], msg, self._s(meta))

    def else_block(self, items):
        return ("else", tuple(items))

    def else_if(self, items):
        return ("else", (items[0],))

    @v_args(meta=True)
    def if_block(self, meta, items):
        cond, *body, otherwise = items
        return S.If(cond, tuple(body), otherwise[1] if otherwise else (), self._s(meta))


MAX_DEPTH = 100  # nesting of expressions and blocks; the passes after the parser recurse on it


def _check_depth(tree: lark.Tree, file: str, source: str) -> None:
    """Reject absurd nesting with a located error instead of a RecursionError in a later pass."""
    stack = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ArchdslError(
                f"expression nested more than {MAX_DEPTH} levels deep",
                _span(file, node.meta),
                "split it into named steps: a = …, b = f(a)",
                source=source,
            )
        stack.extend((c, depth + 1) for c in node.children if isinstance(c, lark.Tree))


def parse(source: str, path: str = "<input>") -> S.SpecFile:
    """Parse ``.rnn`` text; raise :class:`ArchdslError` with a location on any syntax error."""
    file = Path(path).name if path != "<input>" else path
    try:
        tree = _lark().parse(source)
    except lark.exceptions.UnexpectedInput as e:
        raise syntax_error(_lark(), source, file, e) from None
    _check_depth(tree, file, source)
    try:
        items = _ToAst(file).transform(tree).children
    except lark.exceptions.VisitError as e:  # an ArchdslError raised while building the tree
        if isinstance(e.orig_exc, ArchdslError):
            raise e.orig_exc.with_source(source) from None
        raise
    name, header_span = Path(path).stem, None
    body = []
    for item in items:
        if isinstance(item, tuple) and item and item[0] == "header":
            name, header_span = item[1], item[2]
        elif item is not None:
            body.append(item)
    return S.SpecFile(name, path, source, tuple(body), header_span)


def parse_file(path: str | Path) -> S.SpecFile:
    path = Path(path)
    try:
        source = path.read_text()
    except OSError as e:
        raise ArchdslError(f"cannot read spec '{path}': {e.strerror}") from None
    except UnicodeDecodeError:
        raise ArchdslError(f"cannot read spec '{path}': not UTF-8 text") from None
    return parse(source, str(path))
