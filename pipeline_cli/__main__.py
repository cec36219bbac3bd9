import sys

from pipeline_cli.cli import main

sys.exit(main())
