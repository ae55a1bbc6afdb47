"""Answer equivalence: fast string/number rules first, then math-verify's symbolic check.

This module runs *unprotected*: call it only inside a grader worker process (``psr.grader.pool``)
where a hard timeout bounds it. Public entry points with the timeout are in ``psr.grader``.

Rules (Qwen2.5-Math toolkit semantics, written from scratch), in order:
  1. equal after ``normalize`` (case-insensitive for plain words);
  2. multiple choice: a gold option letter matches the prediction's option letter only;
  3. numbers: two integers exactly (AIME's "025" is 25, 13999 is not 14000); otherwise
     ``rel_tol=1e-4``; when either side is written as a percent, also x100 / ÷100.
     Commas: one comma before exactly three digits after a 1-3 digit group is a thousands
     separator (``1,000`` is 1000, never 1; ``1,500`` is 1500). Any other ``a,b`` (``2,74``,
     ``1,5``, ``0,125``, ``1000,99``, LaTeX ``2{,}74``) in the *response* is a decimal comma when
     the gold is one number that is not whole (``2,74`` = 2.74 = ``\\frac{137}{50}``); against a
     whole number it is not (``19133,5`` would pass 19133 by tolerance, ``3,0`` may be the list
     3, 0). Against a gold that is a list (``1,2``, ``27,93`` in olympiadbench) it stays a list.
     A gold written ``a,b`` is a list too, except that it equals a response ``a.b`` (the one
     decimal-comma reading of a gold, kept from before);
  4. equations: ``x = 3`` matches ``3`` when the left side is a lone variable;
  5. structures: intervals (bracket kinds must agree), tuples (ordered), sets and bare lists
     (unordered, also of tuples: ``(1,2),(3,4)`` = ``\\{(3,4),(1,2)\\}``; tuples side by side
     ``(1,2)\\quad(3,4)`` and sets split by ``;`` are lists too; a one-element set equals its
     element), matrices (``pmatrix``/``bmatrix``, a one-row/column matrix equals a tuple),
     labelled parts (``(a) 5, (b) 7``, ``a) 5; b) 7``, ``(i) 5 (ii) 7``, ``Part (a): 5``: in
     order, against parts or any list, set or tuple, which are then read in order too),
     element by element with these same rules;
  6. symbolic: math-verify ``parse`` (LaTeX extraction only: no ``parse_expr``) + ``verify``.
Nothing from the answer text reaches eval/exec/sympify/parse_expr: math-verify's expression
extractor (which calls ``parse_expr``) is never enabled, and answers that look like Python
(``__``, ``import``, ``lambda``, ...) skip the symbolic path altogether.
"""

from __future__ import annotations

import math
import re
from functools import lru_cache

from psr.boxes import BOX_RE, last_boxed
from psr.grader.extract import (
    _ANSWER_IS_RE,
    _NUMBER_RE,
    MAX_BOXES,
    _balanced,
    _is_bare,
    box_spans,
    boxed_run_length,
    check_answer_type,
    choice_letter,
    extract_answer,
)
from psr.grader.normalize import normalize, numbers_close, parse_number

__all__ = ["match_local", "grade_local", "symbolic_equal", "split_top_level"]

MAX_ANSWER_CHARS = 2000  # longer extracted answers: string rules only, no symbolic path
MAX_DEPTH = 3
_PY_SMELL = re.compile(r"__|\bimport\b|\blambda\b|\beval\b|\bexec\b|\bos\.|\bsubprocess\b|\bgetattr\b|\bopen\(")
_LONE_VAR = re.compile(r"^(?:[a-zA-Z](?:_\{?[a-zA-Z0-9]+\}?)?'?|\\[a-zA-Z]+(?:_\{?[a-zA-Z0-9]+\}?)?)$")
_INT = re.compile(r"^[+-]?\d{1,60}$")
_CHOICE_GOLD = re.compile(r"^\(?([A-E])\)?$")

def split_top_level(s: str, sep: str = ",") -> list[str]:
    """Split at ``sep`` outside (), [], {} (and ``\\{ \\}``)."""
    out, depth, cur = [], 0, []
    i = 0
    while i < len(s):
        c = s[i]
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        if c == sep and depth == 0:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    out.append("".join(cur))
    return [p.strip() for p in out]


