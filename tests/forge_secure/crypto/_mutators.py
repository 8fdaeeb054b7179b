"""Structure-aware mutators of valid files and the machinery that feeds them to a parser (the
hypothesis profiles ``forge-fuzz-quick`` and ``forge-fuzz-slow`` are registered here); the
conftest hands them to tests as the ``fuzzing`` fixture."""

from __future__ import annotations

import json
import os as _os
import random as _random
import re as _re

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

# --------------------------------------------------------------------------- fuzzing (issue 16, item 1)
#
# Structure-aware mutators of valid files, written once against a small "source of choices"
# so the same code is driven two ways: by hypothesis draws in the default run (shrinkable
# counterexamples), and by a hypothesis-drawn seed of a ``random.Random`` in the slow run
# (a hypothesis example costs about a millisecond on this machine; one seed drives 10 inputs,
# so the slow run reaches 100,000 inputs per parser in minutes). The counts come from two hypothesis
# profiles, ``forge-fuzz-quick`` and ``forge-fuzz-slow``; ``FORGE_FUZZ_EXAMPLES`` overrides both.


settings.register_profile(
    "forge-fuzz-quick",
    max_examples=200,
    derandomize=True,
    deadline=None,
    database=None,
    phases=[Phase.generate, Phase.shrink],
    suppress_health_check=list(HealthCheck),
)
settings.register_profile(
    "forge-fuzz-slow",
    max_examples=100_000,
    derandomize=True,
    deadline=None,
    database=None,
    phases=[Phase.generate],
    suppress_health_check=list(HealthCheck),
)

CODE_RE = _re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)+$")
HOSTILE_TOKENS = [
    b"[" * 60_000,
    b'{"a":' * 3000,
    b"1" * 5000,
    b"-" + b"9" * 400,
    b"1e999",
    b"NaN",
    b"-Infinity",
    b'"\\ud800"',
    b'["x25519"]',
    b"null",
    b"true",
    b"{}",
    b"[]",
    b"\xff\xfe",
    b'"' + b"a" * 5000 + b'"',
    b"0.5",
    b"\x00",
    b'"[/x]"',
    b'"%s%n{0}"',
    b'"\\u0000"',
    b",,",
    b'"a":1,"a":2',
    b"1" * 20,
]
NAMES = [
    "x25519",
    "ed25519",
    "ml-dsa-65",
    "ml-kem-768+x25519",
    "forge-bundle/1",
    "forge-roster/2",
    "forge-private-key/2",
    "forge-replay/2",
    "forge-audit-policy/1",
    "forge-mia-results/1",
    "2026-06-01T12:00:00Z",
    "9999-12-31T23:59:59Z",
    "[/x]",
    "[bold]x[/bold]",
    "%s{0}",
    "../../etc/passwd",
    "",
    " ",
    "a" * 300,
    "\u202e",
    "\ud800",
]
BIG_INTS = [
    0,
    -1,
    1,
    2,
    17,
    255,
    256,
    65535,
    2**31,
    2**32,
    2**53 - 1,
    2**53,
    2**63,
    2**64,
    -(2**63),
    10**16,
    10**30,
    10**39,
    10**40,
    10**41,
]


class HypothesisChoices:
    """Choices drawn by hypothesis (``st.data()``): shrinkable."""

    def __init__(self, data):
        self.data = data

    def int(self, lo: int, hi: int) -> int:
        return self.data.draw(st.integers(lo, hi))

    def pick(self, seq):
        return self.data.draw(st.sampled_from(seq))

    def bytes(self, lo: int, hi: int) -> bytes:
        return self.data.draw(st.binary(min_size=lo, max_size=hi))

    def text(self, hi: int) -> str:
        return self.data.draw(st.text(max_size=hi))


class SeededChoices:
    """The same choices from a ``random.Random`` seeded by one hypothesis draw: fast."""

    def __init__(self, seed: int):
        self.r = _random.Random(seed)

    def int(self, lo: int, hi: int) -> int:
        return self.r.randint(lo, hi)

    def pick(self, seq):
        return seq[self.r.randrange(len(seq))]

    def bytes(self, lo: int, hi: int) -> bytes:
        return self.r.randbytes(self.r.randint(lo, hi))

    def text(self, hi: int) -> str:
        alphabet = 'abcXYZ019 -_./:[]{}"\\%\u00e9\u202e\u4e2d\U0001f600\x00\ud800'
        return "".join(self.r.choice(alphabet) for _ in range(self.r.randint(0, hi)))


