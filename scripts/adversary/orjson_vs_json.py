"""Attack 2 (no defect found: exits 0): fleet.records._parsed (orjson) must give json.loads's value
wherever it reads a text at all, or hand the text to json.loads (_NOT_PARSED).

Compares, value for value (json.dumps of both: int vs float, -0.0, NaN, key order and the last of
duplicate keys all show), on str and on UTF-8 bytes: hand-picked edge cases (big ints at and past
64 bits, -0 / -0.0 / -0e0, subnormals and the largest doubles, 17-18 digit mantissas, duplicate and
escaped-duplicate keys, a BOM, lone and paired surrogate escapes, \\u0000, raw control characters,
NaN / Infinity, nesting to 1100, a 100,000-element list, trailing NUL), 150,000 random decimal
numbers of 1-18 digits with exponents to +-330, 50,000 random doubles' repr, and 200,000 random
10-character texts over JSON's punctuation, escapes and control characters (seeded: repeatable).
Expected and got (orjson 3.13.0): no text that orjson reads gives another value than json.loads,
and none that json.loads refuses. Usage: python scripts/adversary/orjson_vs_json.py"""

import json
import random
import struct
import sys

from fleet.records import _NOT_PARSED, _parsed

sys.setrecursionlimit(100000)
EDGE = [
    "-0",
    "-0.0",
    "-0e0",
    "0e-0",
    "1e400",
    "1e-400",
    "4.9e-324",
    "5e-324",
    "1e-324",
    "1e-323",
    "2.4703282292062328e-324",
    "2.4703282292062327e-324",
    "2.2250738585072011e-308",
    "2.2250738585072012e-308",
    "1.7976931348623157e308",
    "1.7976931348623159e308",
    "8.98846567431158e307",
    "9.999999999999999e22",
    "1e23",
    "0.30000000000000004",
    "1234567890123456.78",
    "100000000000000000e10",
    "1" + "0" * 17 + ".5",
    "0." + "0" * 17 + "1",
    "123456789012345678",
    "-123456789012345678",
    "9223372036854775807",
    "-9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "1e000000000000000001",
    "9007199254740993",
    '{"a":1,"a":2}',
    '{"a":1,"b":2,"a":3}',
    '{"a":1,"\\u0061":2}',
    '{"a":{"x":1},"a":[2]}',
    '"\\ud800"',
    '"\\udc00"',
    '"\\ud800\\udc00"',
    '"\\ud800\\u0041"',
    '"\\udc00\\ud800"',
    '"\\uD83D\\uDE00"',
    '"\\u0000"',
    '"\x00"',
    '"a\tb"',
    '"a\nb"',
    '"a\x7fb"',
    '"\x80"',
    '"\u2028"',
    "\ufeff{}",
    '{"a":1}\x00',
    "NaN",
    "-Infinity",
    "[1e999]",
    "\x0c1",
    "\u00a01",
    "1.",
    "01",
    ".5",
    "+1",
    "[1,]",
    '{"a":1,}',
    '"\\x"',
    "[" * 1100 + "]" * 1100,
    "[" * 500 + "]" * 500,
    '{"a":' * 600 + "1" + "}" * 600,
    "[" + ",".join(["1"] * 100000) + "]",
]


def differs(text: str | bytes) -> str | None:
    got = _parsed(text)
    if got is _NOT_PARSED:
        return None  # json.loads decides
    try:
        want = json.loads(text)
    except (ValueError, RecursionError) as exc:
        return f"orjson read {text!r:.60} as {got!r:.40}; json.loads refuses it ({exc})"
    if json.dumps(got) != json.dumps(want):
        return f"{text!r:.60}: orjson {got!r:.40}, json.loads {want!r:.40}"
    return None


def texts() -> list[str]:
    rnd = random.Random(1)
    out = list(EDGE)
    for _ in range(150000):
        k = rnd.randint(1, 18)
        digits = "".join(rnd.choice("0123456789") for _ in range(k))
        p = rnd.randint(0, k)
        m = (digits[:p] or "0") + ("." + digits[p:] if p < k else "")
        if rnd.random() < 0.7:
            m += rnd.choice("eE") + rnd.choice(["", "-", "+"]) + str(rnd.randint(0, 330))
        out.append(("-" if rnd.random() < 0.5 else "") + m)
    for _ in range(50000):
        out.append(repr(struct.unpack("d", struct.pack("Q", rnd.getrandbits(64)))[0]))
    alphabet = list('"\\ud800{}[],:1-.e \t\nan\x00\x1f\x7fé\u2028ntrfls')
    for _ in range(200000):
        out.append("".join(rnd.choice(alphabet) for _ in range(rnd.randint(1, 10))))
    return out


found = [d for t in texts() for raw in (t, t.encode("utf-8", "surrogatepass")) if (d := differs(raw))]
for d in found[:20]:
    print("DIFF", d)
raise SystemExit(f"DEFECT: {len(found)} text(s) decode differently" if found else 0)