def _structure(s: str):
    """(kind, items) for a normalised answer: 'set' | 'interval' | 'tuple' | 'list' | 'matrix'."""
    m = re.fullmatch(r"\\begin\{[pbBvV]?matrix\}(.*)\\end\{[pbBvV]?matrix\}", s)
    if m:
        rows = [r for r in m.group(1).split("\\\\") if r.strip()]
        cells = [[c.strip() for c in r.split("&")] for r in rows]
        return "matrix", cells
    if s.startswith("\\{") and s.endswith("\\}") and _balanced(s[2:-2]):
        items = split_top_level(s[2:-2])
        if len(items) == 1:
            semi = split_top_level(s[2:-2], ";")
            if len(semi) >= 2 and all(semi):
                items = semi
        return "set", items
    side = _side_by_side_tuples(s)
    if side:
        return "list", side
    if len(s) >= 2 and s[0] in "([" and s[-1] in ")]" and _balanced(s[1:-1]):
        items = split_top_level(s[1:-1])
        if len(items) >= 2:
            return ("interval" if len(items) == 2 else "tuple"), (s[0] + s[-1], items)
    if "\\cup" in s:
        return "union", [p.strip() for p in s.split("\\cup")]
    items = split_top_level(s)
    if len(items) >= 2 and all(items):
        return "list", items
    items = split_top_level(s, ";")
    if len(items) >= 2 and all(items):
        return "list", items
    return None, None


def _side_by_side_tuples(s: str) -> list[str] | None:
    """``(1,2)(3,4)`` (two tuples with only spacing between them, which ``normalize`` drops) ->
    ``["(1,2)", "(3,4)"]``; None unless every piece is a bracketed group with a comma in it."""
    if len(s) > 4000 or not s or s[0] not in "([" or s[-1] not in ")]":
        return None
    pieces, depth, start = [], 0, 0
    for i, c in enumerate(s):
        if c in "([{":
            if depth == 0:
                if i != start:
                    return None
            depth += 1
        elif c in ")]}":
            depth -= 1
            if depth < 0:
                return None
            if depth == 0:
                pieces.append(s[start : i + 1])
                start = i + 1
        elif depth == 0:
            return None
    if depth != 0 or len(pieces) < 2:
        return None
    if not all(p[0] in "([" and len(split_top_level(p[1:-1])) >= 2 for p in pieces):
        return None
    return pieces


_LABEL = re.compile(r"(?:\*\*)?(?:[Pp]art)?(?:\((?P<a>[a-h]|[ivx]{1,4}|[IVX]{1,4})\)|(?P<b>[a-h]|[ivx]{1,4})\))"
                    r"(?:\*\*)?:?(?:\*\*)?")
_PART_SEQS = (tuple("abcdefgh"), ("i", "ii", "iii", "iv", "v", "vi", "vii", "viii"),
              ("I", "II", "III", "IV", "V", "VI", "VII", "VIII"))


def _find_label(s: str, pos: int, lab: str) -> tuple[int, int] | None:
    """Where the part label ``(lab)`` / ``lab)`` (optionally ``Part``, ``**``, ``:``) starts and
    ends in ``s`` after ``pos``, outside brackets and not glued to a name (``f(b)`` is no label)."""
    depth = 0
    for i in range(pos, len(s)):
        c = s[i]
        if depth == 0 and (s.startswith("(" + lab + ")", i) or s.startswith(lab + ")", i)):
            b = i
            for pre in ("**", "Part", "part"):
                if b - len(pre) >= pos and s[b - len(pre) : b] == pre:
                    b -= len(pre)
            prev = s[b - 1] if b > pos else ""
            glued = prev.isalpha() or prev in ("\\", "_", "^") if c == "(" else prev not in ("", ",", ";")
            if not glued:
                m = _LABEL.match(s, b)
                if m and (m.group("a") or m.group("b")) == lab:
                    return b, m.end()
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
    return None


