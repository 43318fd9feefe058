"""Gossip message signing: round trips, every rejection reason, replay cache, key rotation."""

from __future__ import annotations

import base64
from collections.abc import Callable

import pytest

from haflowd.gossip.signing import (
    MAX_SKEW_S,
    NONCE,
    REQUEST_NONCE,
    SENDER,
    SIGNATURE,
    TIMESTAMP,
    Keyring,
    Signer,
    Verdict,
    Verifier,
    canonical,
    parse_keys,
)
from haflowd.testing import FakeClock

OLD = bytes(range(32))
NEW = bytes(range(100, 132))
OTHER = b"\xee" * 32
BODY = b'{"type": "ping", "seq": 7}'
PATH = "/gossip/ping?probe=1"
Headers = dict[str, str]


def make(keys: list[bytes] | None = None, clock: FakeClock | None = None, **kw: float) -> tuple[Signer, Verifier]:
    clock = clock or FakeClock()
    ring = Keyring(keys or [OLD])
    return Signer(ring, "node1", clock), Verifier(ring, clock, **kw)  # type: ignore[arg-type]


def ok(sender: str = "node1") -> Verdict:
    return Verdict(True, None, sender)


def refused(reason: str) -> Verdict:
    return Verdict(False, reason, None)  # type: ignore[arg-type]


# --- round trips ----------------------------------------------------------------------


def test_request_round_trip() -> None:
    signer, verifier = make()
    headers = signer.sign_request("post", PATH, BODY)
    assert set(headers) == {SENDER, TIMESTAMP, NONCE, SIGNATURE}
    assert headers[SENDER] == "node1"
    assert headers[TIMESTAMP] == "1700001000.000"
    assert len(headers[NONCE]) == 32 and len(headers[SIGNATURE]) == 64
    assert verifier.verify_request("POST", PATH, headers, BODY) == ok()


def test_response_round_trip() -> None:
    signer, verifier = make()
    request = signer.sign_request("POST", PATH, BODY)
    answer = signer.sign_response(PATH, request[NONCE], b"ack")
    assert answer[REQUEST_NONCE] == request[NONCE]
    assert verifier.verify_response(PATH, request[NONCE], answer, b"ack") == ok()


def test_nonces_differ_between_messages() -> None:
    signer, _ = make()
    assert len({signer.sign_request("GET", "/", b"")[NONCE] for _ in range(50)}) == 50


@pytest.mark.parametrize("case", [str.lower, str.upper, lambda name: name.swapcase()])
def test_header_names_are_case_insensitive(case: Callable[[str], str]) -> None:
    signer, verifier = make()
    headers = {case(k): v for k, v in signer.sign_request("GET", PATH, b"").items()}
    assert verifier.verify_request("GET", PATH, headers, b"") == ok()


def test_signature_hex_case_does_not_matter() -> None:
    signer, verifier = make()
    headers = signer.sign_request("GET", PATH, b"")
    headers[SIGNATURE] = headers[SIGNATURE].upper()
    assert verifier.verify_request("GET", PATH, headers, b"") == ok()


def test_canonical_layout() -> None:
    got = canonical("post", "/a?b=1", "1.000", "n" * 32, "node1", b"", "r" * 32)
    empty_sha = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert got == f"POST\n/a?b=1\n1.000\n{'n' * 32}\nnode1\n{'r' * 32}\n{empty_sha}".encode()


@pytest.mark.parametrize("field", range(6))
def test_canonical_refuses_line_breaks(field: int) -> None:
    args = ["GET", "/", "1.0", "0" * 32, "node1", ""]
    args[field] += "\nX"
    with pytest.raises(ValueError, match="line break"):
        canonical(args[0], args[1], args[2], args[3], args[4], b"", args[5])


# --- missing and malformed headers ----------------------------------------------------


@pytest.mark.parametrize("name", [SENDER, TIMESTAMP, NONCE, SIGNATURE])
def test_request_missing_header(name: str) -> None:
    signer, verifier = make()
    headers = signer.sign_request("GET", PATH, b"")
    del headers[name]
    assert verifier.verify_request("GET", PATH, headers, b"") == refused("missing_headers")


