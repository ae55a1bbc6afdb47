"""String normalisation of answers and a safe number reader (no eval, no sympy).

``normalize`` maps the many ways of writing one answer to one string (Qwen2.5-Math
``strip_string``-like rules written from scratch): drops ``$``, ``\\left``/``\\right``, spacing
macros, ``\\dfrac``/``\\tfrac``, degrees, ``\\%``, ``\\text{...}`` units, thousands separators,
``\\frac12`` shorthands and a leading ``x =``. LaTeX's ``{,}`` is a thousands separator before
exactly three digits after a 1-3 digit group (``14{,}916``) and a decimal comma otherwise
(``2{,}74`` -> ``2,74``, which the matcher reads as 2.74 against a number). ``parse_number``
reads plain numbers, fractions, mixed numbers, scientific notation, percents and number words,
with bounded size.
"""

from __future__ import annotations

import math
import re

__all__ = ["normalize", "parse_number", "strip_text_macros", "WORD_NUMBERS"]

_SPACING = re.compile(r"(?<!\\)\\[,;:! ]|\\quad|\\qquad|~|\\displaystyle|\\limits")
_LEFT_RIGHT = re.compile(r"\\(?:left|right|big|Big|bigg|Bigg)(?=[()\[\]|.\\{}]|\b)")
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|°|\\degree|\^\{\\circ\}|\\circ")
_TEXT_MACRO = re.compile(r"\\(?:text|textbf|textit|textnormal|textrm|mathrm|mathbf|mathit|mbox|rm|operatorname)\s*\{([^{}]*)\}")
_FRAC_SHORT = re.compile(r"\\frac\s*(\d)\s*(\d)")
_FRAC_SHORT2 = re.compile(r"\\frac\s*(\d)\s*(\{)")
_FRAC_SHORT3 = re.compile(r"\\frac\s*(\{[^{}]*\})\s*(\d)")
_SQRT_SHORT = re.compile(r"\\sqrt\s*(\w)")
_THOUSANDS_BANG = re.compile(r"(\d),\\!\s*(?=\d{3}(?!\d))()")
_TRAILING_PUNCT = re.compile(r"(?<![.\\])\s*[.,;]$")
_MIXED_SPACED = re.compile(r"^([+-]?\d+)\s+(\d+)\s*/\s*(\d+)$")
_IN_PREFIX = re.compile(r"^(?:[a-zA-Z]|\\[a-zA-Z]+)(?:_\{?\w+\}?)?\s*\\in\s*")
_THOUSANDS = re.compile(r"^[+-]?[1-9]\d{0,2}(?:,\d{3})+(?:\.\d+)?$")
_THOUSANDS_SPACE = re.compile(r"^[+-]?\d{1,3}(?:(?:\\,|\s)\d{3})+(?:\.\d+)?$")
_BRACE_THOUSANDS = re.compile(r"(?<![\d.])[1-9]\d{0,2}(?:\{,\}\d{3})+(?!\d)")
# Units and filler words that may follow a number ("5 cm", "12 dollars", "3 units^2")
_UNIT_WORDS = (
    r"(?:sq\.?\s*|square\s+|cubic\s+)?(?:units?|cm|mm|km|m|meters?|metres?|inch(?:es)?|in|feet|foot|ft|"
    r"yards?|miles?|mph|kg|g|grams?|pounds?|lbs?|ounces?|oz|dollars?|cents?|euros?|hours?|hrs?|minutes?|"
    r"mins?|seconds?|secs?|s|days?|weeks?|months?|years?|degrees?|radians?|people|persons?|students?|"
    r"apples?|eggs?|cookies?|books?|marbles?|pages?|points?|ways?|times|sides?|cups?|gallons?|liters?|"
    r"litres?|ml|L|dozens?|boxes|bags?|pieces?|pairs?|items?|tickets?|trees?|cars?|coins?|"
    r"sheep|goats?|cows?|dogs?|cats?|birds?|chickens?|bottles?)"
)
_TRAILING_UNIT = re.compile(r"^(.*?\d)\s*(?:\\\s)?" + _UNIT_WORDS + r"(?:\^?\{?[23]\}?)?\s*\.?$", re.IGNORECASE)

WORD_NUMBERS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14,
    "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20,
    "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90,
    "hundred": 100, "thousand": 1000, "million": 10**6, "billion": 10**9,
    "half": 0.5, "quarter": 0.25, "none": 0, "no": 0, "once": 1, "twice": 2, "thrice": 3,
}

