"""benchmarks/gpu_check.sh parses, and refuses to start without a wheelhouse."""
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / 'benchmarks' / 'gpu_check.sh'


def test_parses():
    result = subprocess.run(['bash', '-n', str(SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_usage_without_a_wheelhouse(tmp_path):
    result = subprocess.run(['bash', str(SCRIPT), str(tmp_path / 'missing')],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert 'usage: bash' in result.stderr and 'WHEELHOUSE_DIR' in result.stderr