@pytest.mark.parametrize("name", [SENDER, TIMESTAMP, NONCE, SIGNATURE, REQUEST_NONCE])
def test_response_missing_header(name: str) -> None:
    signer, verifier = make()
    request_nonce = "ab" * 16
    headers = signer.sign_response(PATH, request_nonce, b"")
    del headers[name]
    assert verifier.verify_response(PATH, request_nonce, headers, b"") == refused("missing_headers")


def test_no_headers_at_all() -> None:
    _, verifier = make()
    assert verifier.verify_request("GET", PATH, {}, b"") == refused("missing_headers")


MALFORMED = [
    (SENDER, ""),
    (SENDER, "x" * 129),
    (SENDER, "node\n1"),
    (SENDER, "node\x001"),
    (TIMESTAMP, ""),
    (TIMESTAMP, "abc"),
    (TIMESTAMP, "nan"),
    (TIMESTAMP, "inf"),
    (TIMESTAMP, "1e400"),
    (TIMESTAMP, "1700001000.000\n"),
    (TIMESTAMP, " 1700001000.000"),
    (TIMESTAMP, "9" * 400),
    (NONCE, ""),
    (NONCE, "0" * 31),
    (NONCE, "0" * 33),
    (NONCE, "g" * 32),
    (SIGNATURE, ""),
    (SIGNATURE, "0" * 63),
    (SIGNATURE, "0" * 65),
    (SIGNATURE, "z" * 64),
]


@pytest.mark.parametrize(("name", "value"), MALFORMED, ids=[f"{n}={v[:20]!r}" for n, v in MALFORMED])
def test_malformed_header(name: str, value: str) -> None:
    signer, verifier = make()
    headers = signer.sign_request("GET", PATH, b"")
    headers[name] = value
    assert verifier.verify_request("GET", PATH, headers, b"") == refused("malformed_headers")


@pytest.mark.parametrize("value", ["", "0" * 31, "x" * 32])
def test_malformed_request_nonce_header_on_answer(value: str) -> None:
    signer, verifier = make()
    request_nonce = "ab" * 16
    headers = signer.sign_response(PATH, request_nonce, b"")
    headers[REQUEST_NONCE] = value
    assert verifier.verify_response(PATH, request_nonce, headers, b"") == refused("malformed_headers")


def test_header_given_twice_under_different_case_is_malformed() -> None:
    signer, verifier = make()
    headers = signer.sign_request("GET", PATH, b"")
    headers[NONCE.lower()] = "0" * 32
    assert verifier.verify_request("GET", PATH, headers, b"") == refused("malformed_headers")


def test_line_break_in_path_is_malformed() -> None:
    signer, verifier = make()
    headers = signer.sign_request("GET", PATH, b"")
    assert verifier.verify_request("GET", PATH + "\nX", headers, b"") == refused("malformed_headers")


# --- tampering and foreign keys -------------------------------------------------------

TAMPER: dict[str, Callable[[str, str, Headers, bytes], tuple[str, str, Headers, bytes]]] = {
    "method": lambda m, p, h, b: ("PUT", p, h, b),
    "path": lambda m, p, h, b: (m, "/gossip/ping?probe=2", h, b),
    "path-without-query": lambda m, p, h, b: (m, "/gossip/ping", h, b),
    "body": lambda m, p, h, b: (m, p, h, b + b" "),
    "empty-body": lambda m, p, h, b: (m, p, h, b""),
    "sender": lambda m, p, h, b: (m, p, {**h, SENDER: "node2"}, b),
    "timestamp": lambda m, p, h, b: (m, p, {**h, TIMESTAMP: "1700001001.000"}, b),
    "timestamp-format": lambda m, p, h, b: (m, p, {**h, TIMESTAMP: "1700001000.0"}, b),
    "nonce": lambda m, p, h, b: (m, p, {**h, NONCE: "0" * 32}, b),
    "signature": lambda m, p, h, b: (m, p, {**h, SIGNATURE: "0" * 64}, b),
}