def _labelled_parts(s: str) -> list[str] | None:
    """``(a)5,(b)7`` / ``a)5;b)7`` / ``(i)5(ii)7`` / ``Part(a):5,Part(b):7`` (normalised) ->
    ``["5", "7"]``: at least two labels in sequence from the first, the first at the start."""
    if len(s) > MAX_ANSWER_CHARS:
        return None
    m = _LABEL.match(s)
    if not m:
        return None
    first = m.group("a") or m.group("b")
    for seq in _PART_SEQS:
        if first != seq[0]:
            continue
        items, pos = [], m.end()
        for lab in seq[1:]:
            nxt = _find_label(s, pos, lab)
            if nxt is None:
                break
            items.append(s[pos : nxt[0]])
            pos = nxt[1]
        items.append(s[pos:])
        items = [re.sub(r"^[:.]+|[,;.]+$", "", x).strip() for x in items]
        if len(items) >= 2 and all(items):
            return items
    return None


def _ordered_items(s: str) -> tuple[str, list[str]] | None:
    """(kind, items in written order) of a list, set or tuple answer; labelled parts first."""
    parts = _labelled_parts(s)
    if parts:
        return "parts", parts
    k, v = _structure(s)
    if k in ("list", "set"):
        return k, v
    if k in ("tuple", "interval") and v[0] == "()":
        return k, v[1]
    return None


def _unordered_equal(a: list[str], b: list[str], depth: int) -> bool:
    if len(a) != len(b):
        return False
    used = [False] * len(b)
    for x in a:
        for j, y in enumerate(b):
            if not used[j] and _match(x, y, depth + 1):
                used[j] = True
                break
        else:
            return False
    return True


def _struct_equal(p: str, g: str, depth: int) -> bool | None:
    """True/False when both sides are structures the rules decide; None otherwise."""
    pparts, gparts = _labelled_parts(p), _labelled_parts(g)
    if pparts or gparts:
        # labelled parts are in order: against parts, or a list/set/tuple read in written order
        po, go = _ordered_items(p), _ordered_items(g)
        if po is None or go is None or len(po[1]) != len(go[1]):
            return False
        return all(_match(x, y, depth + 1) for x, y in zip(po[1], go[1]))
    pk, pv = _structure(p)
    gk, gv = _structure(g)
    # a one-element set and its element: "\\{(1,2)\\}" is "(1,2)"
    if pk == "set" and gk not in ("set", "list") and len(pv) == 1 and pv[0]:
        return _match(pv[0], g, depth + 1)
    if gk == "set" and pk not in ("set", "list") and len(gv) == 1 and gv[0]:
        return _match(p, gv[0], depth + 1)
    if gk is None and pk is None:
        return None
    if gk == "matrix" or pk == "matrix":
        def flat(k, v):
            if k == "matrix":
                if len(v) == 1 or all(len(r) == 1 for r in v):
                    return [c for r in v for c in r], v
                return None, v
            if k in ("tuple", "interval"):
                return v[1], None
            return None, None

        if gk == pk == "matrix":
            if len(pv) != len(gv) or any(len(a) != len(b) for a, b in zip(pv, gv)):
                return False
            return all(_match(x, y, depth + 1) for a, b in zip(pv, gv) for x, y in zip(a, b))
        pf, _ = flat(pk, pv)
        gf, _ = flat(gk, gv)
        if pf is None or gf is None or len(pf) != len(gf):
            return None
        return all(_match(x, y, depth + 1) for x, y in zip(pf, gf))
    if gk in ("interval", "tuple") and pk in ("interval", "tuple"):
        (pb, pitems), (gb, gitems) = pv, gv
        if len(pitems) != len(gitems):
            return False
        if pb != gb:
            return False
        return all(_match(x, y, depth + 1) for x, y in zip(pitems, gitems))
    if gk == pk == "union":
        return len(pv) == len(gv) and all(_match(x, y, depth + 1) for x, y in zip(pv, gv))
    if gk in ("set", "list") and pk in ("set", "list"):
        return _unordered_equal(pv, gv, depth)
    if gk in ("set", "list", "tuple", "interval", "union") or pk in ("set", "list", "tuple", "interval", "union"):
        if gk and pk:
            return False  # different kinds of structures: let nothing else decide
        return None  # a structure against a non-structure: maybe "x \in (1,2)"; symbolic decides
    return None


_DECIMAL_COMMA = re.compile(r"^[+-]?\d+,\d+%?$")


