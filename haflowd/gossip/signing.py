"""HMAC-SHA256 signatures on peer-to-peer HTTP messages: pure, no sockets, time from a Clock.

Every gossip request and answer carries four headers (sender, timestamp, nonce,
signature; answers add the nonce of the request they answer). The signature covers
:func:`canonical`: method, path, timestamp, nonce, sender, request nonce and the body's
digest, so nothing a peer acts on can be changed in flight.

- A timestamp more than ``max_skew`` from our wall clock is ``stale``: old traffic
  cannot be replayed once the window has passed.
- Within the window a nonce may be used once (``replay``). Only nonces of correctly
  signed messages are remembered, so forged traffic cannot fill the cache and push
  real nonces out. A nonce is forgotten only once its monotonic lifetime is over *and*
  its timestamp is behind the window by the current wall clock; every forgotten
  (expired or evicted) timestamp raises the cache's floor, and a timestamp at or below
  the floor is ``stale``: a replay stays refused across wall-clock steps either way and
  across cache overflow.
- :meth:`Verifier.precheck_request` checks everything that needs no body (headers
  present and well formed, freshness, the floor), so a listener can refuse before it
  reads a byte of the body.
- The first key of a :class:`Keyring` signs and every key verifies: keys rotate with
  no moment when two nodes cannot understand each other.
- An answer is signed over the request's nonce, so an old answer cannot stand in for
  the answer to a new request.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import re
import secrets
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from haflowd.clock import Clock

SENDER = "X-Haflowd-Sender"
TIMESTAMP = "X-Haflowd-Timestamp"
NONCE = "X-Haflowd-Nonce"
SIGNATURE = "X-Haflowd-Signature"
REQUEST_NONCE = "X-Haflowd-Request-Nonce"
"""Only on answers: the nonce of the request being answered."""

MAX_SKEW_S = 30.0
MIN_KEY_BYTES = 16
MAX_SENDER_CHARS = 128
RESPONSE_METHOD = "RESPONSE"
"""The method an answer is signed with; no request may use it, so the two never mix."""

Reason = Literal["missing_headers", "bad_signature", "stale", "replay", "malformed_headers"]
REASONS: tuple[Reason, ...] = ("missing_headers", "malformed_headers", "stale", "bad_signature", "replay")
"""Every rejection reason, in the order they are checked: for pre-creating metric labels."""

_NONCE_RE = re.compile(r"[0-9a-fA-F]{32}")
_SIGNATURE_RE = re.compile(r"[0-9a-fA-F]{64}")
_TIMESTAMP_RE = re.compile(r"-?[0-9]{1,15}(\.[0-9]{1,9})?")
_REQUEST_HEADERS = (SENDER, TIMESTAMP, NONCE, SIGNATURE)
_RESPONSE_HEADERS = (*_REQUEST_HEADERS, REQUEST_NONCE)


class Keyring:
    """The cluster's shared keys: the first signs, all verify. Never shows key material."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        checked: list[bytes] = []
        for i, key in enumerate(keys):
            if not isinstance(key, bytes | bytearray):
                raise TypeError(f"key {i + 1} is {type(key).__name__}, expected bytes")
            if len(key) < MIN_KEY_BYTES:
                raise ValueError(f"key {i + 1} is {len(key)} bytes, need at least {MIN_KEY_BYTES}")
            checked.append(bytes(key))
        if not checked:
            raise ValueError("a keyring needs at least one key")
        self._keys = tuple(checked)

    @property
    def signing_key(self) -> bytes:
        return self._keys[0]

    @property
    def keys(self) -> tuple[bytes, ...]:
        return self._keys

    def __repr__(self) -> str:
        return f"Keyring(<{len(self._keys)} key{'s' if len(self._keys) != 1 else ''}>)"

    __str__ = __repr__


def canonical(
    method: str,
    path: str,
    timestamp: str,
    nonce: str,
    sender: str,
    body: bytes,
    request_nonce: str = "",
) -> bytes:
    """The exact bytes a signature covers; a field with a line break is refused so no two
    different messages can produce the same bytes."""
    fields = (method.upper(), path, timestamp, nonce, sender, request_nonce)
    if any("\n" in f or "\r" in f for f in fields):
        raise ValueError("a signed field may not contain a line break")
    return "\n".join((*fields, hashlib.sha256(body).hexdigest())).encode("utf-8", "surrogateescape")