@pytest.mark.parametrize("what", TAMPER)
def test_tampered_request(what: str) -> None:
    signer, verifier = make()
    args = TAMPER[what]("POST", PATH, signer.sign_request("POST", PATH, BODY), BODY)
    assert verifier.verify_request(*args) == refused("bad_signature")


def test_method_case_is_not_tampering() -> None:
    signer, verifier = make()
    assert verifier.verify_request("post", PATH, signer.sign_request("POST", PATH, BODY), BODY) == ok()


def test_key_not_in_ring() -> None:
    clock = FakeClock()
    foreign = Signer(Keyring([OTHER]), "node1", clock)
    verifier = Verifier(Keyring([OLD, NEW]), clock)
    headers = foreign.sign_request("GET", PATH, b"")
    assert verifier.verify_request("GET", PATH, headers, b"") == refused("bad_signature")


def test_response_replayed_to_another_request() -> None:
    signer, verifier = make()
    first, second = "aa" * 16, "bb" * 16
    answer = signer.sign_response(PATH, first, b"ack")
    assert verifier.verify_response(PATH, second, answer, b"ack") == refused("bad_signature")
    relabelled = {**answer, REQUEST_NONCE: second}
    assert verifier.verify_response(PATH, second, relabelled, b"ack") == refused("bad_signature")


@pytest.mark.parametrize("what", ["path", "body"])
def test_tampered_response(what: str) -> None:
    signer, verifier = make()
    request_nonce = "cd" * 16
    answer = signer.sign_response(PATH, request_nonce, b"ack")
    path, body = (PATH + "&x", b"ack") if what == "path" else (PATH, b"nak")
    assert verifier.verify_response(path, request_nonce, answer, body) == refused("bad_signature")


def test_request_is_not_accepted_as_an_answer() -> None:
    signer, verifier = make()
    request = signer.sign_request("GET", PATH, b"")
    as_answer = {**request, REQUEST_NONCE: request[NONCE]}
    assert verifier.verify_response(PATH, request[NONCE], as_answer, b"") == refused("bad_signature")


def test_response_method_is_reserved_for_answers() -> None:
    signer, _ = make()
    with pytest.raises(ValueError, match="reserved"):
        signer.sign_request("response", PATH, b"")


# --- clock skew -----------------------------------------------------------------------

SKEW = [
    ("past-inside", -29.9, True),
    ("past-edge", -30.0, True),
    ("past-outside", -30.1, False),
    ("future-inside", 29.9, True),
    ("future-edge", 30.0, True),
    ("future-outside", 30.1, False),
]


@pytest.mark.parametrize(("offset", "accepted"), [(o, a) for _, o, a in SKEW], ids=[i for i, _, _ in SKEW])
def test_skew(offset: float, accepted: bool) -> None:
    verifier_clock = FakeClock(start=1000.0)
    signer_clock = FakeClock(start=1000.0 + offset)
    signer = Signer(Keyring([OLD]), "node1", signer_clock)
    verifier = Verifier(Keyring([OLD]), verifier_clock)
    headers = signer.sign_request("GET", PATH, b"")
    expected = ok() if accepted else refused("stale")
    assert verifier.verify_request("GET", PATH, headers, b"") == expected


def test_stale_is_checked_before_the_signature() -> None:
    clock = FakeClock()
    signer, verifier = make(clock=clock)
    headers = signer.sign_request("GET", PATH, b"")
    clock.advance(MAX_SKEW_S + 1)
    assert verifier.verify_request("GET", PATH, {**headers, SIGNATURE: "0" * 64}, b"") == refused("stale")


def test_custom_max_skew() -> None:
    clock = FakeClock()
    signer, verifier = make(clock=clock, max_skew=5.0)
    headers = signer.sign_request("GET", PATH, b"")
    clock.advance(5.5)
    assert verifier.verify_request("GET", PATH, headers, b"") == refused("stale")


# --- replay cache ---------------------------------------------------------------------


@pytest.mark.parametrize("after", [0.0, 1.0, 29.0])
def test_replay(after: float) -> None:
    clock = FakeClock()
    signer, verifier = make(clock=clock)
    headers = signer.sign_request("POST", PATH, BODY)
    assert verifier.verify_request("POST", PATH, headers, BODY) == ok()
    clock.advance(after)
    assert verifier.verify_request("POST", PATH, headers, BODY) == refused("replay")


