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


def _hint(prev: Token | None, bad: Token | None, accepts: set, prev_starts: bool) -> str | None:
    """Likely causes: a misspelt keyword, an unknown statement, an unclosed bracket."""
    if prev is not None and prev.type == "NAME" and prev_starts and "EQUAL" in accepts:
        close = did_you_mean(str(prev), KEYWORDS)
        if close.startswith("did you mean"):
            return close.split("?")[0] + "?"
        return f"a statement starts with a keyword ({', '.join(KEYWORDS)}) or defines a value: {prev} = …"
    open_ = [_OPENERS[t] for t in ("RPAR", "RSQB", "RBRACE") if t in accepts]
    if open_ and bad is not None and (bad.type == "$END" or bad.type in STATEMENTS):
        return f"a '{open_[0]}' is still open"
    return None


def syntax_error(parser: lark.Lark, source: str, file: str, error: UnexpectedInput) -> ArchdslError:
    """Re-parse ``source`` token by token to explain the first syntax error."""
    ip = parser.parse_interactive(source)
    state = ip.parser_state
    tokens = ip.lexer_thread.lex(state)
    prev: Token | None = None
    before = state.copy(deepcopy_values=False)
    while True:
        prev_before, before = before, state.copy(deepcopy_values=False)
        bad: Token | None = None
        try:
            bad = next(tokens, None)
            if bad is None:
                bad = Token.new_borrow_pos("$END", "", prev) if prev else Token("$END", "", 0, 1, 1, 1, 1, 0)
                state.feed_token(bad, True)
                break
            state.feed_token(bad)
        except UnexpectedToken as e:
            bad = bad if bad is not None and bad is e.token else e.token
            return _error(parser, ip, source, file, (prev_before, before), prev, bad)
        except UnexpectedCharacters as e:
            return _error(parser, ip, source, file, (prev_before, before), prev, None, e)
        prev = bad
    return ArchdslError(f"syntax error: {error}", Span(file, 1, 1, 1, 2), source=source)


def _error(parser, ip, source, file, states, prev, bad, char_error=None) -> ArchdslError:
    """``states``: the parser before ``prev`` and before ``bad``."""
    prev_accepts, accepts = (InteractiveParser(ip.parser, s, ip.lexer_thread).accepts() for s in states)
    expected = expected_phrase(parser, accepts)
    after = ""
    if prev is not None:
        after = " after an expression" if "STAR" in accepts else f" after '{prev}'"
    if char_error is not None:
        line, col = char_error.line, char_error.column
        span = Span(file, line, col, line, col + 1)
        what = f"character {char_error.char!r}"
        if char_error.char == '"':
            return ArchdslError(
                "unterminated string: a message ends with '\"' on the same line", span, source=source
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
        f"unexpected {what}{after}; expected {expected}",
        span,
        _hint(prev, bad, accepts, bool(prev_accepts & STATEMENTS)),
        source=source,
    )