def _mac(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def _valid_sender(sender: str) -> bool:
    return 0 < len(sender) <= MAX_SENDER_CHARS and sender.isprintable()


class Signer:
    """Adds signature headers to what this node sends."""

    def __init__(self, keyring: Keyring, sender: str, clock: Clock) -> None:
        if not _valid_sender(sender):
            raise ValueError(f"sender must be 1 to {MAX_SENDER_CHARS} printable characters")
        self._keyring = keyring
        self._sender = sender
        self._clock = clock

    @property
    def sender(self) -> str:
        return self._sender

    def set_keyring(self, keyring: Keyring) -> None:
        """Switch keys on reload; the next message is signed with the new first key."""
        self._keyring = keyring

    def sign_request(self, method: str, path: str, body: bytes) -> dict[str, str]:
        """Headers for a request; ``path`` includes the query string exactly as it is sent."""
        if method.upper() == RESPONSE_METHOD:
            raise ValueError(f"{RESPONSE_METHOD!r} is reserved for answers")
        return self._sign(method, path, body, "")

    def sign_response(self, path: str, request_nonce: str, body: bytes) -> dict[str, str]:
        """Headers for the answer to the request that carried ``request_nonce``."""
        if not _NONCE_RE.fullmatch(request_nonce):
            raise ValueError("request_nonce must be 32 hex characters")
        headers = self._sign(RESPONSE_METHOD, path, body, request_nonce)
        headers[REQUEST_NONCE] = request_nonce
        return headers

    def _sign(self, method: str, path: str, body: bytes, request_nonce: str) -> dict[str, str]:
        timestamp = f"{self._clock.wall():.3f}"
        nonce = secrets.token_hex(16)
        message = canonical(method, path, timestamp, nonce, self._sender, body, request_nonce)
        return {
            SENDER: self._sender,
            TIMESTAMP: timestamp,
            NONCE: nonce,
            SIGNATURE: _mac(self._keyring.signing_key, message).hex(),
        }

    def __repr__(self) -> str:
        return f"Signer(sender={self._sender!r}, keyring={self._keyring!r})"


@dataclass(frozen=True)
class Verdict:
    """Whether a message may be acted on; ``sender`` is set only when it is authenticated."""

    ok: bool
    reason: Reason | None = None
    sender: str | None = None


class _Missing(Exception):
    pass


class _Malformed(Exception):
    pass


def _lookup(headers: Mapping[str, str], names: Iterable[str]) -> dict[str, str]:
    """The named headers, found case-insensitively; a name given twice is malformed, since
    two parties could each read a different one."""
    wanted = {n.lower(): n for n in names}
    found: dict[str, str] = {}
    for key, value in headers.items():
        name = wanted.get(key.lower())
        if name is None:
            continue
        if name in found:
            raise _Malformed(name)
        found[name] = value
    if len(found) < len(wanted):
        raise _Missing
    return found


MAX_AT_FLOOR = 65_536
"""Forgotten nonces remembered individually at the floor's own timestamp; past this many
(in one millisecond) the floor's timestamp itself is closed."""


@dataclass(slots=True)
class _Entry:
    expires: float  # monotonic
    timestamp: float  # the message's own, as signed


class Verifier:
    """Checks signatures, freshness and nonces of what peers send.

    The nonce cache keeps each nonce for at least ``2 * max_skew`` seconds (monotonic),
    the longest a message stays fresh on a steady clock, and beyond that for as long as
    its timestamp is not yet behind the window by the wall clock (a wall step back makes
    old timestamps fresh again). Beyond ``max_nonces`` the oldest entry is evicted and
    counted in ``evictions``. Whatever is forgotten raises ``floor``: a timestamp below
    it, or equal to it and forgotten there, is refused as ``stale``.
    """

    def __init__(
        self,
        keyring: Keyring,
        clock: Clock,
        max_skew: float = MAX_SKEW_S,
        max_nonces: int = 200_000,
    ) -> None:
        if not (math.isfinite(max_skew) and max_skew > 0):
            raise ValueError("max_skew must be a positive number of seconds")
        if max_nonces < 1:
            raise ValueError("max_nonces must be at least 1")
        self._keyring = keyring
        self._clock = clock
        self.max_skew = max_skew
        self.max_nonces = max_nonces
        self.evictions = 0
        self.floor = -math.inf
        self._at_floor: set[str] = set()  # forgotten nonces whose timestamp is exactly ``floor``
        self._floor_closed = False  # too many at ``floor``: the timestamp itself is refused
        self._nonces: OrderedDict[str, _Entry] = OrderedDict()  # oldest first

    def set_keyring(self, keyring: Keyring) -> None:
        """Switch keys on reload; the nonce cache is kept so a reload opens no replay window."""
        self._keyring = keyring

    @property
    def cached_nonces(self) -> int:
        """How many nonces are remembered now (expired ones may linger until the next message)."""
        return len(self._nonces)

    def precheck_request(self, headers: Mapping[str, str]) -> Verdict:
        """What can be refused before the body is read: missing or malformed headers, a
        stale timestamp. ``ok`` here is no authentication (``sender`` stays None)."""
        checked = self._check_headers(headers, _REQUEST_HEADERS)
        return checked if isinstance(checked, Verdict) else Verdict(True)

    def verify_request(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> Verdict:
        """Whether a request may be acted on; ``path`` includes the query string as received."""
        return self._verify(method, path, headers, body, _REQUEST_HEADERS, "")

    def verify_response(self, path: str, request_nonce: str, headers: Mapping[str, str], body: bytes) -> Verdict:
        """Whether an answer is the one to our request that carried ``request_nonce``."""
        return self._verify(RESPONSE_METHOD, path, headers, body, _RESPONSE_HEADERS, request_nonce)

    def _check_headers(self, headers: Mapping[str, str], names: tuple[str, ...]) -> Verdict | dict[str, str]:
        try:
            h = _lookup(headers, names)
        except _Missing:
            return Verdict(False, "missing_headers")
        except _Malformed:
            return Verdict(False, "malformed_headers")
        if not (
            _valid_sender(h[SENDER])
            and _TIMESTAMP_RE.fullmatch(h[TIMESTAMP])
            and _NONCE_RE.fullmatch(h[NONCE])
            and _SIGNATURE_RE.fullmatch(h[SIGNATURE])
            and (REQUEST_NONCE not in h or _NONCE_RE.fullmatch(h[REQUEST_NONCE]))
        ):
            return Verdict(False, "malformed_headers")
        if not self._fresh(float(h[TIMESTAMP]), h[NONCE]):  # the pattern keeps it finite
            return Verdict(False, "stale")
        return h

    def _fresh(self, timestamp: float, nonce: str) -> bool:
        if abs(timestamp - self._clock.wall()) > self.max_skew:
            return False
        if timestamp < self.floor:
            return False
        return not (timestamp == self.floor and (self._floor_closed or nonce in self._at_floor))

    def _verify(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str],
        body: bytes,
        names: tuple[str, ...],
        request_nonce: str,
    ) -> Verdict:
        h = self._check_headers(headers, names)
        if isinstance(h, Verdict):
            return h
        sender, timestamp, nonce, signature = h[SENDER], h[TIMESTAMP], h[NONCE], h[SIGNATURE]
        try:
            message = canonical(method, path, timestamp, nonce, sender, body, request_nonce)
        except ValueError:
            return Verdict(False, "malformed_headers")
        if not self._signed_by_ring(message, bytes.fromhex(signature)):
            return Verdict(False, "bad_signature")
        if not self._first_use(nonce, float(timestamp)):
            return Verdict(False, "replay")
        return Verdict(True, None, sender)

    def _signed_by_ring(self, message: bytes, signature: bytes) -> bool:
        matched = False
        for key in self._keyring.keys:  # no early exit: the time taken does not say which key matched
            matched |= hmac.compare_digest(_mac(key, message), signature)
        return matched

    def _first_use(self, nonce: str, timestamp: float) -> bool:
        """Record ``nonce``; False if it was already recorded and has not been forgotten."""
        now = self._clock.monotonic()
        oldest_fresh = self._clock.wall() - self.max_skew
        nonces = self._nonces
        while nonces:  # forget from the oldest on; stop at the first that may still be replayed
            oldest, entry = next(iter(nonces.items()))
            if entry.expires > now or entry.timestamp >= oldest_fresh:
                break
            del nonces[oldest]
            self._forget(oldest, entry.timestamp)
        if nonce in nonces:
            return False
        while len(nonces) >= self.max_nonces:
            evicted, entry = nonces.popitem(last=False)
            self.evictions += 1
            self._forget(evicted, entry.timestamp)
        nonces[nonce] = _Entry(now + 2 * self.max_skew, timestamp)
        return True

    def _forget(self, nonce: str, timestamp: float) -> None:
        if timestamp > self.floor:
            self.floor = timestamp
            self._at_floor = {nonce}
            self._floor_closed = False
        elif timestamp == self.floor and not self._floor_closed:
            if len(self._at_floor) >= MAX_AT_FLOOR:
                self._floor_closed = True
                self._at_floor = set()
            else:
                self._at_floor.add(nonce)

    def __repr__(self) -> str:
        return (
            f"Verifier(keyring={self._keyring!r}, max_skew={self.max_skew:g}, "
            f"nonces={len(self._nonces)}/{self.max_nonces}, evictions={self.evictions})"
        )


def parse_keys(text: str) -> list[bytes]:
    """Keys from a key file: one base64 key per line, blank lines and ``#`` comments ignored.

    Errors name the line, never its content: the content is a secret.
    """
    keys: list[bytes] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            key = base64.b64decode(line, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"line {number}: not valid base64") from None
        if len(key) < MIN_KEY_BYTES:
            raise ValueError(f"line {number}: key is {len(key)} bytes, need at least {MIN_KEY_BYTES}")
        keys.append(key)
    if not keys:
        raise ValueError("no keys found")
    return keys