def test_replay_of_a_message_from_the_future_is_caught_until_it_goes_stale() -> None:
    """A timestamp 30 s ahead stays fresh for 60 s after arrival: the nonce must outlive that."""
    verifier_clock, signer_clock = FakeClock(start=1000.0), FakeClock(start=1030.0)
    signer = Signer(Keyring([OLD]), "node1", signer_clock)
    verifier = Verifier(Keyring([OLD]), verifier_clock)
    headers = signer.sign_request("GET", PATH, b"")
    assert verifier.verify_request("GET", PATH, headers, b"") == ok()
    verifier_clock.advance(2 * MAX_SKEW_S - 0.1)
    assert verifier.verify_request("GET", PATH, headers, b"") == refused("replay")
    verifier_clock.advance(0.2)
    assert verifier.verify_request("GET", PATH, headers, b"") == refused("stale")


def test_forgotten_nonce_is_stale_anyway() -> None:
    clock = FakeClock()
    signer, verifier = make(clock=clock)
    old = signer.sign_request("GET", PATH, b"")
    assert verifier.verify_request("GET", PATH, old, b"") == ok()
    clock.advance(2 * MAX_SKEW_S + 0.001)
    fresh = signer.sign_request("GET", PATH, b"")
    assert verifier.verify_request("GET", PATH, fresh, b"") == ok()
    assert verifier.cached_nonces == 1  # the old nonce expired and was purged
    assert verifier.verify_request("GET", PATH, old, b"") == refused("stale")


def test_forged_messages_are_not_recorded() -> None:
    signer, verifier = make()
    genuine = signer.sign_request("POST", PATH, BODY)
    for forged_body in (b"", b"x", BODY + b"!"):
        assert verifier.verify_request("POST", PATH, genuine, forged_body) == refused("bad_signature")
    assert verifier.cached_nonces == 0
    assert verifier.verify_request("POST", PATH, genuine, BODY) == ok()


def test_stale_and_malformed_messages_are_not_recorded() -> None:
    clock = FakeClock()
    signer, verifier = make(clock=clock)
    headers = signer.sign_request("GET", PATH, b"")
    clock.advance(MAX_SKEW_S + 1)
    assert verifier.verify_request("GET", PATH, headers, b"") == refused("stale")
    assert verifier.cached_nonces == 0


def test_cache_is_bounded() -> None:
    signer, verifier = make(max_nonces=100)
    for i in range(1000):
        body = str(i).encode()
        assert verifier.verify_request("POST", PATH, signer.sign_request("POST", PATH, body), body).ok
        assert verifier.cached_nonces <= 100
    assert verifier.cached_nonces == 100
    assert verifier.evictions == 900


def test_expiry_makes_room_before_eviction() -> None:
    clock = FakeClock()
    signer, verifier = make(clock=clock, max_nonces=10)
    for _ in range(10):
        assert verifier.verify_request("GET", PATH, signer.sign_request("GET", PATH, b""), b"").ok
        clock.advance(7.0)  # each nonce lives 60 s: the oldest ones expire as new ones arrive
    assert verifier.evictions == 0
    assert verifier.cached_nonces < 10


def test_requests_and_responses_share_the_cache() -> None:
    signer, verifier = make()
    request_nonce = "ef" * 16
    answer = signer.sign_response(PATH, request_nonce, b"ack")
    assert verifier.verify_response(PATH, request_nonce, answer, b"ack") == ok()
    assert verifier.verify_response(PATH, request_nonce, answer, b"ack") == refused("replay")
    assert verifier.cached_nonces == 1


# --- key rotation ---------------------------------------------------------------------


@pytest.mark.parametrize("signer_keys", [[OLD], [NEW], [OLD, NEW], [NEW, OLD]])
def test_rotation_any_key_of_the_ring_verifies(signer_keys: list[bytes]) -> None:
    clock = FakeClock()
    signer = Signer(Keyring(signer_keys), "node1", clock)
    verifier = Verifier(Keyring([NEW, OLD]), clock)
    assert verifier.verify_request("GET", PATH, signer.sign_request("GET", PATH, b""), b"") == ok()


