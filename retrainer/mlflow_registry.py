"""The model registry on MLflow: challengers as runs, versions as MLflow model versions, the ``champion`` alias.

Where everything goes
---------------------
* Each challenger (and each bootstrap champion) is an MLflow **run** in one
  experiment: params are the learner kind and its parameters, metrics are the
  champion's and challenger's holdout scores, tags carry the trigger id, the
  alert ids, the data window, the parent version and the library versions.
  The pickled river model is the run artifact ``model/model.pkl``; its SHA-256
  is recorded, and checked before any load.
* Registration makes an MLflow **model version** from that run.  Driftline's
  own records of the version (candidate, then promoted or rejected, later
  perhaps rolled_back) are tags of that model version,
  ``driftline.record.<seq>``, numbered per model, so reading them back in
  ``seq`` order gives exactly the journal the file registry keeps: the queries
  and the rollback rule of :class:`~retrainer.registry.VersionJournal` apply
  unchanged, and ``driftline models`` prints the same on both backends.
* Promotion and rollback move the ``champion`` **alias** (stages are
  deprecated); a rejected challenger's version and run get the tag
  ``driftline.rejected_reason``.

Truth in one place
------------------
The record tags are the truth; the alias and the models topic are projections
of it.  The retrainer writes MLflow first (the version is created with its
decision in one call, then the alias moves), and the topic after.  Why that
order: MLflow is what a restart can read back whole, by model and by the
``driftline.trigger_id`` tag, whereas the topic is compacted and only
announces; a crash after the MLflow write and before the topic write is
repaired on restart (:meth:`MlflowRegistry.reconcile` moves the alias to the
current version, the service republishes the topic from MLflow) and the
trigger, read again, is found handled by its tag, so it never makes a second
version.  The opposite order would announce versions that may never exist.

A version registered in MLflow outside Driftline and named champion with the
alias is *adopted* on reconcile: a promoted record is written for it with
``lineage["origin"] == "external"``, and the retrainer loads it if it is a
river model whose SHA-256 the version's ``sha256`` tag gives.
"""

from __future__ import annotations

import json
import logging
import pickle
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pydantic import ValidationError

from retrainer.artifacts import StoredArtifact, sha256_hex, verified_unpickle
from retrainer.exceptions import ArtifactError, RefusedModelName, RegistryError, RegistryUnavailable
from retrainer.registry import VersionJournal
from schemas.events import ModelVersion

__all__ = [
    "CHAMPION_ALIAS",
    "MlflowArtifactStore",
    "MlflowRegistry",
    "connect",
    "run_tags",
    "tracking_uri_problem",
]

log = logging.getLogger(__name__)

CHAMPION_ALIAS = "champion"
RECORD_TAG = "driftline.record."
TRIGGER_TAG = "driftline.trigger_id"
SHA256_TAG = "driftline.sha256"
MANAGED_TAG = "driftline.managed"
REJECTED_TAG = "driftline.rejected_reason"
# What a person sets on a model version registered outside Driftline so that Driftline may load it.
EXTERNAL_SHA256_TAGS = ("sha256", SHA256_TAG)
ARTIFACT_PATH = "model"
ARTIFACT_FILE = "model.pkl"
# MLflow's limit on a model-version tag value (its sqlalchemy store's column); a longer record drops its lineage,
# which the run's tags and params carry anyway.
_TAG_VALUE_LIMIT = 5000
# Errors that mean "the server did not answer or cannot now", as opposed to a refusal of the request.
_UNAVAILABLE_CODES = {"INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED", "ENDPOINT_NOT_FOUND"}
_OWN_SCHEMES = ("runs", "models", "mlflow-artifacts")


def connect(tracking_uri: str) -> Any:
    """An ``MlflowClient`` for the tracking server (also its model registry), made the process default.

    The process default matters because MLflow resolves ``mlflow-artifacts:`` and ``models:`` URIs through it.

    Raises
    ------
    RegistryError
        mlflow is not installed (``pip install 'driftline[mlflow]'``).
    """
    try:
        import mlflow
        from mlflow import MlflowClient
    except ImportError as exc:
        raise RegistryError("DRIFTLINE_REGISTRY=mlflow needs the mlflow client: pip install 'driftline[mlflow]'") from exc
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