def _numeric_equal(p: str, g: str) -> bool | None:
    # a decimal comma ("1000,99", "0,111") against a decimal point on the other side; thousands
    # ("1,000") were removed by normalize, so a comma left between digits is not one
    if "." in g and "." not in p and _DECIMAL_COMMA.match(p):
        p = p.replace(",", ".")
    elif "." in p and "." not in g and _DECIMAL_COMMA.match(g):
        g = g.replace(",", ".")
    elif _DECIMAL_COMMA.match(p) and "," not in g:
        gn = parse_number(g)
        if gn is not None and math.isfinite(gn[0]) and gn[0] != int(gn[0]):
            # the response's decimal comma against a gold that is one number, not a whole one:
            # against 19133 "19133,5" would pass by tolerance, and "3,0" may be the list 3, 0
            p = p.replace(",", ".")
    pn, gn = parse_number(p), parse_number(g)
    if pn is None or gn is None:
        return None
    (pv, ppct), (gv, gpct) = pn, gn
    if _INT.match(p) and _INT.match(g):
        return int(p) == int(g)  # integers are exact: 13999 is not 14000 (rel_tol is for decimals)
    if numbers_close(pv, gv):
        return True
    if ppct or gpct:
        return any(numbers_close(pv, x) for x in (gv * 100, gv / 100))
    return False


def _strip_lhs(s: str) -> str:
    """``x=3`` -> ``3`` when the left side is a lone variable (``x``, ``a_1``, ``\\theta``)."""
    if s.count("=") == 1 and "\\leq" not in s and "\\geq" not in s:
        lhs, rhs = s.split("=")
        if _LONE_VAR.match(lhs.strip()) and rhs.strip():
            return rhs.strip()
    return s


_INEQ_OPS = {"<": ("(", ")"), "\\lt": ("(", ")"), "\\leq": ("[", "]"), "\\le": ("[", "]"),
             "\\leqslant": ("[", "]"), ">": ("(", ")"), "\\gt": ("(", ")"), "\\geq": ("[", "]"),
             "\\ge": ("[", "]"), "\\geqslant": ("[", "]")}
_INEQ_SPLIT = re.compile(r"(\\leqslant|\\geqslant|\\leq|\\geq|\\le|\\ge|\\lt|\\gt|<|>)")


def _inequality_as_interval(s: str) -> str:
    """``x<3`` -> ``(-\\infty,3)``, ``x\\geq2`` -> ``[2,\\infty)``, ``1<x\\leq2`` -> ``(1,2]``;
    anything else unchanged. Only a lone variable with numeric-free bounds of one variable."""
    if "=" in s.replace("\\leq", "").replace("\\geq", "") or "," in s:
        return s
    parts = _INEQ_SPLIT.split(s)
    if len(parts) == 3:
        a, op, b = (x.strip() for x in parts)
        less = op in ("<", "\\lt", "\\leq", "\\le", "\\leqslant")
        if _LONE_VAR.match(a) and b:
            lo, hi = ("-\\infty", b) if less else (b, "\\infty")
            br = _INEQ_OPS[op]
            return ("(" if less else br[0]) + f"{lo},{hi}" + (br[1] if less else ")")
        if _LONE_VAR.match(b) and a:
            lo, hi = (a, "\\infty") if less else ("-\\infty", a)
            br = _INEQ_OPS[op]
            return (br[0] if less else "(") + f"{lo},{hi}" + (")" if less else br[1])
    if len(parts) == 5:
        a, op1, x, op2, b = (y.strip() for y in parts)
        if _LONE_VAR.match(x) and op1 in _INEQ_OPS and op2 in _INEQ_OPS:
            up = lambda op: op in ("<", "\\lt", "\\leq", "\\le", "\\leqslant")
            if up(op1) and up(op2):
                return _INEQ_OPS[op1][0] + f"{a},{b}" + _INEQ_OPS[op2][1]
            if not up(op1) and not up(op2):
                return _INEQ_OPS[op2][0] + f"{b},{a}" + _INEQ_OPS[op1][1]
    return s


def match_local(pred: str | None, gold: str | None, symbolic: bool = True) -> bool:
    """Unprotected equivalence of two answers (call inside a worker; see module docstring)."""
    if pred is None or gold is None:
        return False
    pred, gold = str(pred), str(gold)
    if not pred.strip() or not gold.strip():
        return False
    return _match(pred, gold, 0, symbolic)


