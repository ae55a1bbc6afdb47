"""psr.testing: the test doubles' package is light to import (configs/tiny name it)."""

import subprocess
import sys


def test_importing_the_test_doubles_loads_no_torch_or_transformers():
    code = ("import sys, psr.testing as t; "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules), len(t.__all__))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["[]", "8"]
