"""The method package stands alone: ``harness.eps`` imports the standard library, torch, the
OpenMMLab packages, numpy/PIL (and the optional Triton and pydensecrf) and itself, never the rest
of ``harness``; the harness imports the method, not the reverse."""
import ast
import subprocess
import sys
from pathlib import Path

import harness.eps

PACKAGE = Path(harness.eps.__file__).parent
THIRD_PARTY = {'torch', 'mmseg', 'mmengine', 'mmcv', 'numpy', 'scipy', 'PIL', 'triton',
               'pydensecrf'}


def imported_modules(path: Path):
    """``(line, module)`` of every absolute import of the file (relative ones stay inside)."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            yield node.lineno, node.module


def test_the_method_imports_no_module_of_the_harness():
    allowed = THIRD_PARTY | set(sys.stdlib_module_names)
    outside = [f'{path.name}:{line} imports {module}'
               for path in sorted(PACKAGE.glob('*.py'))
               for line, module in imported_modules(path)
               if not (module == 'harness.eps' or module.startswith('harness.eps.')
                       or module.split('.')[0] in allowed)]
    assert outside == []


def test_importing_the_method_loads_nothing_else_of_the_harness():
    loaded = subprocess.run(
        [sys.executable, '-c', 'import sys, harness.eps; print(" ".join(sorted(m for m in '
         'sys.modules if m.startswith("harness"))))'],
        capture_output=True, text=True, check=True).stdout.split()
    assert [module for module in loaded
            if module != 'harness' and not module.startswith('harness.eps')] == []
    assert 'harness.eps.pamr_hook' in loaded  # the package registered its components
