"""`python -m scadles.cli`."""

import sys

from scadles.cli.main import main

sys.exit(main())