def _json_value(c, depth: int = 0):
    """A hostile JSON value: deep, huge, of every type."""
    kind = c.int(0, 11)
    if kind == 0:
        return None
    if kind == 1:
        return c.pick([True, False])
    if kind == 2:
        return c.pick(BIG_INTS) * c.pick([1, -1])
    if kind == 3:
        return c.pick([0.5, -0.0, 1e300, 3.14, 1e-300])
    if kind == 4:
        return c.pick(NAMES)
    if kind == 5:
        return c.text(12)
    if kind == 6:  # deep nesting
        value = c.pick([[], {}, 0, "x"])
        for _ in range(c.int(2, 120)):
            value = [value] if c.int(0, 1) else {"a": value}
        return value
    if kind == 7 and depth < 3:
        return [_json_value(c, depth + 1) for _ in range(c.int(0, 4))]
    if kind == 8 and depth < 3:
        return {c.pick(["a", "format", "name", "site", "key_id", "version", ""]): _json_value(c, depth + 1) for _ in range(c.int(0, 3))}
    if kind == 9:
        return c.pick(["AAAA", "=", "!!!", "QUJD" * 100, "a" * 100_000])
    if kind == 10:
        return [c.pick(NAMES)] * c.int(1, 5)  # a list where a name belongs
    return {}


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, (*prefix, i))


def _copy(doc):
    return json.loads(json.dumps(doc))


def _get(doc, path):
    for key in path:
        doc = doc[key]
    return doc


def json_mutation(c, doc, paths) -> bytes:
    """The valid document with one to three structural changes, serialised one of several ways."""
    out = _copy(doc)
    for _ in range(c.int(1, 3)):
        paths_now = list(_paths(out)) if out is not doc else paths
        path = paths_now[c.int(0, len(paths_now) - 1)]
        op = c.int(0, 6)
        if not path:
            out = _json_value(c)
            continue
        parent = _get(out, path[:-1])
        key = path[-1]
        if op <= 2:  # replace with a hostile value
            parent[key] = _json_value(c)
        elif op == 3 and isinstance(parent, dict):  # drop the field
            del parent[key]
        elif op == 3:
            del parent[key]
        elif op == 4 and isinstance(parent, dict):  # an unknown sibling field
            parent[c.pick(["extra", "format2", key + "x" if isinstance(key, str) else "k", ""])] = _json_value(c)
        elif op == 4:
            parent.append(_json_value(c))
        elif op == 5:  # another field's value here (types that are right elsewhere)
            others = list(_paths(out))
            donor = others[c.int(0, len(others) - 1)]
            parent[key] = _copy(_get(out, donor))
        else:  # numbers nudged, strings changed
            v = parent[key]
            if isinstance(v, bool):
                parent[key] = not v
            elif isinstance(v, int):
                parent[key] = v + c.pick([-1, 1, -v, 2**53, -(2**63), 10**40])
            elif isinstance(v, str):
                parent[key] = c.pick([v[:-1], v + "x", v.upper(), v * 2, "", v[::-1]])
            else:
                parent[key] = _json_value(c)
    style = c.int(0, 3)
    if style == 0:
        text = json.dumps(out, sort_keys=True, separators=(",", ":"))
    elif style == 1:
        text = json.dumps(out, indent=2, sort_keys=True) + "\n"
    elif style == 2:
        text = json.dumps(out, separators=(",", ":"), ensure_ascii=False)
    else:
        text = json.dumps(out, indent=1)
    return text.encode("utf-8", "surrogatepass")


def byte_mutation(c, raw: bytes, others: list[bytes]) -> bytes:
    """The valid bytes damaged one to four times: flips, cuts, inserts, deletions, duplicated
    ranges, splices of another valid file, hostile tokens."""
    data = raw
    for _ in range(c.int(1, 4)):
        n = len(data)
        i = c.int(0, max(n - 1, 0))
        op = c.int(0, 7)
        if op == 0 and n:
            data = data[:i] + bytes([data[i] ^ c.int(1, 255)]) + data[i + 1 :]
        elif op == 1:
            data = data[:i]
        elif op == 2:
            data = data[:i] + c.bytes(1, 16) + data[i:]
        elif op == 3:
            data = data[:i] + data[i + c.int(1, 64) :]
        elif op == 4 and n:
            j = c.int(i, n)
            data = data[:j] + data[i:j] + data[j:]
        elif op == 5 and others:
            other = c.pick(others)
            j = c.int(0, len(other))
            k = c.int(j, min(len(other), j + 4096))
            data = data[:i] + other[j:k] + data[i + (k - j) * c.int(0, 1) :]
        elif op == 6:
            data = data[:i] + c.pick(HOSTILE_TOKENS) + data[i + c.int(0, 8) :]
        else:
            data = data[:i] + data[i:].replace(b'"', b"", 1)
    return data


