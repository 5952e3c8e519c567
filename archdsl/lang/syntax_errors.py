"""Syntax errors in words: what came, after what, and what could have come instead.

lark reports the raw terminal set of an LALR state ("expected '%', ')', '*', ..."), which after an
expression lists a dozen tokens. :func:`syntax_error` re-parses the text step by step, keeps the
parser state from just before the offending token, asks it which tokens it really accepts, and
groups them ("an operator", "a new statement", "an expression").
"""

from __future__ import annotations

import lark
from lark import Token
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken
from lark.parsers.lalr_interactive_parser import InteractiveParser

from archdsl.errors import ArchdslError, Span, did_you_mean

OPERATORS = frozenset({"PLUS", "MINUS", "STAR", "SLASH", "__ANON_2", "PERCENT"})
STATEMENTS = frozenset(
    {
        "HYPER",
        "LET",
        "AXIS",
        "CHOICE",
        "PROJECT",
        "PARAM",
        "STATE",
        "OUTPUT",
        "PRESET",
        "SEARCH",
        "REQUIRE",
        "IF",
    }
)
KEYWORDS = (
    "axis",
    "choice",
    "hyper",
    "if",
    "let",
    "output",
    "param",
    "preset",
    "project",
    "require",
    "search",
    "state",
)
_WORDS = {
    "NAME": "a name",
    "NUMBER": "a number",
    "STRING": 'a "message"',
    "PRIME": '"\'"',
    "CMP": "a comparison",
    "LOG": "'log'",
    "$END": "end of file",
}


def _word(parser: lark.Lark, terminal: str) -> str:
    if terminal in _WORDS:
        return _WORDS[terminal]
    try:
        return f"'{parser.get_terminal(terminal).pattern.value}'"
    except KeyError:
        return terminal.lower()


