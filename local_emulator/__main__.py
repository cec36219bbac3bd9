"""`python -m local_emulator serve|demo`."""

import sys

from local_emulator.cli import main

sys.exit(main())
