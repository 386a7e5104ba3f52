"""New users' mistakes with paths, addresses, URIs, grids and files: each ends in one line naming
the setting, exit status 2, before anything trains, with nothing written.

Read-only and full disks are real mounts (a read-only bind mount, a small tmpfs filled up): the
tests run as root, for whom permission bits do not stop a write. Where ``mount`` is not permitted
those tests are skipped, saying so.
"""
import contextlib
import http.server
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Iterator, List

import pytest

from harness import report as report_cli
from harness import sweep as sweep_cli
from harness import trial as trial_cli
from harness.sweep_config import MAX_GRID_POINTS, load_sweep
from harness.validation import InvalidSetting, check_folder_argument
from test_validation import STAGE1, STAGE2, refused, write_sweep


@contextlib.contextmanager
def mounted(target: Path, *options: str) -> Iterator[Path]:
    """``mount <options> <target>`` for the duration; skips the test where mounting is refused."""
    target.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(['mount', *options, str(target)], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f'mount {" ".join(options)} is not permitted here: {result.stderr.strip()}')
    try:
        yield target
    finally:
        subprocess.run(['umount', str(target)], check=True)


@pytest.fixture
def read_only_folder(tmp_path) -> Iterator[Path]:
    """An empty folder on a read-only mount (a read-only bind mount of an empty folder)."""
    source = tmp_path / 'ro-source'
    source.mkdir()
    with mounted(tmp_path / 'read-only', '--bind', '-o', 'ro', str(source)) as folder:
        with pytest.raises(OSError, match='Read-only file system'):
            (folder / 'probe').mkdir()
        yield folder


@pytest.fixture
def full_disk(tmp_path) -> Iterator[Path]:
    """A 1-MiB tmpfs filled to the last byte."""
    with mounted(tmp_path / 'full', '-t', 'tmpfs', '-o', 'size=1m', 'tmpfs') as folder:
        with pytest.raises(OSError, match='No space left on device'):
            with open(folder / 'filler', 'wb') as filler:
                for _ in range(2048):
                    filler.write(b'\0' * 1024)
                    filler.flush()
        yield folder


# ------------------------------------------------------------------------------------------
# The family of bad folder arguments, one function for every command


def bad_folders(tmp_path: Path) -> dict:
    (tmp_path / 'a_file').write_text('not a folder')
    return {'file': (tmp_path / 'a_file', 'is a file, not a folder'),
            'under a file': (tmp_path / 'a_file' / 'sub', 'a_file is a file, not a folder'),
            'under /proc': (Path('/proc/eps-harness'), 'no folder can be created in /proc'),
            'under /sys': (Path('/sys/eps-harness/out'), 'no folder can be created in /sys')}


@pytest.mark.parametrize('case', ['file', 'under a file', 'under /proc', 'under /sys'])
def test_folder_argument_names_the_argument_and_the_path(case, tmp_path):
    path, expected = bad_folders(tmp_path)[case]
    with pytest.raises(InvalidSetting) as caught:
        check_folder_argument(path, '--work-dir')
    message = str(caught.value)
    assert message.startswith(f'--work-dir {path}') and expected in message, message
    assert '\n' not in message


def test_folder_argument_accepts_new_and_existing_folders_and_writes_nothing(tmp_path):
    assert check_folder_argument(tmp_path / 'new' / 'deeper', '--out') == tmp_path / 'new' / 'deeper'
    assert check_folder_argument(tmp_path, '--out') == tmp_path
    assert sorted(tmp_path.iterdir()) == []


def test_folder_argument_on_a_read_only_mount(read_only_folder):
    with pytest.raises(InvalidSetting, match=f'--out {read_only_folder}/x cannot be written: no '
                       f'folder can be created in {read_only_folder} \\(Read-only file system\\)'):
        check_folder_argument(read_only_folder / 'x', '--out')