def _match(pred: str, gold: str, depth: int, symbolic: bool = True) -> bool:
    if pred.strip() == gold.strip():
        return True
    p, g = normalize(pred), normalize(gold)
    if not p or not g:
        return False
    if p == g or (p.lower() == g.lower() and re.fullmatch(r"[A-Za-z ]+", g) and len(g) > 1):
        return True
    # multiple choice: the gold is an option letter
    gm = _CHOICE_GOLD.match(g)
    if gm:
        letter = choice_letter(pred) or choice_letter(p)
        return letter == gm.group(1)
    num = _numeric_equal(p, g)
    if num is not None:
        return num
    # equations with a lone variable on the left
    # "x = 3" vs "3"; two equations are compared whole (2x+4y-3=0 vs y=-x/2+3/4)
    p2 = _strip_lhs(p) if "=" not in g else p
    g2 = _strip_lhs(g) if "=" not in p else g
    if (p2, g2) != (p, g):
        if p2 == g2:
            return True
        num = _numeric_equal(p2, g2)
        if num is not None:
            return num
    p_raw = _raw_side(pred, p, p2)
    g_raw = _raw_side(gold, g, g2)
    if ("<" in p2 or "\\l" in p2 or ">" in p2 or "\\g" in p2) and not ("<" in g2 or ">" in g2 or "\\le" in g2 or "\\ge" in g2):
        p_raw = p2 = _inequality_as_interval(p2)
    elif ("<" in g2 or "\\l" in g2 or ">" in g2 or "\\g" in g2) and not ("<" in p2 or ">" in p2 or "\\le" in p2 or "\\ge" in p2):
        g_raw = g2 = _inequality_as_interval(g2)
    if depth < MAX_DEPTH:
        st = _struct_equal(p2, g2, depth)
        if st is not None:
            return st
    if not symbolic or depth > MAX_DEPTH:
        return False
    if len(pred) > MAX_ANSWER_CHARS or len(gold) > MAX_ANSWER_CHARS:
        return False
    if _PY_SMELL.search(pred) or _PY_SMELL.search(gold):
        return False
    return symbolic_equal(p_raw, g_raw, p2, g2)


def _raw_side(raw: str, norm: str, norm2: str) -> str:
    """The answer as written (math-verify normalises LaTeX itself, and better than a string
    squeeze: ``\\omega i`` must not become ``\\omegai``), minus a lone-variable left side."""
    raw = raw.strip().strip("$").strip()
    if norm2 != norm:
        return raw.split("=", 1)[1].strip() if raw.count("=") == 1 else norm2
    return raw


# ---------------------------------------------------------------- symbolic (math-verify)

@lru_cache(maxsize=4096)
def _mv_parse(latex: str):
    from math_verify import LatexExtractionConfig, parse

    # Wrapped in \boxed{} so the whole answer is one extraction target; parsing_timeout=None
    # because the worker's hard timeout (a kill) bounds us, and signal alarms would race it.
    return parse("\\boxed{" + latex + "}", extraction_config=[LatexExtractionConfig()],
                 fallback_mode="no_fallback", parsing_timeout=None)


def symbolic_equal(pred: str, gold: str, pred_alt: str | None = None, gold_alt: str | None = None) -> bool:
    """math-verify ``verify`` on LaTeX-parsed answers (gold first: it is asymmetric). A side that
    does not parse is retried in its ``*_alt`` (normalised) spelling."""
    import logging

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    try:
        g = _mv_parse(gold) or (gold_alt is not None and gold_alt != gold and _mv_parse(gold_alt))
        if not g:
            return False
        p = _mv_parse(pred) or (pred_alt is not None and pred_alt != pred and _mv_parse(pred_alt))
        if not p:
            return False
        from math_verify import verify

        if _clearly_different(g[0], p[0]):
            return False
        if verify(g, p, timeout_seconds=None):
            return True
        return _numerically_equal(p[0], g[0], pred, gold)
    except Exception:
        return False


