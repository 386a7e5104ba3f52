"""Waits until a Ray cluster has all its nodes, for scripts/slurm/sweep.sbatch.

    python scripts/slurm/wait_for_ray.py --address HOST:PORT --nodes N [--timeout S]
        [--watch-pid PID ...] [--sweep FILE]

Exits 0 once N nodes are alive and, with ``--sweep``, the cluster can hold one trial of that sweep
(its Ray Train workers, each with its CPUs and GPUs on one node). Exits 1 with a message that says
what is missing when the timeout passes, when a watched process (a ``srun ... ray start --block``
step) has exited, or when the nodes cannot hold a trial: Tune would wait for it forever.
"""
import argparse
import logging
import math
import socket
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional


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


def workers_that_fit(nodes: List[Dict[str, float]], cpus: float, gpus: float) -> int:
    """How many Ray Train workers of ``cpus`` CPUs and ``gpus`` GPUs the nodes hold together."""
    total = 0
    for resources in nodes:
        fit = math.floor(resources.get('CPU', 0) / cpus) if cpus > 0 else math.inf
        if gpus > 0:
            fit = min(fit, math.floor(resources.get('GPU', 0) / gpus))
        total += fit
    return total


def check_trial_fits(sweep_file: str, nodes: List[Dict[str, float]]) -> Optional[str]:
    """None when one trial of the sweep fits on ``nodes`` (their Ray resources), else why not."""
    from harness.sweep import TRAINABLE_CPUS
    from harness.sweep_config import load_sweep

    resources = load_sweep(sweep_file).resources
    fit = workers_that_fit(nodes, resources.cpus_per_worker, resources.gpus_per_worker)
    cpus = sum(node.get('CPU', 0) for node in nodes)
    needed_cpus = resources.num_workers * resources.cpus_per_worker + TRAINABLE_CPUS
    if fit >= resources.num_workers and cpus >= needed_cpus:
        return None
    per_node = ', '.join(f"{node.get('CPU', 0):g} CPU + {node.get('GPU', 0):g} GPU" for node in nodes)
    return (f'{sweep_file}: a trial needs {resources.num_workers} worker(s) of '
            f'{resources.cpus_per_worker:g} CPU + {resources.gpus_per_worker:g} GPU, but the Ray '
            f'nodes ({per_node}) hold {fit}: request more with --cpus-per-task and '
            '--gpus-per-node (or --gres=gpu:N), or lower resources in the sweep file')


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description='Wait until a Ray cluster has all its nodes.')
    parser.add_argument('--address', required=True, help='the head\'s GCS address, HOST:PORT')
    parser.add_argument('--nodes', type=int, required=True, help='alive nodes to wait for')
    parser.add_argument('--timeout', type=float, default=300, help='seconds (default 300)')
    parser.add_argument('--watch-pid', type=int, nargs='*', default=[],
                        help='fail as soon as one of these processes has exited')
    parser.add_argument('--sweep', help='also check that one trial of this sweep file fits')
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
    if args.sweep:
        problem = check_trial_fits(args.sweep, [node['Resources'] for node in alive])
        if problem:
            print(f'wait_for_ray: {problem}', file=sys.stderr)
            return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
