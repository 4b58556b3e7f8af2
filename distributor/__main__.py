"""Run the command line as `python -m distributor`."""
import sys

from .cli import main

sys.exit(main())
