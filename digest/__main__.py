"""`python -m digest` is the same as the `paper-digest` command."""

from digest.cli import main

raise SystemExit(main())