def _numerically_equal(pe, ge, pred: str, gold: str) -> bool:
    """Qwen-style: a closed-form answer against a decimal gold (or the reverse) with rel_tol 1e-4."""
    pn, gn = parse_number(normalize(pred)), parse_number(normalize(gold))
    if pn is None and gn is None:
        # two closed forms (10\\sqrt{10.5} vs 5\\sqrt{42}): equal values up to float noise
        if not (getattr(pe, "is_number", False) and getattr(ge, "is_number", False)):
            return False
        if pe.free_symbols or ge.free_symbols:
            return False
        a, b = complex(pe.evalf(30)), complex(ge.evalf(30))
        if not all(math.isfinite(x) for x in (a.real, a.imag, b.real, b.imag)):
            return False
        return abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))
    if pn is not None and gn is not None:
        return False  # two decimals were decided by the number rule
    expr = pe if pn is None else ge
    num = (gn or pn)[0]
    if not getattr(expr, "is_number", False) or getattr(expr, "free_symbols", True):
        return False
    val = complex(expr.evalf(30))
    if abs(val.imag) > 1e-12 * max(1.0, abs(val.real)):
        return False
    return numbers_close(val.real, num)


def _has_marker(text: str) -> bool:
    return last_boxed(text) is not None or "####" in text or _ANSWER_IS_RE.search(text) is not None


def gold_answer(gold: str) -> str:
    """The answer inside a gold string: the gold itself, or the final answer of a gold that is a
    whole reference solution (has a \\boxed{} / "final answer is")."""
    g = gold.strip()
    if len(g) > 80 or "\\boxed" in g or "\\fbox" in g:
        if _has_marker(g) or not _is_bare(g):
            ext = extract_answer(g)
            if ext:
                return ext
    return gold


def grade_local(response: str | None, gold: str | None, answer_type: str | None = None) -> bool:
    """Unprotected grade (call inside a worker): extract, match, and for solutions without a
    \\boxed{} a second opinion from math-verify's LaTeX extraction over the whole response.
    Against a gold that lists several answers (a list, a set, labelled parts), a response that
    boxes them one by one with text between the boxes is also read as the list of all its boxes
    (``_all_boxes_match``). ``answer_type``: one of ``psr.grader.extract.ANSWER_TYPES`` (None = math)."""
    answer_type = check_answer_type(answer_type)
    if not isinstance(response, str) or gold is None or not str(gold).strip():
        return False
    gold = gold_answer(str(gold))
    ans = extract_answer(response, answer_type)
    if match_local(ans, gold):
        return True
    if _all_boxes_match(response, ans, gold):
        return True
    if ans is not None and ans == response.strip().strip("$").strip() and len(ans) <= 80 \
            and re.search(r"[A-Za-z]{2}", ans) and not re.search(r"[\\^_{}()\[\]=+*/<>-]", ans):
        # a short unmarked text taken whole ("It is 12"): its last number is the other reading
        nums = list(_NUMBER_RE.finditer(ans))
        if nums and nums[-1].group(0) != ans and match_local(nums[-1].group(0).replace(",", ""), gold):
            return True
        dec = None
        for dec in _DECIMAL_COMMA_IN_TEXT.finditer(ans):
            pass
        if dec is not None and nums and dec.end() >= nums[-1].end() and match_local(dec.group(0), gold):
            return True  # "It costs 2,74 euros": the decimal comma reading of its last number
    if answer_type == "numeric" or _CHOICE_GOLD.match(normalize(gold)):
        return False
    if ("\\boxed" in response or "\\fbox" in response) and ans is not None:
        return False  # the boxed answer is the final answer; nothing else in the text counts
    if len(response) <= 20000 and not _PY_SMELL.search(response) \
            and ("$" in response or "\\(" in response or "\\[" in response):
        return _mv_text_equal(response, gold)
    return False


_DECIMAL_COMMA_IN_TEXT = re.compile(r"(?<![\d,.])[+-]?\d+,(?:\d{1,2}|\d{4,})(?![\d,])")


def _all_boxes_match(response: str, ans: str | None, gold: str) -> bool:
    """A response that boxes each part or root apart, with text between the boxes ("(a) ...
    \\boxed{5} ... (b) ... \\boxed{7}"), against a gold that lists several answers: all its boxes,
    in order, are the answer. Every box counts, so an extra box (a boxed intermediate result)
    makes the list longer than the gold's and the answer wrong."""
    if "\\boxed" not in response and "\\fbox" not in response:
        return False
    g = normalize(gold)
    go = _ordered_items(g) if len(g) <= MAX_ANSWER_CHARS else None
    if go is None or go[0] not in ("list", "set", "parts") or len(go[1]) < 2:
        return False
    if len(BOX_RE.findall(response)) > MAX_BOXES:
        return False
    spans = box_spans(response)
    if len(spans) < 2 or not all(_balanced(c) for _, _, c in spans):
        return False  # "\\boxed{(3} ... \\boxed{4)}" are no answers
    if boxed_run_length(response, spans) == len(spans):
        return False  # every box is in the final run: the extracted answer already is all of them
    return match_local(", ".join(c for _, _, c in spans), gold)


