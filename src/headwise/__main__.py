"""`python -m headwise COMMAND ...` (and `torchrun -m headwise train ...`): the console script."""

import sys

from .cli.main import main

sys.exit(main())
