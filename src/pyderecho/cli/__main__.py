"""``python -m pyderecho.cli``: the ``pyderecho`` command."""

import sys

from pyderecho.cli.main import main

sys.exit(main())
