"""MLflow tracking of a sweep: one parent run per sweep, one child run per trial.

The driver opens the parent run (:func:`start_sweep_run`) and hands a :class:`TrackingTarget` to
every trial. Rank 0 of a trial logs to its child run through :class:`TrialRun`, which journals
each operation and delivers the journal in the background, so training never waits on the store.
A finished trial's figures are the tag :data:`RECORD_TAG`; see docs/tracking.md.
"""
import fcntl
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

from harness import strict_json
from harness.pseudo_mask_grid import write_pseudo_mask_grid

PARAM_VALUE_LIMIT = 500
ROLE_TAG = 'eps_harness.role'  # 'sweep' on parent runs, 'trial' on child runs
PARENT_TAG = 'mlflow.parentRunId'
STAGE1_RUN_TAG = 'stage1_run'  # on child runs: the stage-1 run folder (config digest)
RECORD_TAG = 'final_record'  # on child runs: the final figures of a finished trial (JSON)
RECORD_ARTIFACT = 'result.json'
STATUS_TAG = 'eps_harness.status'  # on KILLED child runs: INTERRUPTED or STOPPED
STEP_KEYS = ('val/iter', 'stage1/iter')
PROJECT_ROOT = Path(__file__).resolve().parents[1]
BATCH_METRICS = 1000  # metric points of one merged log_batch when a journal is replayed
RETRY_MIN_S = 1.0  # first wait before asking a store that did not answer again
RETRY_MAX_S = 30.0  # the wait doubles up to this
FINISH_WAIT_S = 30.0  # TrialRun.finish waits at most this for the journal's delivery
# MLflow's client would retry a dead server for minutes; the writer's journal is the retry.
WRITER_HTTP_RETRIES = 0


@dataclass(frozen=True)
class TrackingTarget:
    """Where a sweep's runs go; travels to Ray workers inside the trial config (a plain dict).

    Attributes:
        tracking_uri: MLflow tracking URI, reachable from every node.
        experiment_id: The sweep's MLflow experiment.
        parent_run_id: The sweep's parent run.
        sweep_name: The sweep's name (tag ``sweep_name`` of every run).
        git_commit: Commit of the code that runs the sweep (tag ``git_commit``).
    """

    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    sweep_name: str
    git_commit: str

    def to_dict(self) -> Dict[str, str]:
        return asdict(self)


def default_tracking_uri(storage_path: str) -> str:
    """The local store of a sweep: ``sqlite:///<storage_path>/mlflow.db`` (absolute path)."""
    return f'sqlite:///{Path(storage_path).resolve()}/mlflow.db'


def start_sweep_run(tracking_uri: str, experiment_name: str, sweep_name: str,
                    params: Mapping[str, Any], artifacts: List[Path]) -> TrackingTarget:
    """Creates the experiment (if new) and the sweep's parent run; returns the target."""
    client = _client(tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name)
    experiment_id = experiment.experiment_id if experiment is not None else (
        client.create_experiment(experiment_name, artifact_location=_artifact_root(tracking_uri)))
    commit = git_commit()
    run_id = client.create_run(experiment_id, run_name=sweep_name, tags={
        ROLE_TAG: 'sweep', 'sweep_name': sweep_name, 'git_commit': commit}).info.run_id
    _log_params(client, run_id, params)
    for path in artifacts:
        client.log_artifact(run_id, str(path))
    return TrackingTarget(tracking_uri, experiment_id, run_id, sweep_name, commit)


def set_sweep_status(target: TrackingTarget, status: str) -> None:
    """Marks the parent run ``'RUNNING'`` (a resumed sweep), ``'FINISHED'``, ``'FAILED'`` or
    ``'KILLED'`` (interrupted)."""
    client = _client(target.tracking_uri)
    mark = client.update_run if status == 'RUNNING' else client.set_terminated
    mark(target.parent_run_id, status=status)


