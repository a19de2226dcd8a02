"""Speed: headwise against its peers over the whole grid, in one run; see `--help`.

.venv/bin/python benchmarks/speed.py --out benchmarks/results/speed
"""

import argparse
import sys

from headwise.bench import speed

if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="benchmarks/speed.py", description=__doc__.splitlines()[0])
    speed.add_arguments(parser, preset="full")
    sys.exit(speed.run_from_args(parser.parse_args()))
