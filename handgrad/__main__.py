"""``python -m handgrad`` is the ``handgrad`` console script."""

from handgrad.cli.main import main

raise SystemExit(main())