@contextmanager
def _calls(location: str, what: str) -> Iterator[None]:
    """Turn MLflow's and the HTTP stack's errors into ours: unavailable (retry later) or refused."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as exc:
        if exc.error_code in _UNAVAILABLE_CODES:
            raise RegistryUnavailable(location, f"{what}: {exc.message}") from exc
        raise RegistryError(f"MLflow at {location} refused to {what}: {exc.message}") from exc
    except OSError as exc:  # requests' connection errors are OSErrors
        raise RegistryUnavailable(location, f"{what}: {exc}") from exc


def run_tags(record: ModelVersion) -> dict[str, str]:
    """The lineage tags of a version's run: trigger, alerts, data window, parent, libraries, decision.

    >>> from datetime import datetime, timezone
    >>> t = datetime(2026, 1, 1, tzinfo=timezone.utc)
    >>> tags = run_tags(ModelVersion(model="asr", version="2", status="rejected", created_at=t, trigger_id="t-1",
    ...                              alert_ids=["a-1", "a-2"], parent_version="1", lineage={"river": "0.21"}))
    >>> tags["driftline.trigger_id"], tags["driftline.alert_ids"], tags["driftline.lib.river"], tags["driftline.status"]
    ('t-1', 'a-1,a-2', '0.21', 'rejected')
    """
    tags = {
        "driftline.model": record.model,
        "driftline.version": record.version,
        "driftline.status": record.status,
        TRIGGER_TAG: record.trigger_id or "",
        "driftline.alert_ids": ",".join(record.alert_ids),
        "driftline.parent_version": record.parent_version or "",
        "driftline.data_from": record.data_from.isoformat() if record.data_from else "",
        "driftline.data_to": record.data_to.isoformat() if record.data_to else "",
        "driftline.n_examples": str(record.n_examples),
        "driftline.reason": record.reason[:_TAG_VALUE_LIMIT],
    }
    for name, value in record.lineage.items():
        if name != "learner":
            tags[f"driftline.lib.{name}"] = value
    if record.status == "rejected":
        tags[REJECTED_TAG] = record.reason[:_TAG_VALUE_LIMIT]
    return {k: v for k, v in tags.items() if v}


def _run_params(record: ModelVersion) -> dict[str, str]:
    """The learner kind and its parameters, flat, from the version's lineage."""
    raw = record.lineage.get("learner")
    if not raw:
        return {}
    try:
        spec = json.loads(raw)
    except ValueError:  # cut at lineage_of's 1024 characters
        return {"learner": raw}
    params = {f"learner.{k}": json.dumps(v) if not isinstance(v, str) else v for k, v in spec.items() if k != "params"}
    params.update({f"learner.params.{k}": json.dumps(v) for k, v in (spec.get("params") or {}).items()})
    return params


def _record_tag(record: ModelVersion) -> str:
    value = record.model_dump_json()
    if len(value) > _TAG_VALUE_LIMIT:
        value = record.model_copy(update={"lineage": {}}).model_dump_json()
    if len(value) > _TAG_VALUE_LIMIT:
        value = record.model_copy(update={"lineage": {}, "reason": record.reason[:1000]}).model_dump_json()
    return value


def _run_id_of(uri: str | None) -> str | None:
    if uri and uri.startswith("runs:/"):
        return uri[len("runs:/"):].split("/", 1)[0] or None
    return None