def end_trial_runs(target: TrackingTarget, statuses: Mapping[str, str],
                   default: str = 'INTERRUPTED') -> List[str]:
    """Ends the sweep's child runs still ``RUNNING`` (once no worker is left: a killed worker
    never ends its run) by their trial's status in ``statuses`` (trial id -> ``'FAILED'``,
    ``'INTERRUPTED'``, ``'STOPPED'``; ``default`` if absent; ``'FINISHED'`` ones are left alone):
    ``FAILED``, or ``KILLED`` with the status in tag :data:`STATUS_TAG`. Returns their trial ids."""
    client = _client(target.tracking_uri)
    running = client.search_runs([target.experiment_id], filter_string=(
        f"tags.`{PARENT_TAG}` = '{target.parent_run_id}' and attributes.status = 'RUNNING'"),
        max_results=50000)
    ended = []
    for run in running:
        trial_id = run.data.tags.get('trial_id', '')
        status = statuses.get(trial_id, default)
        if status == 'FINISHED':
            continue
        if status != 'FAILED':
            client.set_tag(run.info.run_id, STATUS_TAG, status)
        client.set_terminated(run.info.run_id, status='FAILED' if status == 'FAILED' else 'KILLED')
        ended.append(trial_id)
    return ended


def final_figures(result: Mapping[str, Any]) -> Dict[str, Optional[float]]:
    """The numeric metrics (:func:`is_metric`) of a trial's ``result.json`` as floats; ``None``
    (the IoU of a class absent from a split) kept."""
    return {key: (None if value is None else float(value)) for key, value in result.items()
            if is_metric(key) and (value is None or strict_json.is_number(value))}


def is_metric(key: str) -> bool:
    """Whether ``key`` names a metric: ``<group>/<name>`` (``val/mIoU``, ``pseudo/IoU.ring``,
    ``ird/recall``, ``time/stage1_s``), not a step (``<stage>/iter``)."""
    return '/' in key and not key.endswith('/iter')


def record_text(result: Mapping[str, Any]) -> str:
    """:data:`RECORD_TAG`'s value: :func:`final_figures` as compact strict JSON, without the
    per-class IoUs (``.../IoU.<class>``) if they would exceed MLflow's tag length."""
    from mlflow.utils.validation import MAX_TAG_VAL_LENGTH

    figures = final_figures(result)
    text = strict_json.dumps(figures, separators=(',', ':'))
    if len(text) > MAX_TAG_VAL_LENGTH:
        text = strict_json.dumps({key: value for key, value in figures.items()
                                  if '/IoU.' not in key}, separators=(',', ':'))
    return text


class StoreUnreachable(Exception):
    """The tracking store did not answer (server down, network, a locked database)."""


