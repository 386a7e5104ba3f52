"""Waits until a Ray cluster has all its nodes, for scripts/slurm/sweep.sbatch.

    python scripts/slurm/wait_for_ray.py --address HOST:PORT --nodes N [--timeout S]
        [--watch-pid PID ...]

Exits 0 once N nodes are alive. Exits 1 with a message that says what is missing when the timeout
passes or when a watched process (a ``srun ... ray start --block`` step) has exited. Whether the
nodes can hold a trial is checked next, by ``harness.sweep`` itself (``check_resources``).
"""
import argparse
import logging
import socket
import sys
import time
from pathlib import Path
from typing import List, Optional


def running(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f'/proc/{pid}/stat').read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(')', 1)[1].split()[0] != 'Z'


def accepts_connections(address: str) -> bool:
    """Whether HOST:PORT accepts TCP connections (ray.init would wait long for one that does not)."""
    host, port = address.rsplit(':', 1)
    try:
        with socket.create_connection((host.strip('[]'), int(port)), timeout=2):
            return True
    except OSError:
        return False


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description='Wait until a Ray cluster has all its nodes.')
    parser.add_argument('--address', required=True, help='the head\'s GCS address, HOST:PORT')
    parser.add_argument('--nodes', type=int, required=True, help='alive nodes to wait for')
    parser.add_argument('--timeout', type=float, default=300, help='seconds (default 300)')
    parser.add_argument('--watch-pid', type=int, nargs='*', default=[],
                        help='fail as soon as one of these processes has exited')
    args = parser.parse_args(argv)

    import ray

    deadline = time.monotonic() + args.timeout
    alive: List[dict] = []
    while True:
        exited = [pid for pid in args.watch_pid if not running(pid)]
        if exited:
            print(f'wait_for_ray: the `ray start` step(s) with pid {exited} exited: their output is '
                  'above in the job log', file=sys.stderr)
            return 1
        if not ray.is_initialized() and accepts_connections(args.address):
            try:
                ray.init(address=args.address, logging_level=logging.ERROR, log_to_driver=False)
            except ConnectionError:
                pass  # the head's GCS is not up yet
        if ray.is_initialized():
            alive = [node for node in ray.nodes() if node['Alive']]
            if len(alive) >= args.nodes:
                break
        if time.monotonic() > deadline:
            print(f'wait_for_ray: {len(alive)} of {args.nodes} Ray node(s) joined {args.address} '
                  f'within {args.timeout:g} s (RAY_WAIT_TIMEOUT); the `ray start` output above says '
                  'why (a node that cannot reach the head\'s port, a port in use)', file=sys.stderr)
            return 1
        time.sleep(2)
    print(f'{len(alive)} Ray node(s) alive: '
          + ', '.join(f"{node['NodeManagerAddress']} ({node['Resources'].get('CPU', 0):g} CPU, "
                      f"{node['Resources'].get('GPU', 0):g} GPU)" for node in alive))
    return 0


if __name__ == '__main__':
    sys.exit(main())
