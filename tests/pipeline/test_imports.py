"""What a prepare unit's child process imports: it starts once per unit, so every module it
loads is paid for again and again."""

from __future__ import annotations

import subprocess
import sys


def test_a_prepare_unit_child_loads_neither_the_s3_stack_nor_pyarrow_nor_scipy():
    # s3fs (with botocore and aiohttp) is for s3:// URLs only, pyarrow for Parquet files,
    # and the measures take numpy's FFT: together 0.45 s of a local unit's start.
    script = (
        "import sys, pipeline.prepare.isolation\n"
        "heavy = ('s3fs', 'botocore', 'aiobotocore', 'aiohttp', 'pyarrow', 'scipy')\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & set(heavy)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
