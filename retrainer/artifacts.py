"""Artifact stores: where trained models are kept, addressed by URI and SHA-256."""

from __future__ import annotations

import hashlib
import hmac
import os
import pickle
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable
from urllib.parse import quote, urlparse
from urllib.request import url2pathname

from retrainer.exceptions import ArtifactError, ArtifactOutsideStore, ChecksumMismatch

__all__ = ["ArtifactStore", "LocalArtifactStore", "StoredArtifact", "sha256_hex", "verified_unpickle"]

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def sha256_hex(data: bytes) -> str:
    """The lowercase hex SHA-256 of ``data``.

    >>> sha256_hex(b"")[:16]
    'e3b0c44298fc1c14'
    """
    return hashlib.sha256(data).hexdigest()


def verified_unpickle(uri: str, sha256: str, read: Callable[[], bytes]) -> Any:
    """Unpickle the bytes ``read()`` returns, only once they hash to ``sha256`` (pickle runs code as it loads).

    Raises
    ------
    ArtifactError
        ``sha256`` is not a hex SHA-256 (nothing is read then), or the bytes do not unpickle.
    ChecksumMismatch
        The bytes do not hash to ``sha256``.

    >>> verified_unpickle("mem:x", sha256_hex(pickle.dumps(7)), lambda: pickle.dumps(7))
    7
    """
    if not isinstance(sha256, str) or not _SHA256.match(sha256):
        raise ArtifactError(uri, "refused to load: no valid sha256 to verify against")
    data = read()
    actual = sha256_hex(data)
    if not hmac.compare_digest(actual, sha256):
        raise ChecksumMismatch(uri, sha256, actual)
    try:
        return pickle.loads(data)
    except Exception as exc:
        raise ArtifactError(uri, f"cannot unpickle: {exc}") from exc


@dataclass(frozen=True)
class StoredArtifact:
    """Where an artifact was written and the digest to verify it with."""

    uri: str
    sha256: str


@runtime_checkable
class ArtifactStore(Protocol):
    """Keeps trained models; a local directory today, an object store or MLflow later.

    ``load`` must verify the digest before deserialising anything, and refuse
    any URI that is not its own.
    """

    def save(self, obj: Any, model: str, version: str) -> StoredArtifact:
        """Store ``obj`` as ``model``'s ``version`` and return its URI and SHA-256."""
        ...

    def load(self, uri: str, sha256: str) -> Any:
        """Return the object at ``uri`` after checking that its bytes hash to ``sha256``."""
        ...


def _segment(name: str) -> str:
    # Model names may contain "/" and ":"; quoting makes each name exactly one
    # path segment, so no name can climb out of the store.
    quoted = quote(name, safe="")
    if quoted in ("", ".", ".."):
        raise ArtifactError(name, "not usable as a file name")
    return quoted


class LocalArtifactStore:
    """Pickled models under one root directory, written atomically.

    Pickle runs code when it loads, so :meth:`load` reads the bytes, checks
    they are inside the root and hash to the digest the registry recorded,
    and only then unpickles them.

    Parameters
    ----------
    root_dir
        The store's directory; created if missing.

    Examples
    --------
    >>> import tempfile
    >>> store = LocalArtifactStore(tempfile.mkdtemp())
    >>> stored = store.save({"weights": [1, 2]}, model="asr", version="1")
    >>> stored.uri.endswith("/asr/1.pkl"), store.load(stored.uri, stored.sha256)
    (True, {'weights': [1, 2]})
    >>> store.load(stored.uri, "0" * 64)
    Traceback (most recent call last):
    ...
    retrainer.exceptions.ChecksumMismatch: file:///.../asr/1.pkl: refused to load: sha256 is ..., expected 0000...
    """

    def __init__(self, root_dir: str | os.PathLike[str]) -> None:
        root = Path(root_dir)
        root.mkdir(parents=True, exist_ok=True)
        self.root = root.resolve()

    def path_for(self, model: str, version: str) -> Path:
        """The file that holds ``model``'s ``version``."""
        return self.root / _segment(model) / f"{_segment(version)}.pkl"

    def save(self, obj: Any, model: str, version: str) -> StoredArtifact:
        """Pickle ``obj`` to ``path_for(model, version)`` atomically; return its URI and digest."""
        data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        path = self.path_for(model, version)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write-then-rename, so a crash never leaves a half-written artifact
        # under a name the registry might already point at.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".pkl")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return StoredArtifact(uri=path.as_uri(), sha256=sha256_hex(data))

    def _path_of(self, uri: str) -> Path:
        parsed = urlparse(uri)
        if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
            raise ArtifactOutsideStore(uri, str(self.root))
        # resolve() follows symlinks, so a link inside the root that points
        # elsewhere is judged by where it really leads.
        path = Path(url2pathname(parsed.path)).resolve()
        if not path.is_relative_to(self.root):
            raise ArtifactOutsideStore(uri, str(self.root))
        return path

    def load(self, uri: str, sha256: str) -> Any:
        """Unpickle the artifact at ``uri`` once its SHA-256 is verified.

        Raises
        ------
        ArtifactOutsideStore
            The URI is not a file inside this store's root.
        ChecksumMismatch
            The bytes do not hash to ``sha256``.
        ArtifactError
            The file is missing or unreadable, or ``sha256`` is malformed.
        """
        path = self._path_of(uri)

        def read() -> bytes:
            try:
                return path.read_bytes()
            except OSError as exc:
                raise ArtifactError(uri, f"cannot read: {exc.strerror or exc}") from exc

        return verified_unpickle(uri, sha256, read)

    def __repr__(self) -> str:
        return f"LocalArtifactStore({str(self.root)!r})"