MAX_NUMBER_CHARS = 60  # longer digit strings are not read as numbers (bounded work)
MAX_EXPONENT = 300


def strip_text_macros(s: str) -> str:
    """``\\text{abc}`` -> ``abc`` (innermost first, a bounded number of times)."""
    for _ in range(5):
        new = _TEXT_MACRO.sub(lambda m: m.group(1), s)
        if new == s:
            break
        s = new
    return s


def normalize(s: str) -> str:
    """One canonical string for an answer (see the module docstring). Never raises."""
    s = str(s).strip()
    if s.startswith("\\(") and s.endswith("\\)") or s.startswith("\\[") and s.endswith("\\]"):
        s = s[2:-2]
    s = s.replace("\\$", "").replace("$", "")  # "\\$115,000" is a number, not "\\115" and "000"
    s = _THOUSANDS_BANG.sub(r"\1\2", s)  # "11,\\! 111" is one number; "32, 349" is a list
    if "{,}" in s:
        s = _BRACE_THOUSANDS.sub(lambda m: m.group(0).replace("{,}", ""), s)
        s = s.replace("{,}", ",")  # what is left is a decimal comma: "2{,}74", "0{,}125"
    s = s.replace("\n", " ").replace("\\!", "")
    s = _SPACING.sub(" ", s)
    s = _LEFT_RIGHT.sub("", s)
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("\\cfrac", "\\frac")
    s = s.replace("\\le ", "\\leq ").replace("\\ge ", "\\geq ").replace("\\neq", "\\ne")
    s = s.replace("\\lbrace", "\\{").replace("\\rbrace", "\\}")
    s = s.replace("\\varnothing", "\\emptyset").replace("\\{\\}", "\\emptyset").replace("\\{ \\}", "\\emptyset")
    s = _DEGREES.sub("", s)
    s = s.replace("\\%", "%").replace("\\$", "").replace("^{\\prime}", "'")
    s = re.sub(r"\\text\{\s*\}", "", s)
    s = s.replace("\\text{ and }", ",").replace("\\text{and}", ",").replace("\\text{ or }", ",")
    s = strip_text_macros(s)
    s = re.sub(r",\s*(?:and|or)\s+", ",", s)  # "19, 46, and 82"
    s = re.sub(r"\s+(?:and|or)\s+", ",", s)
    s = _MIXED_SPACED.sub(r"\1\\frac{\2}{\3}", s)  # "4 4/9" is 40/9, not 44/9
    s = s.strip()
    s = _IN_PREFIX.sub("", s)  # "x \\in [-2, 7]" -> "[-2, 7]"
    m = _TRAILING_UNIT.match(s) if len(s) <= 500 else None
    if m and not re.search(r"[a-zA-Z]", m.group(1).replace("\\frac", "").replace("\\sqrt", "").replace("\\pi", "")):
        s = m.group(1)
    s = _TRAILING_PUNCT.sub("", s.strip()).strip()  # sentence punctuation, not an ellipsis
    if _THOUSANDS.match(s):
        s = s.replace(",", "")
    elif _THOUSANDS_SPACE.match(s):
        s = re.sub(r"\\,|\s", "", s)
    s = s.replace(" ", "")
    s = _FRAC_SHORT.sub(r"\\frac{\1}{\2}", s)
    s = _FRAC_SHORT2.sub(r"\\frac{\1}\2", s)
    s = _FRAC_SHORT3.sub(r"\\frac\1{\2}", s)
    s = _SQRT_SHORT.sub(r"\\sqrt{\1}", s)
    s = s.replace("\\infty", "\\infty").replace("infinity", "\\infty")
    if s.startswith("."):
        s = "0" + s
    s = re.sub(r"(?<![\d.])\.(\d)", r"0.\1", s)
    s = re.sub(r"^-0\.", "-0.", s)
    return s