class Target:
    """One parser of outside bytes and valid inputs to mutate. ``parse(bytes)`` must return or
    raise ``expected`` (whose ``code``, when ``coded``, is a dotted reason code)."""

    def __init__(
        self,
        name: str,
        parse,
        seeds: list[bytes],
        *,
        expected=None,
        coded: bool = True,
        json_doc: bool = True,
        only_seeds_valid: bool = False,
    ):
        from forge_secure.errors import ForgeError

        self.name, self.parse, self.seeds = name, parse, seeds
        self.only_seeds_valid = only_seeds_valid  # signed bytes: any other accepted input is a forgery
        self.expected = expected or ForgeError
        self.coded = coded
        self.docs = []
        if json_doc:
            for s in seeds:
                doc = json.loads(s)
                self.docs.append((doc, list(_paths(doc))))

    def make(self, c) -> bytes:
        family = c.int(0, 9)
        if family <= 4 and self.docs:
            doc, paths = self.docs[c.int(0, len(self.docs) - 1)]
            return json_mutation(c, doc, paths)
        raw = self.seeds[c.int(0, len(self.seeds) - 1)]
        if family <= 8:
            return byte_mutation(c, raw, self.seeds)
        return c.pick(HOSTILE_TOKENS) if c.int(0, 1) else c.bytes(0, 256)


class FuzzRun:
    def __init__(self, target: Target):
        self.target = target
        self.inputs = 0
        self.codes: dict[str, int] = {}
        self.accepted = 0
        self.crashes: list[tuple[str, bytes]] = []

    def one(self, data: bytes) -> None:
        self.inputs += 1
        try:
            self.target.parse(data)
        except self.target.expected as e:
            code = getattr(e, "code", None)
            if self.target.coded and not (isinstance(code, str) and CODE_RE.match(code)):
                self.crashes.append((f"error without a dotted code: {type(e).__name__} {code!r}", data[:2000]))
            else:
                self.codes[code or type(e).__name__] = self.codes.get(code or type(e).__name__, 0) + 1
        except Exception as e:  # noqa: BLE001 - the property under test
            self.crashes.append((f"{type(e).__name__}: {str(e)[:200]}", data[:2000]))
        else:
            self.accepted += 1
            if self.target.only_seeds_valid and data not in self.target.seeds:
                self.crashes.append(("a changed input was accepted", data[:2000]))

    def summary(self) -> dict:
        return {
            "parser": self.target.name,
            "inputs": self.inputs,
            "refused": sum(self.codes.values()),
            "accepted": self.accepted,
            "crashes": len(self.crashes),
            "codes": len(self.codes),
        }


SLOW_BATCH = 10  # inputs per hypothesis example in the slow run (each from the example's seeded generator)


def fuzz_count(kind: str) -> int:
    """Inputs per parser: the profile's ``max_examples`` (times SLOW_BATCH inputs per example in
    the slow run, whose examples are ``max_examples / SLOW_BATCH``), or ``FORGE_FUZZ_EXAMPLES``."""
    env = _os.environ.get("FORGE_FUZZ_EXAMPLES")
    return int(env) if env else settings.get_profile(f"forge-fuzz-{kind}").max_examples


def run_fuzz(target: Target, kind: str) -> FuzzRun:
    """Feed ``target`` ``fuzz_count(kind)`` inputs: hypothesis-drawn mutations (quick) or
    seeded mutations from hypothesis-drawn seeds (slow). Records crashes instead of stopping at
    the first, so a slow run reports how many there were."""
    run = FuzzRun(target)
    n = fuzz_count(kind)
    batch = 1 if kind == "quick" else SLOW_BATCH
    profile = settings(settings.get_profile(f"forge-fuzz-{kind}"), max_examples=-(-n // batch))
    if kind == "quick":

        @profile
        @given(data=st.data())
        def prop(data):
            run.one(target.make(HypothesisChoices(data)))
    else:

        @profile
        @given(seed=st.integers(0, 2**64 - 1))
        def prop(seed):
            choices = SeededChoices(seed)
            for _ in range(batch):
                run.one(target.make(choices))

    prop()
    report = _os.environ.get("FORGE_FUZZ_REPORT")
    if report:
        with open(report, "a") as f:
            kinds: dict[str, int] = {}
            for why, _ in run.crashes:
                kinds[why[:70]] = kinds.get(why[:70], 0) + 1
            f.write(
                json.dumps(
                    {
                        **run.summary(),
                        "kind": kind,
                        "examples": n,
                        "crash_kinds": kinds,
                        "first_crashes": [(why, data[:300].decode("latin-1")) for why, data in run.crashes[:5]],
                    }
                )
                + "\n"
            )
    return run


def assert_total(run: FuzzRun, at_least: int) -> None:
    assert run.inputs >= at_least, run.summary()
    assert not run.crashes, (run.summary(), run.crashes[:5])
    assert sum(run.codes.values()) > 0, run.summary()  # the mutations reached the parser's refusals