class Journal:
    """A trial's MLflow operations in order, one JSON object a line (``op``: ``open``,
    ``log_batch``, ``log_artifact``, ``set_terminated``) in ``<folder>/mlflow-journal.jsonl``, and
    how far they were delivered in ``<folder>/mlflow-journal.sent`` (``{"offset": bytes,
    "run_id": the child run}``). Lines are only appended and the offset only grows; metric points
    keep their timestamp, so one sent again after a crash is stored once.
    """

    NAME = 'mlflow-journal.jsonl'

    def __init__(self, folder: Path) -> None:
        # Imported in the caller's thread, never first in TrialRun's writer thread (see there).
        from harness.eps.checkpoints import write_whole

        self.path = Path(folder) / self.NAME
        self.sent_path = Path(folder) / 'mlflow-journal.sent'
        self._append_lock = threading.Lock()
        self._write_whole = write_whole

    def append(self, operation: Mapping[str, Any]) -> None:
        """Appends ``operation`` as one line (flushed to the OS before it returns)."""
        line = json.dumps(operation) + '\n'
        with self._append_lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, 'a', encoding='utf-8') as handle:
                handle.write(line)

    def sent(self) -> Tuple[int, Optional[str]]:
        """The byte offset delivered so far and the child run id (``None`` before ``open``)."""
        if not self.sent_path.is_file():
            return 0, None
        state = json.loads(self.sent_path.read_text())
        return state['offset'], state['run_id']

    def mark_sent(self, offset: int, run_id: Optional[str]) -> None:
        self._write_whole(self.sent_path,
                          json.dumps({'offset': offset, 'run_id': run_id}).encode())

    def pending(self) -> List[Tuple[int, Dict[str, Any]]]:
        """The operations not delivered yet, each with the journal offset just after it. A last
        line without its newline (a process killed while writing it) is not pending yet."""
        if not self.path.is_file():
            return []
        offset, _ = self.sent()
        with open(self.path, 'rb') as handle:
            handle.seek(offset)
            data = handle.read()
        operations = []
        for line in data.splitlines(keepends=True):
            offset += len(line)
            if line.endswith(b'\n'):
                operations.append((offset, json.loads(line)))
        return operations

    @contextmanager
    def delivering(self, wait: bool) -> Iterator[bool]:
        """Holds the journal's exclusive ``flock`` (one deliverer per trial); yields whether it
        got it (``wait``: block until it does)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, 'a') as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def deliver(journal: Journal, client: Any = None) -> int:
    """Sends the journal's pending operations in order (consecutive ``log_batch`` ones merged, up
    to :data:`BATCH_METRICS` points a call) while the caller holds :meth:`Journal.delivering`;
    returns how many were sent. One the store refuses (a 4xx MLflow error) is reported on stderr
    and skipped.

    Raises:
        StoreUnreachable: the store did not answer; what was sent before stays sent.
    """
    from mlflow.exceptions import MlflowException

    _, run_id = journal.sent()
    operations = journal.pending()
    for offset, operation in _merged(operations):
        if client is None:
            client = _client(_target_of(journal)['tracking_uri'])
        try:
            run_id = _send(client, operation, run_id)
        except Exception as error:
            # MLflow reports a server or network that does not answer as INTERNAL_ERROR (500).
            if not (isinstance(error, MlflowException) and error.get_http_status_code() < 500):
                raise StoreUnreachable(str(error)) from error
            print(f'MLflow refused {operation["op"]} of {journal.path}: {error}; skipped',
                  file=sys.stderr, flush=True)
        journal.mark_sent(offset, run_id)
    return len(operations)


def replay_journals(folder: Path) -> Dict[str, str]:
    """Delivers the journals of a sweep ``folder``'s trials (``trials/<trial id>/``); returns the
    trial ids left undelivered, each with why (its store did not answer, each store asked once;
    or the trial is running and delivers its own)."""
    left = {}
    unreachable = set()
    for path in sorted(Path(folder).glob(f'trials/*/{Journal.NAME}')):
        journal = Journal(path.parent)
        if not journal.pending():
            continue
        with journal.delivering(wait=False) as acquired:
            if not acquired:
                left[path.parent.name] = 'its trial is running and delivers it'
                continue
            uri = _target_of(journal)['tracking_uri']
            try:
                if uri in unreachable or not _store_answers(uri):
                    raise StoreUnreachable(f'{uri} does not answer')
                deliver(journal)
            except StoreUnreachable as error:
                unreachable.add(uri)
                left[path.parent.name] = f'the store did not answer: {error}'
    return left


class TrialRun:
    """The child run of one trial; the trial's only MLflow writer (rank 0).

    Methods return at once: each operation is appended to the trial's :class:`Journal`, which a
    background thread delivers, retrying with backoff (:data:`RETRY_MIN_S` to
    :data:`RETRY_MAX_S` seconds) while the store does not answer. Sets
    ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` to :data:`WRITER_HTTP_RETRIES` unless it is set.
    """

    def __init__(self, journal: Journal, tracking_uri: str) -> None:
        from mlflow.environment_variables import MLFLOW_HTTP_REQUEST_MAX_RETRIES

        self.journal = journal
        self.tracking_uri = tracking_uri
        self.last_step = 0
        self.logged: Dict[str, Tuple[int, float]] = {}  # key: (step, value) last logged
        self.store_down = False  # the last delivery found the store unreachable
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._tried = threading.Event()  # a first delivery was tried
        # Read by MLflow at each call.
        os.environ.setdefault(MLFLOW_HTTP_REQUEST_MAX_RETRIES.name, str(WRITER_HTTP_RETRIES))
        self._client = _client(tracking_uri)
        # First delivery in this thread: MLflow's imports in the writer thread, racing the
        # training thread's (distutils' import hook holds the global import lock), can deadlock.
        if _store_answers(tracking_uri):
            with journal.delivering(wait=True):
                self._deliver()
            self._tried.set()
        self._writer = threading.Thread(target=self._deliver_loop, name='mlflow-journal',
                                        daemon=True)
        self._writer.start()

    @property
    def run_id(self) -> Optional[str]:
        """The child run's id, after the first delivery; ``None`` until the store answered."""
        self._tried.wait()
        return self.journal.sent()[1]

    @classmethod
    def open(cls, target: Mapping[str, str], trial_id: str, run_name: str,
             overrides: Mapping[str, Any], tags: Mapping[str, Any],
             work_dir: Optional[Path] = None) -> 'TrialRun':
        """Finds or creates the child run tagged ``trial_id`` under the parent and logs the
        overrides as params, once the store answers. The journal lies in ``work_dir`` (default: a
        new temporary folder)."""
        target = TrackingTarget(**target)
        journal = Journal(work_dir if work_dir is not None else
                          tempfile.mkdtemp(prefix='mlflow-journal-'))
        journal.append({'op': 'open', 'target': target.to_dict(), 'trial_id': trial_id,
                        'run_name': run_name, 'params': _param_values(overrides),
                        'tags': {key: str(value) for key, value in tags.items()}})
        run = cls(journal, target.tracking_uri)
        run._wake.set()
        return run

    def log_metrics(self, metrics: Mapping[str, Any]) -> None:
        """Logs the numeric metrics (:func:`is_metric`) at the step ``val/iter`` or ``stage1/iter``
        of ``metrics`` (else the last step logged), except a value already logged for the key at
        that step (the final result repeats the last validation)."""
        step = next((int(metrics[key]) for key in STEP_KEYS if key in metrics), self.last_step)
        self.last_step = step
        now = int(time.time() * 1000)
        batch = [[key, float(value), now, step] for key, value in metrics.items()
                 if is_metric(key) and strict_json.is_number(value)
                 and self.logged.get(key) != (step, float(value))]
        self.logged.update({key: (step, value) for key, value, _, step in batch})
        if batch:
            self.submit({'op': 'log_batch', 'metrics': batch, 'params': [], 'tags': []})

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Sets tags of the child run (values as text)."""
        self.submit({'op': 'log_batch', 'metrics': [], 'params': [],
                     'tags': [[key, str(value)] for key, value in tags.items()]})

    def log_artifact(self, path: Path, artifact_path: Optional[str] = None) -> None:
        """Logs a file, or a folder's files, under ``artifact_path``; read when delivered, so it
        must stay in place until then."""
        self.submit({'op': 'log_artifact', 'path': str(Path(path).resolve()),
                     'artifact_path': artifact_path})

    def log_result(self, result: Mapping[str, Any], work_dir: Path) -> None:
        """Logs ``run_trial``'s final metrics, the trial's artifacts and the tag
        :data:`STAGE1_RUN_TAG` (the stage-1 folder name, a digest of its config)."""
        self.log_metrics(result)
        stage1_config = Path(result['stage1_config'])
        self.set_tags({STAGE1_RUN_TAG: stage1_config.parent.name})
        grid = write_pseudo_mask_grid(stage1_config, float(result['saliency_threshold']),
                                      Path(work_dir) / 'pseudo_masks.png')
        self.log_artifact(stage1_config, 'configs')
        self.log_artifact(result['stage2_config'], 'configs')
        self.log_artifact(Path(result['split_file']).parent, 'splits')
        self.log_artifact(grid)

    def log_final_record(self, result: Mapping[str, Any], result_file: Path) -> None:
        """Logs ``result_file`` (the trial's :data:`RECORD_ARTIFACT`, holding ``result``) and
        :func:`record_text` as the tag :data:`RECORD_TAG`."""
        self.log_artifact(result_file)
        self.set_tags({RECORD_TAG: record_text(result)})

    def finish(self, status: str = 'FINISHED') -> None:
        """Ends the run with ``status``; waits until the journal is delivered, the store does not
        answer (asked every second) or :data:`FINISH_WAIT_S` seconds passed."""
        self.submit({'op': 'set_terminated', 'status': status})
        self._stop.set()
        self._wake.set()
        deadline = time.monotonic() + FINISH_WAIT_S
        while time.monotonic() < deadline:
            self._writer.join(min(1.0, max(deadline - time.monotonic(), 0.0)))
            if not self._writer.is_alive() or not _store_answers(self.tracking_uri):
                return

    def submit(self, operation: Mapping[str, Any]) -> None:
        """Appends one journal operation (see :class:`Journal`) and wakes the writer."""
        self.journal.append(operation)
        self._wake.set()

    def _deliver(self) -> None:
        """Delivers what is pending (the caller holds the delivery lock); sets ``store_down``."""
        try:
            # Ask first while it is down: a call to a server that does not answer can hang.
            if self.store_down and not _store_answers(self.tracking_uri):
                raise StoreUnreachable(f'{self.tracking_uri} does not answer')
            deliver(self.journal, self._client)
            self.store_down = False
        except StoreUnreachable as error:
            if not self.store_down:
                print(f'MLflow store {self.tracking_uri} did not answer ({error}); the trial '
                      f'goes on and {self.journal.path} keeps its records until it answers',
                      file=sys.stderr, flush=True)
            self.store_down = True

    def _deliver_loop(self) -> None:
        delay = 0.0
        with self.journal.delivering(wait=True):
            while True:
                self._wake.wait(delay or None)  # 0: until woken
                self._wake.clear()
                stopping = self._stop.is_set()
                self._deliver()
                delay = min(max(2 * delay, RETRY_MIN_S), RETRY_MAX_S) if self.store_down else 0.0
                self._tried.set()
                if stopping:
                    return


def _client(tracking_uri: str) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri)


def _store_answers(tracking_uri: str) -> bool:
    """Whether :func:`harness.validation.check_tracking_uri` accepts the store (an ``http(s)``
    server's ``/health`` answers within seconds, not MLflow's minutes of retries)."""
    from harness.validation import InvalidSetting, check_tracking_uri

    try:
        check_tracking_uri(tracking_uri, create=True)
    except InvalidSetting:
        return False
    return True


def _target_of(journal: Journal) -> Dict[str, str]:
    with open(journal.path, encoding='utf-8') as handle:
        return json.loads(handle.readline())['target']


def _merged(
        operations: List[Tuple[int, Dict[str, Any]]]) -> Iterator[Tuple[int, Dict[str, Any]]]:
    """``operations`` (each with the offset after it) merged lazily as :func:`deliver` sends them:
    a ``log_batch`` takes the next ``log_batch`` while it holds < :data:`BATCH_METRICS` points."""
    if not operations:
        return
    offset, merged = operations[0]
    for next_offset, operation in operations[1:]:
        if (merged['op'] == 'log_batch' == operation['op']
                and len(merged['metrics']) < BATCH_METRICS):
            merged = {'op': 'log_batch', **{field: merged[field] + operation[field]
                                            for field in ('metrics', 'params', 'tags')}}
        else:
            yield offset, merged
            merged = operation
        offset = next_offset
    yield offset, merged


def _send(client: Any, operation: Mapping[str, Any], run_id: Optional[str]) -> str:
    """Performs one journal operation on ``client``; returns the child run id."""
    from mlflow.entities import Metric, Param, RunTag

    kind = operation['op']
    if kind == 'open':
        return _open_child_run(client, operation)
    if kind == 'log_batch':
        client.log_batch(run_id, metrics=[Metric(*point) for point in operation['metrics']],
                         params=[Param(*pair) for pair in operation['params']],
                         tags=[RunTag(*pair) for pair in operation['tags']])
    elif kind == 'log_artifact':
        path = Path(operation['path'])
        if path.is_dir():
            client.log_artifacts(run_id, str(path), operation['artifact_path'])
        elif path.is_file():
            client.log_artifact(run_id, str(path), operation['artifact_path'])
        else:
            print(f'{path} is gone: not logged to MLflow run {run_id}', file=sys.stderr,
                  flush=True)
    elif kind == 'set_terminated':
        client.set_terminated(run_id, status=operation['status'])
    else:
        raise ValueError(f'unknown journal operation {kind!r}')
    return run_id


def _open_child_run(client: Any, operation: Mapping[str, Any]) -> str:
    """Finds (and marks RUNNING again) or creates the trial's child run; logs missing params."""
    target = TrackingTarget(**operation['target'])
    trial_id = operation['trial_id']
    found = client.search_runs([target.experiment_id], filter_string=(
        f"tags.trial_id = '{trial_id}' and tags.`{PARENT_TAG}` = '{target.parent_run_id}'"),
        max_results=1)
    if found:
        run_id = found[0].info.run_id
        client.update_run(run_id, status='RUNNING')
    else:
        run_id = client.create_run(target.experiment_id, run_name=operation['run_name'], tags={
            ROLE_TAG: 'trial', PARENT_TAG: target.parent_run_id, 'trial_id': trial_id,
            'sweep_name': target.sweep_name, 'git_commit': target.git_commit,
            **operation['tags']}).info.run_id
    _log_params(client, run_id, operation['params'])
    return run_id


def flatten(values: Mapping[str, Any], prefix: str = '') -> Dict[str, Any]:
    """``{'a': {'b': 1}}`` -> ``{'a.b': 1}``; lists stay values (Ray's ``flatten_dict`` does
    this too, but Ray 2.60 deprecates it)."""
    flat: Dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, f'{prefix}{key}.'))
        else:
            flat[f'{prefix}{key}'] = value
    return flat


def git_commit(repository: Path = PROJECT_ROOT) -> str:
    """The commit checked out in ``repository`` (default: the project's), with ``+dirty`` when a
    tracked file is edited (untracked files do not count); ``'uncommitted'`` without a commit."""
    def git(*args: str) -> str:
        return subprocess.run(['git', *args], cwd=repository, capture_output=True,
                              text=True).stdout.strip()

    commit = git('rev-parse', 'HEAD')
    if not commit or commit == 'HEAD':
        return 'uncommitted'
    return commit + ('+dirty' if git('status', '--porcelain', '--untracked-files=no') else '')


def _log_params(client: Any, run_id: str, params: Mapping[str, Any]) -> None:
    """Logs flattened params, skipping the ones the run already holds (a retried trial)."""
    from mlflow.entities import Param

    logged = client.get_run(run_id).data.params
    # MlflowClient.log_batch sends them in requests of at most 100 params (MLflow's limit).
    client.log_batch(run_id, params=[Param(key, value) for key, value in
                                     _param_values(params).items() if key not in logged])


def _param_values(params: Mapping[str, Any]) -> Dict[str, str]:
    """Flattened params by key in sorted order, as text cut to :data:`PARAM_VALUE_LIMIT`."""
    texts = {key: value if isinstance(value, str) else strict_json.dumps(value, default=str)
             for key, value in sorted(flatten(params).items())}
    return {key: text[:PARAM_VALUE_LIMIT] for key, text in texts.items()}


def _artifact_root(tracking_uri: str) -> Optional[str]:
    """Artifacts of a local SQLite store go next to its database (else: the server's default)."""
    prefix = 'sqlite:///'
    if tracking_uri.startswith(prefix):
        return (Path(tracking_uri[len(prefix):]).resolve().parent / 'mlartifacts').as_uri()
    return None