def test_rotation_step_by_step() -> None:
    """Add the new key everywhere, move it first, drop the old: no message is refused."""
    clock = FakeClock()
    signer = Signer(Keyring([OLD]), "node1", clock)
    verifier = Verifier(Keyring([OLD]), clock)

    def accepted() -> bool:
        return verifier.verify_request("GET", PATH, signer.sign_request("GET", PATH, b""), b"").ok

    steps = [
        (signer.set_keyring, [OLD, NEW]),
        (verifier.set_keyring, [OLD, NEW]),
        (signer.set_keyring, [NEW, OLD]),  # the verifier still has [OLD, NEW]
        (verifier.set_keyring, [NEW, OLD]),
        (signer.set_keyring, [NEW]),
        (verifier.set_keyring, [NEW]),
    ]
    for set_keyring, keys in steps:
        set_keyring(Keyring(keys))
        assert accepted()


def test_signer_switches_to_the_new_first_key() -> None:
    clock = FakeClock()
    signer = Signer(Keyring([OLD]), "node1", clock)
    new_only = Verifier(Keyring([NEW]), clock)
    assert new_only.verify_request("GET", PATH, signer.sign_request("GET", PATH, b""), b"") == refused(
        "bad_signature"
    )
    signer.set_keyring(Keyring([NEW, OLD]))
    assert new_only.verify_request("GET", PATH, signer.sign_request("GET", PATH, b""), b"") == ok()


def test_removed_key_no_longer_verifies() -> None:
    clock = FakeClock()
    signer = Signer(Keyring([OLD]), "node1", clock)
    verifier = Verifier(Keyring([NEW, OLD]), clock)
    verifier.set_keyring(Keyring([NEW]))
    assert verifier.verify_request("GET", PATH, signer.sign_request("GET", PATH, b""), b"") == refused(
        "bad_signature"
    )


def test_reload_keeps_the_nonce_cache() -> None:
    signer, verifier = make()
    headers = signer.sign_request("GET", PATH, b"")
    assert verifier.verify_request("GET", PATH, headers, b"").ok
    verifier.set_keyring(Keyring([OLD, NEW]))
    assert verifier.verify_request("GET", PATH, headers, b"") == refused("replay")


# --- keyrings and secrets -------------------------------------------------------------