class MlflowArtifactStore:
    """Pickled models as MLflow run artifacts: one run per saved model, verified by SHA-256 before loading.

    ``save`` starts the run that :meth:`MlflowRegistry.record` then fills with
    params, metrics and tags.  ``load`` downloads the bytes, checks their digest
    and only then unpickles them; a URI that does not resolve through the
    tracking server (``runs:/``, ``models:/``, ``mlflow-artifacts:/``) is refused.

    Parameters
    ----------
    client
        An ``MlflowClient`` (see :func:`connect`).
    tracking_uri
        The server's URI, for messages.
    experiment
        The experiment the runs go in; created if missing.
    """

    def __init__(self, client: Any, tracking_uri: str, experiment: str = "driftline") -> None:
        self.client = client
        self.location = tracking_uri
        self.experiment = experiment
        self._experiment_id: str | None = None

    def _experiment(self) -> str:
        if self._experiment_id is None:
            with _calls(self.location, f"find the experiment {self.experiment!r}"):
                found = self.client.get_experiment_by_name(self.experiment)
                self._experiment_id = found.experiment_id if found is not None else self.client.create_experiment(self.experiment)
        return self._experiment_id

    def save(self, obj: Any, model: str, version: str) -> StoredArtifact:
        """Pickle ``obj`` into a new run's ``model/model.pkl``; return ``runs:/<run id>/model/model.pkl`` and its digest."""
        data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        with _calls(self.location, f"store {model} version {version}"):
            run = self.client.create_run(self._experiment(), run_name=f"{model}-v{version}",
                                         tags={"driftline.model": model, SHA256_TAG: sha256_hex(data)})
            run_id = run.info.run_id
            with tempfile.TemporaryDirectory(prefix="driftline-artifact-") as tmp:
                path = Path(tmp) / ARTIFACT_FILE
                path.write_bytes(data)
                self.client.log_artifact(run_id, str(path), ARTIFACT_PATH)
        return StoredArtifact(uri=f"runs:/{run_id}/{ARTIFACT_PATH}/{ARTIFACT_FILE}", sha256=sha256_hex(data))

    def fetch(self, uri: str) -> bytes:
        """The bytes of the artifact at ``uri`` (a directory's ``model.pkl``), unverified: never unpickle them as they are."""
        import mlflow.artifacts

        if urlparse(uri).scheme not in _OWN_SCHEMES:
            raise ArtifactError(uri, f"refused to load: not an artifact of the tracking server {self.location}")
        with tempfile.TemporaryDirectory(prefix="driftline-download-") as tmp:
            with _calls(self.location, f"download {uri}"):
                local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp, tracking_uri=self.location))
            if local.is_dir():
                local = local / ARTIFACT_FILE
            try:
                return local.read_bytes()
            except OSError as exc:
                raise ArtifactError(uri, f"cannot read: {exc.strerror or exc} (a model Driftline loads is one {ARTIFACT_FILE})") from exc

    def load(self, uri: str, sha256: str) -> Any:
        """Unpickle the artifact at ``uri`` once its bytes hash to ``sha256``.

        Raises
        ------
        ArtifactError
            A URI of another store, a missing file, a malformed or missing digest.
        ChecksumMismatch
            The bytes do not hash to ``sha256``.
        RegistryUnavailable
            The tracking server did not answer.
        """
        return verified_unpickle(uri, sha256, lambda: self.fetch(uri))

    def __repr__(self) -> str:
        return f"MlflowArtifactStore({self.location!r}, experiment={self.experiment!r})"


