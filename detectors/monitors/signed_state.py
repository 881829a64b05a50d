"""Signed state records: an HMAC-SHA-256 over a record's key and value, checked before the value is trusted.

The monitor state is pickled (:mod:`detectors.monitors.checkpoint`), and unpickling runs whatever code the
bytes name.  Its changelog is a Kafka topic, so anyone allowed to produce to it could otherwise run code in
the worker.  Each record is therefore written as ``tag + HMAC(key, domain + record key + payload) + payload``
and the payload is handed on only once the MAC matches (compared in constant time): a record from anyone
without the key is refused as bytes, never parsed.

The record's key is under the MAC too, so a valid record cannot be replayed under another key (one model's
state installed as another's).  What the MAC cannot stop is a replay of an *older* valid record under its own
key by someone who can write the topic: that restores stale, but genuine, state.

>>> signer = StateSigner(b"k" * 32)
>>> blob = signer.sign(b"speech-asr", b"payload")
>>> signer.verify(b"speech-asr", blob)
b'payload'
>>> signer.verify(b"fraud", blob).kind
'bad_signature'
>>> signer.verify(b"speech-asr", b"DLC1" + b"old unsigned pickle").kind
'unsigned'
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Literal

__all__ = ["MIN_KEY_BYTES", "StateRejection", "StateRejectionKind", "StateSigner"]

StateRejectionKind = Literal["unsigned", "bad_signature", "undecodable"]

# 128 bits: below that a key could be guessed; the generated keys are 256 bits.
MIN_KEY_BYTES = 16
_TAG = b"DLS1"
_MAC_BYTES = hashlib.sha256().digest_size
# Binds a MAC to this use of the key, should the same secret ever sign something else.
_DOMAIN = b"driftline-state-record-v1\x00"


@dataclass(frozen=True)
class StateRejection:
    """Why a state record was refused: a short kind for metrics and a reason for people."""

    kind: StateRejectionKind
    reason: str


class StateSigner:
    """Signs state records with a secret key and verifies them before anything reads their payload.

    Parameters
    ----------
    key
        The secret, at least :data:`MIN_KEY_BYTES` bytes; every worker that may take over another's
        partitions needs the same one.
    """

    def __init__(self, key: bytes) -> None:
        if len(key) < MIN_KEY_BYTES:
            raise ValueError(f"The state key must be at least {MIN_KEY_BYTES} bytes.")
        self._key = key

    def __repr__(self) -> str:
        return "StateSigner(key=<hidden>)"

    def _mac(self, record_key: bytes, payload: bytes) -> bytes:
        # The key's length goes first, so that (key, payload) pairs can never run into one another.
        message = _DOMAIN + len(record_key).to_bytes(4, "big") + record_key + payload
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def sign(self, record_key: bytes, payload: bytes) -> bytes:
        """The record value to write: the format tag, the MAC, then ``payload``."""
        return _TAG + self._mac(record_key, payload) + payload

    def verify(self, record_key: bytes | None, blob: bytes | None) -> bytes | StateRejection:
        """The payload of a record whose MAC matches, or why it was refused; the payload is not looked into."""
        if blob is None or record_key is None:
            return StateRejection("undecodable", "record without a key or a value")
        if not blob.startswith(_TAG):
            return StateRejection("unsigned", "record not in the signed format (written without a state key, "
                                              "by an older version, or by someone else)")
        mac, payload = blob[len(_TAG):len(_TAG) + _MAC_BYTES], blob[len(_TAG) + _MAC_BYTES:]
        if len(mac) != _MAC_BYTES or not hmac.compare_digest(mac, self._mac(record_key, payload)):
            return StateRejection("bad_signature", "signature does not match (another state key, or forged)")
        return payload
