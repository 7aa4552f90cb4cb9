"""``python -m mobilenet.cli ...``: the ``mobilenet`` command."""

import sys

from mobilenet.cli import main

sys.exit(main())
