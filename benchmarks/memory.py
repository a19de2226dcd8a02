"""Memory: peak memory growth of forward+backward per configuration, each in a fresh process; see `--help`.

.venv/bin/python benchmarks/memory.py --out benchmarks/results/memory
"""

import sys

from headwise.bench import memory

if __name__ == "__main__":
    sys.exit(memory.main())