def _join(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def expected_phrase(parser: lark.Lark, accepts) -> str:
    """The accepted terminals in words, grouped: 'an operator, ')' or a new statement'."""
    acc = set(accepts)
    groups = []
    if "STAR" in acc:
        groups.append("an operator")
        acc -= OPERATORS | {"PRIME", "LPAR", "LSQB"}  # name suffixes (x', f(, x[) go unsaid
    expression = {"NUMBER", "LPAR"} <= acc
    statement = bool(acc & STATEMENTS)
    if expression:
        acc -= {"NUMBER", "LPAR", "MINUS"}
    if statement:
        acc -= STATEMENTS
    if expression or statement:
        acc.discard("NAME")  # a name starts an expression and a definition (NAME = ...)
    end = "$END" in acc
    acc.discard("$END")
    words = ["an expression"] if expression else []
    words += groups + sorted(_word(parser, t) for t in acc)
    words += ["a new statement"] if statement else []
    words += ["end of file"] if end else []
    return _join(words) if words else "nothing more"


def _describe(tok: Token) -> str:
    if tok.type == "$END":
        return "end of file"
    if tok.type == "NAME":
        return f"name '{tok}'"
    return f"'{tok}'"


_OPENERS = {"RPAR": "(", "RSQB": "[", "RBRACE": "{"}


def _definition_head(seen: list[Token]) -> int | None:
    """Index of the NAME that starts the definition head (NAME ['] [axes]) ending ``seen``."""
    i = len(seen) - 1
    if i >= 0 and seen[i].type == "RSQB":
        while i >= 0 and seen[i].type != "LSQB":
            i -= 1
        i -= 1
    if i >= 0 and seen[i].type == "PRIME":
        i -= 1
    return i if i >= 0 and seen[i].type == "NAME" else None


class _Context:
    """The tokens read before the error and the parser state before each of them."""

    def __init__(self, parser: lark.Lark, ip, source: str):
        self.parser, self.ip, self.source = parser, ip, source
        self.seen: list[Token] = []
        self.states: list = []

    def accepts(self, state) -> set[str]:
        return InteractiveParser(self.ip.parser, state, self.ip.lexer_thread).accepts()

    def starts_statement(self, i: int) -> bool:
        return bool(self.accepts(self.states[i]) & STATEMENTS)


def _hint(ctx: _Context, bad: Token | None, accepts: set) -> str | None:
    """Likely causes: a misspelt keyword, a missing ',', '=' for '==', '**', an unclosed bracket."""
    seen = ctx.seen
    h = _definition_head(seen) if "EQUAL" in accepts and accepts <= {"EQUAL", "LSQB", "PRIME"} else None
    if h is not None and ctx.starts_statement(h):
        head = seen[h]
        close = did_you_mean(str(head), KEYWORDS) if h == len(seen) - 1 else ""
        if close.startswith("did you mean"):
            return close.split("?")[0] + "?"
        if h > 0 and seen[h - 1].line == head.line:
            text = ctx.source[head.start_pos : seen[-1].end_pos]
            return f"'{text}' reads as the start of a new definition; is a ',' missing before it?"
        return f"a statement starts with a keyword ({', '.join(KEYWORDS)}) or defines a value: {head} = …"
    if bad is not None and bad.type == "EQUAL" and "CMP" in accepts:
        return "compare with '=='"
    if bad is not None and bad.type == "STAR" and seen and seen[-1].type == "STAR":
        return "there is no power operator: write a * a, square(a) or exp(b * log(a))"
    open_ = [_OPENERS[t] for t in ("RPAR", "RSQB", "RBRACE") if t in accepts]
    if open_ and bad is not None and (bad.type == "$END" or bad.type in STATEMENTS):
        return f"a '{open_[0]}' is still open"
    return None


def syntax_error(parser: lark.Lark, source: str, file: str, error: UnexpectedInput) -> ArchdslError:
    """Re-parse ``source`` token by token to explain the first syntax error."""
    ip = parser.parse_interactive(source)
    ctx = _Context(parser, ip, source)
    state = ip.parser_state
    tokens = ip.lexer_thread.lex(state)
    while True:
        before = state.copy(deepcopy_values=False)
        bad: Token | None = None
        try:
            bad = next(tokens, None)
            if bad is None:
                last = ctx.seen[-1] if ctx.seen else None
                bad = Token.new_borrow_pos("$END", "", last) if last else Token("$END", "", 0, 1, 1, 1, 1, 0)
                state.feed_token(bad, True)
                break
            state.feed_token(bad)
        except UnexpectedToken as e:
            bad = bad if bad is not None and bad is e.token else e.token
            return _error(ctx, file, before, bad)
        except UnexpectedCharacters as e:
            return _error(ctx, file, before, None, e)
        ctx.seen.append(bad)
        ctx.states.append(before)
    return ArchdslError(f"syntax error: {error}", Span(file, 1, 1, 1, 2), source=source)


def _error(ctx: _Context, file: str, before, bad: Token | None, char_error=None) -> ArchdslError:
    """The message for ``bad`` (or an unlexable character) arriving in parser state ``before``."""
    accepts = ctx.accepts(before)
    expected = expected_phrase(ctx.parser, accepts)
    prev = ctx.seen[-1] if ctx.seen else None
    after = ""
    if prev is not None:
        after = " after an expression" if "STAR" in accepts else f" after '{prev}'"
    if char_error is not None:
        line, col = char_error.line, char_error.column
        span = Span(file, line, col, line, col + 1)
        what = f"character {char_error.char!r}"
        if char_error.char == '"':
            return ArchdslError(
                "unterminated string: a message ends with '\"' on the same line", span, source=ctx.source
            )
    elif bad.type == "$END":
        line = prev.end_line if prev else 1
        col = prev.end_column if prev else 1
        span = Span(file, line, col, line, col + 1)
        what = "end of file"
    else:
        span = Span(file, bad.line, bad.column, bad.end_line, bad.end_column)
        what = _describe(bad)
    return ArchdslError(
        f"unexpected {what}{after}; expected {expected}", span, _hint(ctx, bad, accepts), source=ctx.source
    )