def test_folder_argument_on_a_full_disk(full_disk):
    with pytest.raises(InvalidSetting, match=f'storage_path {full_disk}/sweeps: the disk of '
                       f'{full_disk} has 0.0 MiB free, less than the 64 MiB needed'):
        check_folder_argument(full_disk / 'sweeps', 'storage_path')


@pytest.fixture
def trial_argv(tiny_dataset, tmp_path):
    def argv(*options: str) -> List[str]:
        return [f'--set=data_root={tiny_dataset}', *options]
    return argv


@pytest.mark.parametrize('case', ['file', 'under a file', 'under /proc'])
def test_trial_refuses_a_bad_work_dir_or_stage1_cache(case, trial_argv, tmp_path, capsys):
    path, expected = bad_folders(tmp_path)[case]
    error = refused(trial_cli.main, trial_argv('--work-dir', str(path)), capsys)
    assert f'--work-dir {path}' in error and expected in error
    error = refused(trial_cli.main, trial_argv('--work-dir', str(tmp_path / 'trial'),
                                               '--stage1-cache', str(path)), capsys)
    assert f'--stage1-cache {path}' in error and expected in error
    assert not (tmp_path / 'trial').exists()


def test_trial_refuses_a_read_only_work_dir(trial_argv, read_only_folder, capsys):
    error = refused(trial_cli.main, trial_argv('--work-dir', str(read_only_folder / 'trial')),
                    capsys)
    assert 'Read-only file system' in error


def test_trial_refuses_a_work_dir_on_a_full_disk(trial_argv, full_disk, capsys):
    error = refused(trial_cli.main, trial_argv('--work-dir', str(full_disk / 'trial')), capsys)
    assert f'--work-dir {full_disk}/trial: the disk of {full_disk} has 0.0 MiB free' in error


@pytest.mark.parametrize('storage', ['/proc/sweeps', '/sys/sweeps', 'read-only', 'full'])
def test_sweep_check_refuses_storage_that_cannot_take_the_sweep(storage, tiny_dataset, tmp_path,
                                                               request, capsys):
    if storage == 'read-only':
        storage = str(request.getfixturevalue('read_only_folder') / 'sweeps')
    elif storage == 'full':
        storage = str(request.getfixturevalue('full_disk') / 'sweeps')
    path = write_sweep(tmp_path, data_root=str(tiny_dataset))
    error = refused(sweep_cli.main, [str(path), '--check', '--storage-path', storage], capsys)
    assert f'storage_path {storage}' in error
    assert not Path(storage).exists()


# ------------------------------------------------------------------------------------------
# harness.report --out


@pytest.mark.parametrize('out,expected', [
    ('plot.pgn', "plot.pgn: .pgn is not an image type matplotlib writes; valid suffixes: ["),
    ('plot', 'no suffix is not an image type'),
    ('folder', 'is a folder: name the plot file, e.g.'),
    ('a_file/plot.png', 'a_file is a file, not a folder'),
])
def test_report_refuses_an_out_that_cannot_take_the_plot(out, expected, tmp_path, capsys):
    (tmp_path / 'folder').mkdir()
    (tmp_path / 'a_file').write_text('not a folder')
    uri = f'sqlite:///{tmp_path}/mlflow.db'
    error = refused(report_cli.main, ['quickstart', '--tracking-uri', uri, '--out',
                                      str(tmp_path / out)], capsys)
    assert f'--out {tmp_path / out}' in error and expected in error
    assert not (tmp_path / 'mlflow.db').exists()


# ------------------------------------------------------------------------------------------
# harness.sweep: MLflow URI, Ray address, grid size


def test_sweep_check_refuses_a_tracking_uri_mlflow_has_no_store_for(tiny_dataset, tmp_path,
                                                                    capsys):
    path = write_sweep(tmp_path, data_root=str(tiny_dataset), mlflow={'tracking_uri': 'foo://x'})
    error = refused(sweep_cli.main, [str(path), '--check'], capsys)
    assert "mlflow.tracking_uri foo://x: MLflow has no tracking store for scheme 'foo'" in error
    assert "'sqlite'" in error and "'http'" in error


