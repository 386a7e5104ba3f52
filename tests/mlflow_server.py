"""A real ``mlflow server`` on loopback that a test stops and starts again (same store)."""
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional

from ports import free_port

START_TIMEOUT_S = 180.0  # two busy cores: the server imports for tens of seconds

# MLflow's client retries a request that gets no answer for minutes by default; tests that stop
# the server keep a trial's delivery attempts short (a stopped server refuses at once; the
# timeout is for a busy one that answers late).
SHORT_RETRIES = {'MLFLOW_HTTP_REQUEST_MAX_RETRIES': '1', 'MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR': '0',
                 'MLFLOW_HTTP_REQUEST_TIMEOUT': '60'}


class MlflowServer:
    """``mlflow server`` with a SQLite store and served artifacts in ``folder``, on a free port
    of 127.0.0.1; :meth:`stop` and :meth:`start` keep the port and the store. ``niceness``
    lowers the server's CPU priority (``nice``): on a machine of few cores, its start and stop
    (several processes importing MLflow, seconds of CPU) would otherwise slow a trial beside it,
    as a server on another machine does not."""

    def __init__(self, folder: Path, niceness: int = 0) -> None:
        self.folder = Path(folder)
        self.niceness = niceness
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.uri = f'http://127.0.0.1:{self.port}'
        self.process: Optional[subprocess.Popen] = None

    def start(self) -> 'MlflowServer':
        """Starts the server and returns once it answers ``/health``."""
        log = open(self.folder / 'server.log', 'a')
        self.process = subprocess.Popen(
            ['nice', '-n', str(self.niceness), sys.executable, '-m', 'mlflow', 'server',
             '--host', '127.0.0.1', '--port', str(self.port), '--workers', '1',
             '--backend-store-uri', f'sqlite:///{self.folder}/mlflow.db',
             '--artifacts-destination', str(self.folder / 'artifacts')],
            # Its own process group (stopped as a whole), in this session: a new session would
            # put it in a scheduler autogroup of its own, where its niceness no longer yields
            # the CPU to this process.
            stdout=log, stderr=subprocess.STDOUT, process_group=0)
        log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f'mlflow server exited; see {self.folder / "server.log"}')
            try:
                with urllib.request.urlopen(f'{self.uri}/health', timeout=2):
                    return self
            except (urllib.error.URLError, OSError):
                time.sleep(0.5)
        self.stop()
        raise TimeoutError(f'mlflow server did not answer in {START_TIMEOUT_S:g} s')

    def stop(self) -> None:
        """Stops the server (its whole process group) and waits until it is gone."""
        if self.process is None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None