_PLAIN = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)")
_SCI_E = re.compile(r"([+-]?(?:\d+\.?\d*|\.\d+))[eE]([+-]?\d{1,4})")
_SCI_TIMES = re.compile(r"([+-]?(?:\d+\.?\d*|\.\d+))(?:\\times|\\cdot|\*|x)10\^\{?([+-]?\d{1,4})\}?")
_POW10 = re.compile(r"10\^\{?([+-]?\d{1,4})\}?")
_FRAC = re.compile(r"([+-]?)\\frac\{([^{}]+)\}\{([^{}]+)\}")
_SLASH = re.compile(r"([+-]?(?:\d+\.?\d*|\.\d+))/([+-]?(?:\d+\.?\d*|\.\d+))")
_MIXED = re.compile(r"([+-]?)(\d+)\\frac\{(\d+)\}\{(\d+)\}")
_MIXED_SPACE = re.compile(r"([+-]?)(\d+)\s+(\d+)/(\d+)")


def _plain(s: str) -> float | None:
    if len(s) > MAX_NUMBER_CHARS or not _PLAIN.fullmatch(s):
        return None
    try:
        return float(s)
    except (ValueError, OverflowError):
        return None


def _words(s: str) -> float | None:
    """"twenty-one" -> 21, "five" -> 5, "three hundred" -> 300 (small, bounded grammar)."""
    parts = [p for p in re.split(r"[\s-]+", s.lower().strip()) if p and p != "and"]
    if not parts or len(parts) > 6 or any(p not in WORD_NUMBERS for p in parts):
        return None
    total, cur = 0.0, 0.0
    for p in parts:
        v = WORD_NUMBERS[p]
        if v in (100,):
            cur = (cur or 1) * v
        elif v >= 1000:
            total += (cur or 1) * v
            cur = 0
        else:
            cur += v
    return total + cur


def parse_number(s: str) -> tuple[float, bool] | None:
    """``(value, is_percent)`` for a normalised answer that is a plain number, else None.

    Reads ``12``, ``-0.5``, ``.5``, ``1e-3``, ``1.5\\times10^{3}``, ``10^{5}``, ``\\frac{3}{4}``,
    ``-\\frac{3}{4}``, ``3/4``, ``2\\frac{1}{4}`` (mixed number), ``25%``, ``five``. Bounded: long
    digit strings and exponents beyond 1e300 give None.
    """
    s = s.strip()
    if not s or len(s) > 2 * MAX_NUMBER_CHARS:
        return None
    pct = False
    for suffix in ("%", "percentage", "percent", "pct"):
        if s.lower().endswith(suffix) and len(s) > len(suffix):
            s, pct = s[: -len(suffix)].strip(), True
            break
    if s.startswith("+"):
        s = s[1:]
    v = _plain(s)
    if v is not None:
        return v, pct
    m = _SCI_E.fullmatch(s) or _SCI_TIMES.fullmatch(s)
    if m:
        mant, exp = _plain(m.group(1)), int(m.group(2))
        if mant is None or abs(exp) > MAX_EXPONENT:
            return None
        return mant * 10.0**exp, pct
    m = _POW10.fullmatch(s)
    if m:
        exp = int(m.group(1))
        return (10.0**exp, pct) if abs(exp) <= MAX_EXPONENT else None
    m = _MIXED.fullmatch(s)
    if m:
        whole, num, den = float(m.group(2)), float(m.group(3)), float(m.group(4))
        if den == 0 or num >= den:
            return None  # "2\frac{5}{4}" is not a mixed number: leave it to the symbolic path
        v = whole + num / den
        return (-v if m.group(1) == "-" else v), pct
    m = _MIXED_SPACE.fullmatch(s)
    if m:
        whole, num, den = float(m.group(2)), float(m.group(3)), float(m.group(4))
        if den == 0:
            return None
        v = whole + num / den
        return (-v if m.group(1) == "-" else v), pct
    m = _FRAC.fullmatch(s)
    if m:
        num, den = _plain(m.group(2)), _plain(m.group(3))
        if num is None or den is None or den == 0:
            return None
        v = num / den
        return (-v if m.group(1) == "-" else v), pct
    m = _SLASH.fullmatch(s)
    if m:
        num, den = _plain(m.group(1)), _plain(m.group(2))
        if num is None or den is None or den == 0:
            return None
        return num / den, pct
    if s.isalpha() or "-" in s or " " in s:
        w = _words(s)
        if w is not None:
            return w, pct
    return None


def numbers_close(a: float, b: float, rel_tol: float = 1e-4) -> bool:
    if math.isnan(a) or math.isnan(b):
        return False
    return math.isclose(a, b, rel_tol=rel_tol, abs_tol=1e-12)