def test_the_schemes_accepted_are_those_mlflow_builds_stores_for():
    from mlflow.tracking._tracking_service.utils import _tracking_store_registry

    from harness.validation import tracking_uri_schemes
    assert tracking_uri_schemes() == set(_tracking_store_registry._registry)


class _HttpOnly(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_error(404)

    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def listener(kind: str) -> Iterator[int]:
    """A port where something that is not Ray listens (on every interface: Ray turns 127.0.0.1
    into the node's address): an HTTP/1 server, or a socket whose backlog accepts connections
    that nobody ever answers."""
    if kind == 'http':
        server = http.server.ThreadingHTTPServer(('0.0.0.0', 0), _HttpOnly)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield server.server_address[1]
        finally:
            server.shutdown()
            server.server_close()
    else:
        with socket.socket() as silent:
            silent.bind(('0.0.0.0', 0))
            silent.listen(8)
            yield silent.getsockname()[1]


@pytest.mark.parametrize('kind,expected', [('http', 'something that is not Ray listens there'),
                                           ('silent', 'no Ray cluster answered within 5 s')])
def test_sweep_refuses_an_address_where_no_ray_listens_quickly(kind, expected, tiny_dataset,
                                                              tmp_path, capsys):
    path = write_sweep(tmp_path, data_root=str(tiny_dataset))
    with listener(kind) as port:
        started = time.monotonic()
        error = refused(sweep_cli.main, [str(path), '--check', '--address', f'127.0.0.1:{port}'],
                        capsys)
    assert f"ray.address '127.0.0.1:{port}'" in error and expected in error
    assert time.monotonic() - started < 30
    assert not (tmp_path / 'sweeps').exists()


def test_sweep_check_refuses_a_grid_too_large_to_check_at_once(tiny_dataset, tmp_path, capsys):
    path = write_sweep(tmp_path, data_root=str(tiny_dataset), search_space={
        'threshold': {'grid_search': [round(0.01 * i, 4) for i in range(1, 100)]},
        'stage2.optim_wrapper.optimizer.lr': {'grid_search': [1e-4 * i for i in range(1, 102)]}})
    started = time.monotonic()
    error = refused(sweep_cli.main, [str(path), '--check'], capsys)
    assert (f'search_space has 9,999 grid points (threshold 99 x stage2.optim_wrapper.optimizer.lr '
            f'101), more than {MAX_GRID_POINTS:,}') in error
    assert time.monotonic() - started < 30


# ------------------------------------------------------------------------------------------
# experiment and sweep files


def test_trial_names_the_file_and_line_of_malformed_experiment_yaml(tmp_path, capsys):
    experiment = tmp_path / 'experiment.yaml'
    experiment.write_text('task: ssss\nstage1: {train_cfg.max_iters: 5\nseed: 1\n')
    error = refused(trial_cli.main, [str(experiment)], capsys)
    assert error.startswith(f'error: {experiment} is not valid YAML (line 3, column 5)'), error
    assert '<file>' not in error


def test_yaml_merge_keys_work_as_in_safe_load(tiny_dataset, tmp_path):
    experiment = tmp_path / 'experiment.yaml'
    experiment.write_text('stage1: &short {train_cfg.max_iters: 5}\n'
                          'stage2:\n  <<: *short\n  train_cfg.val_interval: 5\n')
    spec, _ = trial_cli.load_spec(str(experiment), [])
    assert spec.stage2 == {'train_cfg.max_iters': 5, 'train_cfg.val_interval': 5}

    sweep_file = write_sweep(tmp_path, text=(
        f'name: merged\ndata_root: {tiny_dataset}\nstorage_path: {tmp_path / "sweeps"}\n'
        'overrides:\n  <<: {stage1.train_cfg.max_iters: 5, stage2.train_cfg.max_iters: 7}\n'
        '  stage2.train_cfg.max_iters: 4\n'))
    assert load_sweep(sweep_file).overrides == {'stage1.train_cfg.max_iters': 5,
                                                'stage2.train_cfg.max_iters': 4}


# ------------------------------------------------------------------------------------------
# data


def test_trial_refuses_an_empty_training_split(dataset_copy, tmp_path, capsys):
    train = dataset_copy / 'ImageSets' / 'Segmentation' / 'train.txt'
    train.write_text('')
    error = refused(trial_cli.main, ['--work-dir', str(tmp_path / 'trial'),
                                     f'--set=data_root={dataset_copy}'], capsys)
    assert f'training split {train} holds no ids' in error
    assert not (tmp_path / 'trial').exists()


# ------------------------------------------------------------------------------------------
# harness.pseudo_masks: nothing left in the folder it runs from


@pytest.fixture
def pseudo_mask_inputs(tiny_dataset, tmp_path, monkeypatch):
    from test_validation import state_dict_file

    from harness.stage_configs import set_data_root
    from mmengine.config import Config
    cfg = Config.fromfile(str(STAGE1))
    set_data_root(cfg, str(tiny_dataset))
    config = tmp_path / 'stage1_config.py'
    cfg.dump(str(config))
    run_folder = tmp_path / 'checkout'
    run_folder.mkdir()
    monkeypatch.chdir(run_folder)  # the default work dir is work_dirs/<config> under it
    return config, run_folder, state_dict_file


@pytest.mark.parametrize('content,expected', [
    (b'', 'Ran out of input'),
    (b'not a checkpoint at all', 'cannot be read as a PyTorch checkpoint'),
    ('truncated', 'cannot be read as a PyTorch checkpoint'),
])
def test_pseudo_masks_refuse_an_unreadable_checkpoint(content, expected, pseudo_mask_inputs,
                                                      tmp_path, capsys):
    from harness import pseudo_masks
    config, run_folder, state_dict_file = pseudo_mask_inputs
    checkpoint = tmp_path / 'stage1.pth'
    if content == 'truncated':
        whole = state_dict_file(config, tmp_path / 'whole.pth').read_bytes()
        content = whole[:len(whole) // 2]
    checkpoint.write_bytes(content)
    error = refused(pseudo_masks.main, [str(config), str(checkpoint)], capsys)
    assert f'checkpoint {checkpoint}' in error and expected in error
    assert sorted(run_folder.iterdir()) == []


def test_pseudo_masks_refused_after_building_the_runner_leave_no_work_dirs(pseudo_mask_inputs,
                                                                          tmp_path, capsys):
    from harness import pseudo_masks
    config, run_folder, state_dict_file = pseudo_mask_inputs
    other = state_dict_file(STAGE2, tmp_path / 'stage2.pth')
    assert 'does not fit the model' in refused(pseudo_masks.main, [str(config), str(other)],
                                               capsys)
    assert sorted(run_folder.iterdir()) == []


@pytest.mark.parametrize('argument', ['--out', '--work-dir'])
def test_pseudo_masks_refuse_a_folder_under_a_file(argument, pseudo_mask_inputs, tmp_path,
                                                   capsys):
    from harness import pseudo_masks
    config, run_folder, state_dict_file = pseudo_mask_inputs
    own = state_dict_file(config, tmp_path / 'own.pth')
    (tmp_path / 'a_file').write_text('not a folder')
    bad = tmp_path / 'a_file' / 'sub'
    error = refused(pseudo_masks.main, [str(config), str(own), argument, str(bad)], capsys)
    assert f'{argument} {bad} cannot be written: {tmp_path / "a_file"} is a file, not a ' \
        'folder' in error
    assert sorted(run_folder.iterdir()) == []
