"""``python -m vitlab`` runs the CLI."""

import sys

from vitlab.cli.main import main

sys.exit(main())
