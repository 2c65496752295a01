"""`python -m tinylm ...` (also what torchrun launches)."""

from tinylm.cli import main

raise SystemExit(main())
