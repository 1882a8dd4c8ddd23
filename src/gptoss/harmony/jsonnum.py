"""Numbers in tool schemas as openai-harmony prints them, after their trip from Python to Rust.

openai-harmony hands schemas to Rust as `json.dumps` text; serde_json parses each number with its default
(fast, not correctly rounded) algorithm, and prints the f64 with ryu. So `3.758518362345901e+49` comes out as
`3.7585183623459005e49`, and integers beyond 64 bits become floats. Defaults and examples are printed into the
prompt the model was trained on, so we replay both steps exactly.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal

from gptoss.harmony.errors import HarmonyError

U64_MAX = 2**64 - 1
I32_MAX = 2**31 - 1
POW10 = [float(f"1e{i}") for i in range(309)]  # serde_json's table: each entry is the correctly rounded literal
NUMBER = re.compile(r"(-?)(\d+)(?:\.(\d+))?(?:[eE]([+-]?)(\d+))?")


def ryu_float(x: float) -> str:
    """A finite f64 as ryu prints it: shortest round-trip digits; exponent form outside 1e-5 <= |x| < 1e16."""
    if x == 0:
        return "-0.0" if str(x).startswith("-") else "0.0"
    sign, digit_tuple, exponent = Decimal(repr(x)).as_tuple()
    digits = "".join(map(str, digit_tuple)).rstrip("0")
    k = int(exponent) + len(digit_tuple) - len(digits)  # value = digits * 10**k
    kk = len(digits) + k  # position of the decimal point
    if k >= 0 and kk <= 16:
        body = digits + "0" * k + ".0"
    elif 0 < kk <= 16:
        body = digits[:kk] + "." + digits[kk:]
    elif -5 < kk <= 0:
        body = "0." + "0" * -kk + digits
    elif len(digits) == 1:
        body = f"{digits}e{kk - 1}"
    else:
        body = f"{digits[0]}.{digits[1:]}e{kk - 1}"
    return ("-" if sign else "") + body


def accumulate(significand: int, digits: str) -> tuple[int, int]:
    """Append digits to a u64 significand until the next one would overflow: (significand, digits used)."""
    for used, ch in enumerate(digits):
        candidate = significand * 10 + int(ch)
        if candidate > U64_MAX:
            return significand, used
        significand = candidate
    return significand, len(digits)


def f64_from_parts(positive: bool, significand: int, exponent: int) -> float:
    """serde_json's `f64_from_parts`: one rounding of the significand, then one multiply or divide by 10^|e|."""
    f = float(significand)
    while True:
        if abs(exponent) < len(POW10):
            f = f * POW10[exponent] if exponent >= 0 else f / POW10[-exponent]
            break
        if f == 0.0:
            break
        if exponent >= 0:
            raise HarmonyError("number out of range in a tool schema")
        f /= 1e308
        exponent += 308
    if f == float("inf"):
        raise HarmonyError("number out of range in a tool schema")
    return f if positive else -f


def serde_parse(text: str) -> int | float:
    """A JSON number literal as serde_json (without `float_roundtrip`) reads it."""
    match = NUMBER.fullmatch(text)
    if match is None:
        raise HarmonyError(f"not a JSON number: {text!r}")
    sign, whole, frac, exp_sign, exp_digits = match.groups()
    positive = sign == ""
    significand, used = accumulate(0, whole)
    if frac is None and exp_digits is None and used == len(whole):
        if positive:
            return significand
        return -significand if 0 < significand <= 2**63 else -float(significand)  # i64, else f64
    exponent = len(whole) - used  # integer digits past overflow scale the value up
    if frac is not None:
        significand, taken = accumulate(significand, frac)  # fraction digits past overflow are ignored
        exponent -= taken
    if exp_digits is not None:
        exp = min(int(exp_digits), I32_MAX)
        exponent = exponent - exp if exp_sign == "-" else exponent + exp
    return f64_from_parts(positive, significand, exponent)


def display_number(value: int | float) -> str:
    """How openai-harmony's renderer prints a Python number found in a schema."""
    parsed = serde_parse(json.dumps(value))
    return str(parsed) if isinstance(parsed, int) else ryu_float(parsed)
