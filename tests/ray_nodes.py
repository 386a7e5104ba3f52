"""A Ray cluster of several nodes on this machine, each node a ``ray start`` of its own.

For the tests and benchmarks that lose a node or need a Ray of their own beside other Rays on
the machine::

    nodes = RayNodes(env)                  # its own temp dir, a short folder under /tmp
    address = nodes.start_head(num_cpus=0)
    node = nodes.add_node(num_cpus=1)      # the node's raylet port names it
    nodes.wait_for_nodes(2)
    nodes.kill_raylet(node)                # SIGKILL: the node is lost
    nodes.stop()                           # ends every process of these nodes

Every node listens on free ports (Ray's fixed defaults may be held by another Ray on the machine)
of 127.0.0.1. ``ray stop`` would end every Ray of the user on this machine; :meth:`stop` ends
only the processes whose command line names this cluster's temp dir.
"""
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

from ports import free_port

RAY = str(Path(sys.executable).with_name('ray'))
START_TIMEOUT_S = 180


class RayNodes:
    """The nodes of one local cluster; ``env`` is the environment of its processes (raylets and
    the Ray workers they start inherit it: ``PYTHONPATH``, say)."""

    def __init__(self, env: Optional[Mapping[str, str]] = None) -> None:
        self.temp_dir = Path(tempfile.mkdtemp(prefix='ray-nodes-', dir='/tmp'))  # short: sockets
        self.env = {key: value for key, value in (env or os.environ).items()
                    if key not in ('RAY_AUTH_TOKEN', 'RAY_AUTH_TOKEN_PATH')}
        # Without RAY_AUTH_MODE, Ray 2.60's head turns token authentication on when
        # ~/.ray/auth_token exists (any earlier local ray.init() makes one) and a joining node,
        # which does not, is refused: say it for every process of the cluster.
        self.env['RAY_AUTH_MODE'] = 'disabled'
        # The nodes share the machine's memory with other processes: Ray's memory monitor would
        # kill this cluster's workers for memory that others use.
        self.env['RAY_memory_monitor_refresh_ms'] = '0'
        self.address: Optional[str] = None

    def start_head(self, num_cpus: int, resources: Optional[Dict[str, float]] = None) -> str:
        """Starts the head node (GCS, no dashboard); returns the cluster's address."""
        port = free_port()
        self.address = f'127.0.0.1:{port}'
        # Ray's own clients inside the cluster (Ray Train's placement-group cleaner asks the
        # state API) look for "the" Ray of the machine, and find several: name theirs.
        self.env['RAY_ADDRESS'] = self.address
        self._start(['--head', f'--port={port}', f'--ray-client-server-port={free_port()}',
                     f'--dashboard-port={free_port()}',
                     '--include-dashboard=false'], num_cpus, resources)
        return self.address

    def add_node(self, num_cpus: int, resources: Optional[Dict[str, float]] = None) -> int:
        """Starts a node that joins the head; returns its raylet's port, which names it."""
        assert self.address is not None, 'start_head first'
        return self._start([f'--address={self.address}'], num_cpus, resources)

    def _start(self, args: List[str], num_cpus: int,
               resources: Optional[Dict[str, float]]) -> int:
        node_port = free_port()
        command = [RAY, 'start', *args, f'--num-cpus={num_cpus}', '--node-ip-address=127.0.0.1',
                   f'--temp-dir={self.temp_dir}', f'--node-manager-port={node_port}',
                   f'--object-manager-port={free_port()}', f'--metrics-export-port={free_port()}',
                   f'--dashboard-agent-listen-port={free_port()}',
                   f'--dashboard-agent-grpc-port={free_port()}',
                   f'--runtime-env-agent-port={free_port()}', '--disable-usage-stats']
        if resources:
            command.append(f'--resources={json.dumps(resources)}')
        result = subprocess.run(command, env=self.env, capture_output=True, text=True,
                                timeout=START_TIMEOUT_S)
        if result.returncode != 0:
            raise RuntimeError(f'{" ".join(command)} failed ({result.returncode}):\n'
                               f'{result.stdout[-2000:]}\n{result.stderr[-2000:]}')
        return node_port

    def nodes(self) -> List[Dict[str, Any]]:
        """``ray.nodes()`` of the cluster (live and dead nodes), asked by a short-lived driver so
        that the calling process does not become one."""
        code = ('import json, ray; ray.init(address=%r, log_to_driver=False); '
                'print(json.dumps([{key: node[key] for key in ("NodeID", "Alive", '
                '"NodeManagerPort", "Resources")} for node in ray.nodes()]))' % self.address)
        result = subprocess.run([sys.executable, '-c', code], env=self.env, capture_output=True,
                                text=True, timeout=START_TIMEOUT_S, check=True)
        return json.loads(result.stdout.strip().splitlines()[-1])

    def node_id(self, node: int) -> str:
        """The Ray node id of the node whose raylet port is ``node``."""
        return next(n['NodeID'] for n in self.nodes() if n['NodeManagerPort'] == node)

    def wait_for_nodes(self, count: int, timeout: float = START_TIMEOUT_S) -> None:
        """Waits until ``count`` nodes are alive."""
        deadline = time.monotonic() + timeout
        while sum(node['Alive'] for node in self.nodes()) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f'{count} Ray nodes were not alive after {timeout:g} s')
            time.sleep(1)

    def raylet_pid(self, node: int) -> int:
        """The pid of the raylet of the node whose raylet port is ``node``."""
        flag = f'--node_manager_port={node}'.encode()
        pids = [pid for pid, command in self._processes().items()
                if command[0].endswith(b'raylet') and flag in command]
        if len(pids) != 1:
            raise LookupError(f'{len(pids)} raylets listen on port {node}')
        return pids[0]

    def kill_raylet(self, node: int) -> int:
        """SIGKILLs the raylet of node ``node`` (its workers and agents end with it); returns
        the raylet's pid."""
        pid = self.raylet_pid(node)
        os.kill(pid, signal.SIGKILL)
        return pid

    def _processes(self) -> Dict[int, List[bytes]]:
        """The command lines (as argument lists) of this machine's processes that name the
        cluster's temp dir."""
        mark = str(self.temp_dir).encode()
        found = {}
        for proc in Path('/proc').iterdir():
            with contextlib.suppress(OSError):
                if proc.name.isdigit() and int(proc.name) != os.getpid():
                    command = (proc / 'cmdline').read_bytes()
                    if mark in command:
                        found[int(proc.name)] = command.split(b'\0')
        return found

    def stop(self, grace: float = 10.0) -> None:
        """Ends the cluster's processes (SIGTERM, then SIGKILL after ``grace`` seconds) and
        removes its temp dir."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in self._processes():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + grace
            while self._processes() and time.monotonic() < deadline:
                time.sleep(0.5)
        shutil.rmtree(self.temp_dir, ignore_errors=True)