def _mv_text_equal(response: str, gold: str) -> bool:
    try:
        from math_verify import LatexExtractionConfig, parse, verify

        g = _mv_parse(normalize(gold)) or _mv_parse(gold)
        if not g:
            return False
        p = parse(response, extraction_config=[LatexExtractionConfig()], parsing_timeout=None)
        return bool(p) and bool(verify(g, p, timeout_seconds=None))
    except Exception:
        return False


_SCREEN_POINTS = ((0.7314, 1.2718, 0.9123, 1.5371, 0.6211, 1.1173, 1.3391, 0.8467),
                  (1.4127, 0.8843, 1.1931, 0.7719, 1.3267, 0.9581, 0.6733, 1.2209))


def _eval_at(expr, symbols, point) -> complex | None:
    try:
        v = complex(expr.subs(dict(zip(symbols, point))).evalf(20))
    except Exception:
        return None
    if v != v or abs(v) == float("inf"):
        return None
    return v


def _clearly_different(ge, pe) -> bool:
    """A cheap screen before ``verify``: two expressions (or two equations, compared as
    ``lhs - rhs`` up to a constant factor) whose values differ by more than 1e-4 (relative) at two
    fixed generic points are different; anything the screen cannot evaluate goes to ``verify``."""
    import sympy

    try:
        if isinstance(ge, sympy.Equality) and isinstance(pe, sympy.Equality):
            a, b = ge.lhs - ge.rhs, pe.lhs - pe.rhs
            syms = sorted(a.free_symbols | b.free_symbols, key=str)
            if not syms or len(syms) > len(_SCREEN_POINTS[0]):
                return False
            ratios = []
            for pt in _SCREEN_POINTS:
                va, vb = _eval_at(a, syms, pt), _eval_at(b, syms, pt)
                if va is None or vb is None or abs(vb) < 1e-9:
                    return False
                ratios.append(va / vb)
            return abs(ratios[0] - ratios[1]) > 1e-4 * max(1.0, abs(ratios[0]))
        if not (isinstance(ge, sympy.Expr) and isinstance(pe, sympy.Expr)):
            return False
        syms = sorted(ge.free_symbols | pe.free_symbols, key=str)
        if not syms or len(syms) > len(_SCREEN_POINTS[0]):
            return False  # constants: verify (and the numeric rule) decide
        for pt in _SCREEN_POINTS:
            va, vb = _eval_at(ge, syms, pt), _eval_at(pe, syms, pt)
            if va is None or vb is None:
                return False
            if abs(va - vb) <= 1e-4 * max(1.0, abs(va), abs(vb)):
                return False
        return True
    except Exception:
        return False


_WARM_UP = (
    "\\frac{1}{2}", "-\\frac{\\sqrt{3}}{2}", "2\\sqrt{2}+\\pi", "x^{2}+2x+1", "(1,2]", "\\{1,2\\}",
    "\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}", "y=2x+3", "\\sin(\\theta_{1})e^{-t}", "10^{5}",
    "(-\\infty,3)\\cup(5,\\infty)", "\\log_{2} 8", "\\frac{a}{b} c_{0}", "45^{\\circ}", "3.5\\%", "\\text{cm}",
)


def warm_up() -> None:
    """Parse a few typical answers so ANTLR's prediction cache is warm; forked workers inherit it
    (a cold parser spends up to a second on its first expressions of each shape)."""
    import logging

    log = logging.getLogger("math_verify")
    level = log.level
    log.setLevel(logging.ERROR)  # our own timeout is the kill: silence "timeout is disabled" once
    try:
        for s in _WARM_UP:
            try:
                _mv_parse(s)
            except Exception:
                pass
    finally:
        log.setLevel(level)
    _mv_parse.cache_clear()