class MlflowRegistry(VersionJournal):
    """Driftline's model registry kept in an MLflow tracking server's model registry.

    Parameters
    ----------
    client
        An ``MlflowClient`` (see :func:`connect`).
    tracking_uri
        The server's URI (``location``, for messages).
    models
        The models this process cares about (the configured learners): only
        these are read, even before Driftline has tagged them.  Without any,
        every registered model tagged as Driftline's is read (the CLI's list).
    """

    remote = True

    def __init__(self, client: Any, tracking_uri: str, models: Iterable[str] = ()) -> None:
        super().__init__()
        self.client = client
        self.location = tracking_uri
        self.watched = set(models)
        self._seq: dict[str, int] = {}
        self._by_trigger: dict[str, tuple[str, str]] = {}
        self._alias: dict[str, str | None] = {}
        self._external: dict[str, dict[str, Any]] = {}
        self.refresh()

    # -- reading -------------------------------------------------------------

    def refresh(self) -> None:
        """Read every Driftline record of the watched models (or of every model tagged as Driftline's) back from MLflow."""
        names = set(self.watched)
        if not names:
            with _calls(self.location, "list registered models"):
                names = {m.name for m in self._all(self.client.search_registered_models, f"tags.`{MANAGED_TAG}` = 'true'")}
        records: dict[str, list[ModelVersion]] = {}
        latest: dict[tuple[str, str], ModelVersion] = {}
        handled: set[str] = set()
        seq: dict[str, int] = {}
        by_trigger: dict[str, tuple[str, str]] = {}
        alias: dict[str, str | None] = {}
        external: dict[str, dict[str, Any]] = {}
        for name in sorted(names):
            numbered: list[tuple[int, ModelVersion]] = []
            versions, alias[name] = self._versions(name)
            external[name] = {}
            for mv in versions:
                own = [(int(k[len(RECORD_TAG):]), v) for k, v in mv.tags.items() if k.startswith(RECORD_TAG)]
                if not own:
                    external[name][mv.version] = mv
                for number, value in own:
                    numbered.append((number, self._parse(name, mv.version, value)))
                if mv.tags.get(TRIGGER_TAG):
                    handled.add(mv.tags[TRIGGER_TAG])
                    by_trigger[mv.tags[TRIGGER_TAG]] = (name, mv.version)
            numbered.sort(key=lambda pair: pair[0])
            seq[name] = numbered[-1][0] if numbered else 0
            for _, record in numbered:
                records.setdefault(name, []).append(record)
                latest[(name, record.version)] = record
        self._records, self._latest, self._handled = records, latest, handled
        self._seq, self._by_trigger, self._alias, self._external = seq, by_trigger, alias, external

    def _versions(self, name: str) -> tuple[list[Any], str | None]:
        """Every version of ``name`` and where its champion alias points (search results do not carry aliases)."""
        from mlflow.exceptions import MlflowException

        try:
            with _calls(self.location, f"list the versions of {name!r}"):
                aliases = self.client.get_registered_model(name).aliases or {}
                versions = self._all(self.client.search_model_versions, f"name = '{_quoted(name)}'")
        except RegistryError as exc:
            if isinstance(exc.__cause__, MlflowException) and exc.__cause__.error_code == "RESOURCE_DOES_NOT_EXIST":
                return [], None
            raise
        champion = aliases.get(CHAMPION_ALIAS)
        return versions, str(champion) if champion is not None else None

    @staticmethod
    def _all(search: Any, filter_string: str) -> list[Any]:
        found, token = [], None
        while True:
            page = search(filter_string=filter_string, max_results=1000, page_token=token)
            found.extend(page)
            token = getattr(page, "token", None)
            if not token:
                return found

    def _parse(self, model: str, version: str, value: str) -> ModelVersion:
        try:
            return ModelVersion.model_validate_json(value)
        except ValidationError as exc:
            raise RegistryError(f"MLflow at {self.location}: {model} version {version} has a corrupt Driftline record: {exc}") from exc

    def alias_version(self, model: str) -> str | None:
        """The version the ``champion`` alias points at, as of the last refresh."""
        return self._alias.get(model)

    def champion_record(self, model: str) -> ModelVersion | None:
        """What the ``champion`` alias points at now, as a promoted record (asks the server; for serving apps)."""
        from mlflow.exceptions import MlflowException

        try:
            with _calls(self.location, f"read the {CHAMPION_ALIAS} alias of {model!r}"):
                mv = self.client.get_model_version_by_alias(model, CHAMPION_ALIAS)
        except RegistryError as exc:
            if isinstance(exc.__cause__, MlflowException) and exc.__cause__.error_code in ("INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST"):
                return None  # no alias (or no model) yet
            raise
        own = sorted((int(k[len(RECORD_TAG):]), v) for k, v in mv.tags.items() if k.startswith(RECORD_TAG))
        if own:
            return self._parse(model, mv.version, own[-1][1]).model_copy(update={"status": "promoted"})
        return self._external_record(model, mv, reason="named champion in MLflow outside Driftline")

    def _external_record(self, model: str, mv: Any, reason: str) -> ModelVersion:
        sha256 = next((mv.tags[t] for t in EXTERNAL_SHA256_TAGS if mv.tags.get(t)), None)
        created = datetime.fromtimestamp((mv.creation_timestamp or 0) / 1000, tz=timezone.utc)
        return ModelVersion(model=model, version=str(mv.version), status="promoted", created_at=created,
                            artifact_uri=mv.source or None, sha256=sha256, reason=reason,
                            lineage={"origin": "external", "mlflow_run_id": mv.run_id or ""})

    # -- writing -------------------------------------------------------------

    def ensure_model(self, model: str) -> None:
        """Make ``model`` a registered model tagged as Driftline's (idempotent).

        Raises
        ------
        RefusedModelName
            MLflow refuses the name (e.g. it contains ``/`` or ``:``).
        """
        from mlflow.exceptions import MlflowException

        try:
            with _calls(self.location, f"register the model {model!r}"):
                try:
                    self.client.create_registered_model(model, tags={MANAGED_TAG: "true"})
                except MlflowException as exc:
                    if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                        raise
                    self.client.set_registered_model_tag(model, MANAGED_TAG, "true")
        except RegistryError as exc:
            if isinstance(exc, RegistryUnavailable):
                raise
            cause = exc.__cause__
            reason = cause.message if isinstance(cause, MlflowException) else str(exc)
            raise RefusedModelName(model, reason) from exc

    def record(self, records: Sequence[ModelVersion], handled_trigger: str | None = None) -> list[ModelVersion]:
        """Write ``records`` to MLflow: a new version is created with its records in one call, then the alias moves.

        A trigger that already has a version (an earlier try whose answer was
        lost, or a restart) is not registered again: that version's records
        are returned instead.
        """
        if not records:
            return []
        self.refresh()
        if handled_trigger is not None and self._by_trigger.get(handled_trigger, ("", ""))[0] == records[0].model:
            model, version = self._by_trigger[handled_trigger]
            log.info("trigger %s already has %s version %s in MLflow; not registered again", handled_trigger, model, version)
            return [r for r in self.history(model) if r.version == version]
        written: list[ModelVersion] = []
        groups: dict[tuple[str, str], list[ModelVersion]] = {}
        for record in records:
            groups.setdefault((record.model, record.version), []).append(record)
        for (model, version), group in groups.items():
            if (model, version) in self._latest or version in self._external.get(model, {}):
                done = self._append(model, version, group)
            else:
                done = self._create(model, group, handled_trigger)
            # What was written is applied here, not read back: one round of requests fewer per decision.
            for record in done:
                self._add(record)
            self._external.get(model, {}).pop(done[0].version, None)
            if handled_trigger is not None:
                self._handled.add(handled_trigger)
                self._by_trigger[handled_trigger] = (model, done[0].version)
            written += done
        for model in {r.model for r in written}:
            self._align_alias(model)
        return written

    def _tags_for(self, model: str, group: Sequence[ModelVersion]) -> dict[str, str]:
        tags = {}
        for record in group:
            self._seq[model] = self._seq.get(model, 0) + 1
            tags[f"{RECORD_TAG}{self._seq[model]:08d}"] = _record_tag(record)
        return tags

    def _create(self, model: str, group: list[ModelVersion], trigger: str | None) -> list[ModelVersion]:
        first, final = group[0], group[-1]
        run_id = _run_id_of(first.artifact_uri)
        if run_id is None or first.sha256 is None:
            raise RegistryError(f"{model} version {first.version}: MLflow versions are made from a run; "
                                f"its artifact {first.artifact_uri!r} is not one (save it with MlflowArtifactStore)")
        self.ensure_model(model)
        from mlflow.entities import Metric, Param, RunTag

        now_ms = int(datetime.now(timezone.utc).timestamp() * 1000)
        with _calls(self.location, f"log the run of {model} version {first.version}"):
            self.client.log_batch(
                run_id,
                metrics=[Metric(k, float(v), now_ms, 0) for k, v in final.metrics.items()],
                params=[Param(k, v[:6000]) for k, v in _run_params(final).items()],
                tags=[RunTag(k, v) for k, v in run_tags(final).items()],
            )
            self.client.set_terminated(run_id, "FINISHED")
        # The assigned number is MLflow's; it equals ours unless versions were made outside Driftline meanwhile.
        tags = {SHA256_TAG: first.sha256, **({TRIGGER_TAG: trigger} if trigger else {})}
        with _calls(self.location, f"create {model} version {first.version}"):
            seq_before = self._seq.get(model, 0)
            record_tags = self._tags_for(model, group)
            try:
                mv = self.client.create_model_version(model, f"runs:/{run_id}/{ARTIFACT_PATH}", run_id,
                                                      tags={**tags, **record_tags},
                                                      description=final.reason[:5000])
            except BaseException:
                self._seq[model] = seq_before
                raise
        if mv.version == first.version:
            return list(group)
        log.warning("%s: MLflow numbered the version %s, not %s (versions were made outside Driftline)", model, mv.version, first.version)
        renumbered = [r.model_copy(update={"version": str(mv.version)}) for r in group]
        with _calls(self.location, f"renumber {model} version {mv.version}"):
            for key, record in zip(record_tags, renumbered):
                self.client.set_model_version_tag(model, mv.version, key, _record_tag(record))
        return renumbered

    def _append(self, model: str, version: str, group: list[ModelVersion]) -> list[ModelVersion]:
        with _calls(self.location, f"record {model} version {version}"):
            for key, value in self._tags_for(model, group).items():
                self.client.set_model_version_tag(model, version, key, value)
            if group[-1].status == "rejected":
                self.client.set_model_version_tag(model, version, REJECTED_TAG, group[-1].reason[:_TAG_VALUE_LIMIT])
        return list(group)

    def _align_alias(self, model: str) -> bool:
        """Point the ``champion`` alias at the current version; whether it had to move."""
        current = self.current(model)
        if current is None or self._alias.get(model) == current.version:
            return False
        with _calls(self.location, f"move the {CHAMPION_ALIAS} alias of {model!r}"):
            self.client.set_registered_model_alias(model, CHAMPION_ALIAS, current.version)
        log.info("%s: %s alias moved from %s to version %s", model, CHAMPION_ALIAS, self._alias.get(model), current.version)
        self._alias[model] = current.version
        return True

    def reconcile(self, now: datetime) -> list[str]:
        """Make the alias agree with the records after any crash; adopt an external champion. Idempotent.

        * The alias on a version registered outside Driftline (a person named
          it champion) is honoured: a promoted record is written for it.
        * Otherwise the records win: the alias is moved to the current
          version (a crash between creating a version and moving the alias,
          or between a rollback's records and its alias move).

        Only the watched models (the retrainer's own) are touched.  Returns the models whose alias or records changed.
        """
        self.refresh()
        changed = []
        for model in sorted(self.watched):
            target = self._alias.get(model)
            external = self._external.get(model, {})
            current = self.current(model)
            if target is not None and target in external and (current is None or current.version != target):
                adopted = self._external_record(model, external[target], reason="adopted: named champion in MLflow outside Driftline")
                self.ensure_model(model)
                self._append(model, target, [adopted.model_copy(update={"created_at": now})])
                log.warning("%s: version %s was registered outside Driftline and named champion; adopted", model, target)
                self.refresh()
                changed.append(model)
            elif self._align_alias(model):
                changed.append(model)
        return changed

    def __repr__(self) -> str:
        return f"MlflowRegistry({self.location!r})"


def _quoted(name: str) -> str:
    # A quote would end the filter's string literal early and widen the search.
    return name.replace("'", "\\'")


def tracking_uri_problem(uri: str) -> str | None:
    """Why ``uri`` cannot be Driftline's tracking server, or ``None``.

    >>> tracking_uri_problem("http://127.0.0.1:5000"), tracking_uri_problem("sqlite:///mlflow.db")
    (None, 'must be an http:// or https:// URL of a tracking server (mlflow server), not sqlite')
    """
    parsed = urlparse(uri)
    if parsed.scheme not in ("http", "https"):
        return f"must be an http:// or https:// URL of a tracking server (mlflow server), not {parsed.scheme or repr(uri)}"
    if not parsed.netloc:
        return "has no host"
    return None