@pytest.mark.parametrize(
    ("keys", "error"),
    [
        ([], "at least one key"),
        ([b"x" * 15], "key 1 is 15 bytes"),
        ([OLD, b""], "key 2 is 0 bytes"),
    ],
)
def test_keyring_refuses(keys: list[bytes], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        Keyring(keys)


def test_keyring_refuses_text_keys() -> None:
    with pytest.raises(TypeError):
        Keyring(["a" * 32])  # type: ignore[list-item]


def test_keyring_order() -> None:
    ring = Keyring([NEW, OLD])
    assert ring.signing_key == NEW
    assert ring.keys == (NEW, OLD)


def test_no_key_material_in_repr() -> None:
    ring = Keyring([OLD, NEW])
    clock = FakeClock()
    shown = " ".join(
        text
        for obj in (ring, Signer(ring, "node1", clock), Verifier(ring, clock))
        for text in (repr(obj), str(obj), f"{obj}")
    )
    for key in (OLD, NEW):
        for form in (repr(key), key.hex(), key.hex().upper(), base64.b64encode(key).decode(), key.decode("latin-1")):
            assert form not in shown
        assert key[:8].hex() not in shown
    assert "2 keys" in shown


@pytest.mark.parametrize("sender", ["", "x" * 129, "a\nb"])
def test_signer_refuses_bad_sender(sender: str) -> None:
    with pytest.raises(ValueError, match="sender"):
        Signer(Keyring([OLD]), sender, FakeClock())


@pytest.mark.parametrize("nonce", ["", "0" * 31, "q" * 32])
def test_sign_response_refuses_bad_request_nonce(nonce: str) -> None:
    signer, _ = make()
    with pytest.raises(ValueError, match="request_nonce"):
        signer.sign_response(PATH, nonce, b"")


@pytest.mark.parametrize(("kw", "error"), [({"max_skew": 0.0}, "max_skew"), ({"max_nonces": 0}, "max_nonces")])
def test_verifier_refuses_bad_limits(kw: dict[str, float], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        Verifier(Keyring([OLD]), FakeClock(), **kw)  # type: ignore[arg-type]


# --- parse_keys -----------------------------------------------------------------------

B64_OLD = base64.b64encode(OLD).decode()
B64_NEW = base64.b64encode(NEW).decode()
B64_SHORT = base64.b64encode(b"x" * 15).decode()

PARSE_OK = [
    ("one", B64_OLD, [OLD]),
    ("two-in-order", f"{B64_NEW}\n{B64_OLD}\n", [NEW, OLD]),
    ("comments-and-blanks", f"# new first\n\n  {B64_NEW}  \n\n# then old\n{B64_OLD}\n", [NEW, OLD]),
    ("crlf", f"{B64_OLD}\r\n{B64_NEW}\r\n", [OLD, NEW]),
    ("exactly-16-bytes", base64.b64encode(b"k" * 16).decode(), [b"k" * 16]),
]


@pytest.mark.parametrize(("text", "keys"), [(t, k) for _, t, k in PARSE_OK], ids=[i for i, _, _ in PARSE_OK])
def test_parse_keys(text: str, keys: list[bytes]) -> None:
    assert parse_keys(text) == keys


PARSE_BAD = [
    ("empty", "", "no keys"),
    ("only-comments", "# nothing\n\n", "no keys"),
    ("not-base64", f"{B64_OLD}\n# c\nnot base64!!\n", "line 3: not valid base64"),
    ("bad-padding", B64_OLD.rstrip("="), "line 1: not valid base64"),
    ("non-ascii", "ключ" * 8, "line 1: not valid base64"),
    ("too-short", f"\n{B64_SHORT}", "line 2: key is 15 bytes"),
]


@pytest.mark.parametrize(("text", "error"), [(t, e) for _, t, e in PARSE_BAD], ids=[i for i, _, _ in PARSE_BAD])
def test_parse_keys_refuses(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=error) as caught:
        parse_keys(text)
    message = str(caught.value)
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            assert line.strip() not in message
    error_context = caught.value.__context__
    assert error_context is None or caught.value.__suppress_context__  # the decoder's error is not chained


# --- the replay cache under wall-clock steps and overflow (issue 15) ---------------------


def _signed(signer: Signer, body: bytes = BODY) -> Headers:
    return signer.sign_request("POST", PATH, body)


def _step_wall(clock: FakeClock, seconds: float) -> None:
    """Step only the wall clock (an NTP step, a VM resumed); the monotonic clock goes on."""
    clock.wall_offset += seconds


def test_replay_after_a_wall_step_back_is_refused() -> None:
    """A nonce is kept while its timestamp can still be fresh by the wall clock, not only
    for its monotonic lifetime: after a 300 s step back the old message is fresh again."""
    clock = FakeClock()
    signer, verifier = make(clock=clock)
    captured = _signed(signer)
    assert verifier.verify_request("POST", PATH, captured, BODY) == ok()
    clock.advance(300.0)
    _step_wall(clock, -300.0)  # the wall reads what it read when the message was captured
    assert verifier.verify_request("POST", PATH, _signed(signer, b"x"), b"x") == ok()  # purge runs
    assert not verifier.verify_request("POST", PATH, captured, BODY).ok


def test_replay_after_a_step_forward_then_back_is_refused() -> None:
    """Forward 300 s (the nonce expires and its timestamp looks old), then back 340 s:
    the message is fresh by the wall again, and the floor left by the forgotten nonce refuses it."""
    clock = FakeClock()
    signer, verifier = make(clock=clock)
    captured = _signed(signer)
    assert verifier.verify_request("POST", PATH, captured, BODY) == ok()
    clock.advance(1.0)
    _step_wall(clock, +300.0)
    clock.advance(2 * MAX_SKEW_S + 1)
    assert verifier.verify_request("POST", PATH, _signed(signer, b"x"), b"x") == ok()  # purge runs
    assert verifier.cached_nonces == 1  # the captured nonce was forgotten
    _step_wall(clock, -340.0)  # wall = captured timestamp + 22 s: fresh by the window alone
    assert verifier.verify_request("POST", PATH, captured, BODY) == refused("stale")


@pytest.mark.parametrize("step", [-300.0, +300.0])
def test_a_cluster_wide_wall_step_leaves_fresh_traffic_accepted(step: float) -> None:
    """Signer and verifier share the clock: both step; new messages go on being accepted
    and no old one is accepted again."""
    clock = FakeClock()
    signer, verifier = make(clock=clock)
    old = [_signed(signer, str(i).encode()) for i in range(5)]
    for i, h in enumerate(old):
        assert verifier.verify_request("POST", PATH, h, str(i).encode()) == ok()
        clock.advance(1.0)
    _step_wall(clock, step)
    for i in range(200):  # 200 s of traffic after the step, one message a second
        body = f"after-{i}".encode()
        assert verifier.verify_request("POST", PATH, _signed(signer, body), body) == ok(), i
        if i % 50 == 0:
            for j, h in enumerate(old):
                assert not verifier.verify_request("POST", PATH, h, str(j).encode()).ok, (i, j)
        clock.advance(1.0)


def test_replay_of_an_evicted_nonce_is_refused() -> None:
    """Past max_nonces the oldest nonce is evicted while its message is still fresh: the
    cache's floor refuses anything at or below an evicted timestamp."""
    clock = FakeClock()
    signer, verifier = make(clock=clock, max_nonces=3)
    sent = []
    for i in range(4):
        body = str(i).encode()
        h = _signed(signer, body)
        assert verifier.verify_request("POST", PATH, h, body) == ok()
        sent.append((h, body))
        clock.advance(0.5)
    assert verifier.evictions == 1
    first, body = sent[0]
    assert verifier.verify_request("POST", PATH, first, body) == refused("stale")
    for h, b in sent[1:]:
        assert verifier.verify_request("POST", PATH, h, b) == refused("replay")
    fresh = _signed(signer, b"new")
    assert verifier.verify_request("POST", PATH, fresh, b"new") == ok()


def test_evicted_nonces_with_one_timestamp_stay_refused() -> None:
    """Many messages in one millisecond overflow the cache: each evicted one stays refused,
    the others at that timestamp are still accepted."""
    signer, verifier = make(max_nonces=10)
    sent = []
    for i in range(50):
        body = str(i).encode()
        h = _signed(signer, body)
        assert verifier.verify_request("POST", PATH, h, body) == ok(), i
        sent.append((h, body))
    assert verifier.evictions == 40
    for h, b in sent:
        assert not verifier.verify_request("POST", PATH, h, b).ok


@pytest.mark.parametrize("step", [-300.0, +300.0])
def test_nonce_kept_while_fresh_by_the_wall_or_by_its_monotonic_lifetime(step: float) -> None:
    clock = FakeClock()
    signer, verifier = make(clock=clock)
    h = _signed(signer)
    assert verifier.verify_request("POST", PATH, h, BODY) == ok()
    _step_wall(clock, step)
    for _ in range(20):  # never accepted again, whatever the wall says, over 400 s
        clock.advance(20.0)
        _step_wall(clock, -20.0 if step < 0 else 0.0)
        verifier.verify_request("POST", PATH, _signed(signer, b"tick"), b"tick")
        assert not verifier.verify_request("POST", PATH, h, BODY).ok


def test_precheck_refuses_before_the_body() -> None:
    clock = FakeClock()
    signer, verifier = make(clock=clock)
    h = _signed(signer)
    assert verifier.precheck_request(h) == Verdict(True)
    assert verifier.precheck_request({}) == refused("missing_headers")
    assert verifier.precheck_request({**h, SENDER: "a\x00b"}) == refused("malformed_headers")
    assert verifier.precheck_request({**h, SIGNATURE: "zz"}) == refused("malformed_headers")
    clock.advance(MAX_SKEW_S + 1)
    assert verifier.precheck_request(h) == refused("stale")
    assert verifier.cached_nonces == 0
