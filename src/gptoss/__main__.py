"""`python -m gptoss` is `gptoss`."""

import sys

from gptoss.cli.__main__ import main

sys.exit(main())
